"""Reading checkpoint files safely and loading state dicts strictly: the one implementation every loader uses.

Every model the package builds from a weight file (DisPose.pth and MimicMotion_1-1.pth in
:mod:`dispose.bases.mimicmotion.weights`, CMP, the evaluation backbones) reads and loads it through these
functions, so the rules of DEVELOPERS.md ("Strict loading", "Errors") hold the same way everywhere:

* :func:`read_state_dict` reads ``.safetensors`` files with safetensors and any other file with
  ``torch.load(map_location="cpu", weights_only=True)`` (no code runs while unpickling), memory-mapped
  on request when the file is a zip archive (legacy PyTorch files cannot be mapped).  A missing file, a
  damaged one (any unpickling, zip or header error), one that holds Python objects whose loading would run
  code (refused by ``weights_only``; the message says so, and how to get a plain copy), one saved with a
  pickle protocol other than 2 (which ``weights_only`` cannot read) and a file that holds no state dict each
  raise one :class:`~dispose.errors.UserError` naming the file, what it should be and where to get it;
  torch's warnings while reading ("Detected pickle protocol 4") are not shown (formats
  read elsewhere, such as I3D's Flax pickle, check the file with :func:`checkpoint_file`).  A state
  dict nested under ``"state_dict"`` (training checkpoints) is unwrapped.
* :func:`strip_prefix` removes a training wrapper's key prefix (``module.`` from ``DataParallel``) when
  every key carries it; a file where only some keys carry it is an error.
* :func:`load_strict` loads with every key matching; a mismatch is one UserError listing the first missing,
  unexpected and mis-shaped keys with their counts; integer tensors where the network has floating-point
  weights (a damaged or foreign file) are listed the same way.  On request it fills the BatchNorm step
  counters that old checkpoints lack.  A module built on the meta device (accelerate's ``init_empty_weights``)
  takes the file's tensors as its own (``assign``: no second copy, the file's dtype); a tensor still on the
  meta device afterwards is an error.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from dispose.errors import UserError

_SHOWN = 5
_BN_COUNTER = "num_batches_tracked"
_ZIP_MAGIC = b"PK\x03\x04"


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:_SHOWN]) + (", ..." if len(keys) > _SHOWN else "")


def checkpoint_file(path: str | Path, *, what: str, source: str | None = None) -> Path:
    """``path`` as a :class:`~pathlib.Path` if it is a file, else a UserError naming it, ``what`` it should
    be (``"a RAFT checkpoint"``) and where to get it (``source``)."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "not found"
        raise UserError(f"{path} {problem}: expected {what}" + (f"; get it from {source}" if source else ""))
    return path


def _reason(error: Exception) -> str:
    """The informative sentence of a reader's error (torch's weights-only errors bury it in advice)."""
    text = str(error).split("WeightsUnpickler error:", 1)[-1]
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line.split(". ", 1)[0].rstrip(".") or type(error).__name__


def _refused_code(error: Exception) -> str | None:
    """The Python object a weights-only unpickler refused to build (``"posix.system"``), or None when
    ``error`` is another kind of failure (damage)."""
    match = re.search(r"GLOBAL ([\w.]+)|call reduce for (\S+)", str(error))
    return None if match is None else (match.group(1) or match.group(2)).rstrip(".,")


def _pickle_protocol(caught: list[warnings.WarningMessage]) -> int | None:
    """The pickle protocol torch's weights-only reader warned about (it reads protocol 2 only), if any."""
    found = (re.search(r"Detected pickle protocol (\d+)", str(warning.message)) for warning in caught)
    return next((int(match.group(1)) for match in found if match), None)


def _is_zip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC


def read_state_dict(path: str | Path, *, what: str, source: str | None = None, mmap: bool = False,
                    nested: tuple[str, ...] = ("state_dict",)) -> dict[str, torch.Tensor]:
    """The ``str -> Tensor`` state dict in a checkpoint file, on the CPU.

    Args:
        path: a ``.safetensors`` file, or any file ``torch.save`` wrote (``.pth``, ``.pt``, ``.pth.tar``...).
        what: what the file should be, as an indefinite noun phrase (``"a RAFT (full, raft-things)
            checkpoint"``); errors use it.
        source: where to get the file, for the errors (a URL, a package...).
        mmap: memory-map a ``torch.save`` zip archive (its tensors are then backed by the file).
        nested: entries that hold the state dict in a larger checkpoint (the first one present is used).

    Raises:
        UserError: the file is missing, cannot be read (damaged, incomplete, or a pickle of other objects
            than tensors and plain containers), or holds no state dict of tensors.
    """
    path = checkpoint_file(path, what=what, source=source)
    safetensors = path.suffix == ".safetensors"
    try:
        if safetensors:
            from safetensors.torch import load_file

            data = load_file(str(path))
        else:
            with warnings.catch_warnings(record=True) as caught:  # torch's warnings: our errors say more
                warnings.simplefilter("always")
                data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and _is_zip(path))
    except PermissionError:  # not damage: the command line reports it as it is
        raise
    except Exception as error:  # unpickling, zip and header errors come in many types
        code = None if safetensors else _refused_code(error)
        origin = " from " + source if source else ""
        if code is not None:
            raise UserError(
                f"{path} holds Python objects beside its tensors ({code}) whose loading would run code, "
                f"and dispose never runs code from weight files; get the official file again{origin}, or, "
                "only if you trust where this one comes from, load it with torch.load(weights_only=False) "
                "yourself and save its state dict of tensors (torch.save(model.state_dict()) or "
                "safetensors)") from error
        protocol = None if safetensors else _pickle_protocol(caught)
        if protocol is not None:
            raise UserError(
                f"{path} was saved with pickle protocol {protocol}, which the safe reader (torch.load with "
                f"weights_only=True) cannot read; get the official file again{origin}, or re-save a trusted "
                "copy with torch.save's default protocol or as .safetensors") from error
        raise UserError(f"{path} could not be read as a {'safetensors' if safetensors else 'PyTorch'} file "
                        f"({_reason(error)}): it is damaged or incomplete, or not {what}; download it "
                        f"again{origin}") from error
    return _state_dict(data, path, what, nested)


def _state_dict(data: object, path: Path, what: str, nested: tuple[str, ...]) -> dict[str, torch.Tensor]:
    entry = next((name for name in nested
                  if isinstance(data, Mapping) and isinstance(data.get(name), Mapping)), None)
    if entry is not None:
        data = data[entry]
    if isinstance(data, Mapping) and data and all(isinstance(key, str) and isinstance(value, torch.Tensor)
                                                  for key, value in data.items()):
        return dict(data)
    if entry is not None:
        problem = f"its {entry!r} entry is not a state dict of tensors"
    elif isinstance(data, Mapping) and data:
        problem = f"its top-level entries ({_few(list(map(str, data)))}) are not all tensors"
        if nested:
            problem = f"it has no {' or '.join(map(repr, nested))} entry, and {problem}"
    else:
        problem = f"it holds {'nothing' if isinstance(data, Mapping) else 'a ' + type(data).__name__}, " \
                  "not a state dict of tensors"
    raise UserError(f"{path}: {problem}; is it {what}?")


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str,
                 origin: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """``(state without prefix, prefix)`` when every key starts with ``prefix``, ``(state, "")`` when none
    does.

    Training wrappers (``DataParallel``, ``DistributedDataParallel``, CMP's ``DistModule``) save every
    key under ``module.``; a state dict where only some keys carry the prefix is no such file, and a
    UserError naming ``origin``.  The returned prefix lets :func:`load_strict` name keys as the file
    spells them.
    """
    marked = [key.startswith(prefix) for key in state]
    if marked and all(marked):
        return {key[len(prefix):]: value for key, value in state.items()}, prefix
    if any(marked):
        with_prefix = next(key for key, mark in zip(state, marked, strict=True) if mark)
        without = next(key for key, mark in zip(state, marked, strict=True) if not mark)
        raise UserError(f"{origin} mixes keys with and without the {prefix!r} prefix "
                        f"({with_prefix}, {without}); is the file damaged or edited?")
    return dict(state), ""


def load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], origin: str | Path, *,
                what: str | None = None, file_prefix: str = "",
                fill_batchnorm_counters: bool = False) -> None:
    """Load ``state`` into ``module`` with every key present, known and of the right shape.

    Args:
        origin: the file (or a description of it) the state comes from, named in errors.
        what: what the file should be (``"an AMT-S checkpoint"``); default ``"a <Module> checkpoint"``.
        file_prefix: a prefix the file puts before the keys of ``state`` (removed by :func:`strip_prefix`,
            or a part of a larger checkpoint); errors name the keys as the file spells them.
        fill_batchnorm_counters: fill absent BatchNorm ``num_batches_tracked`` buffers with 0.  Files saved
            by PyTorch < 0.4.1 (CMP's, Hara et al.'s 3D ResNets) lack them; the counter only matters when
            training with ``momentum=None``, never in eval mode.  Off by default: for any other file a
            missing counter means a different network.

    A module with tensors on the meta device takes ``state``'s tensors as its own (``assign=True``; they
    keep their dtype and, when the file was memory-mapped, their storage); otherwise they are copied into
    the existing parameters.

    Raises:
        UserError: keys are missing, unexpected or mis-shaped, or hold integers where the network has
            floating-point tensors (up to 5 of each are listed, with counts).
        RuntimeError: a tensor of ``module`` that is not in a state dict is still on the meta device.
    """
    own = module.state_dict()
    state = dict(state)
    if fill_batchnorm_counters:
        for key, value in own.items():
            if key.rpartition(".")[2] == _BN_COUNTER and key not in state:
                state[key] = torch.zeros(value.shape, dtype=value.dtype)
    missing = [file_prefix + key for key in own if key not in state]
    unexpected = [file_prefix + key for key in state if key not in own]
    mis_shaped = [f"{file_prefix}{key} {tuple(state[key].shape)} != {tuple(value.shape)}"
                  for key, value in own.items() if key in state and state[key].shape != value.shape]
    not_float = [f"{file_prefix}{key} {str(state[key].dtype).removeprefix('torch.')}"
                 for key, value in own.items()
                 if key in state and value.is_floating_point() and not state[key].is_floating_point()]
    if missing or unexpected or mis_shaped or not_float:
        parts = [f"{len(keys)} {label} ({_few(keys)})" for label, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected),
                  ("shape mismatches", mis_shaped),
                  ("integer tensors where the network has floating-point weights", not_float)) if keys]
        raise UserError(f"{origin} is not {what or f'a {type(module).__name__} checkpoint'}: "
                        + "; ".join(parts))
    module.load_state_dict(state, strict=True, assign=any(tensor.is_meta for tensor in own.values()))
    left = [name for name, tensor in [*module.named_parameters(), *module.named_buffers()] if tensor.is_meta]
    if left:
        raise RuntimeError(f"{type(module).__name__} still has tensors without values after loading "
                           f"{origin}: {_few(left)}")
