"""Strict loading of the public CMP checkpoint ``ckpt_iter_42000.pth.tar``.

Layout of the file (from the CMP training code, which saves
``{'step': int, 'state_dict': wrapper.state_dict(), 'optimizer': sgd.state_dict()}``):

* ``state_dict`` holds the weights.  The training code always wraps the network in a module whose only
  child is ``module`` (its own ``DistModule`` for distributed training, ``FixModule`` otherwise), so every
  key starts with ``module.`` (e.g. ``module.image_encoder.conv1.weight``); the CMP repository's own
  ``tools/weight_process.py`` confirms this by loading the same ``state_dict`` strictly into
  ``nn.DataParallel(model)``.  We strip exactly that prefix, and also accept a bare state dict without
  it (all keys or none must carry it).
* The public checkpoint was written by PyTorch 0.4.0 and has no BatchNorm ``num_batches_tracked``
  buffers: the CMP demo notebook's log lists exactly those 72 keys (one per BatchNorm layer) as missing
  and nothing else.  The counter is unused in eval mode; we fill it with 0 explicitly.  Every other
  key must be present with the right shape and no extra key is allowed.
* ``step`` (int) and ``optimizer`` (SGD momentum buffers plus ``param_groups`` of numbers, bools and
  lists of ints) are plain containers of tensors and primitives, which ``torch.load(weights_only=True)``
  accepts without an allow-list; they are ignored.

Any problem (missing file, not a torch file, a different network) raises :class:`dispose.errors.UserError`
naming the file and listing the first missing / unexpected / mis-shaped keys with their counts.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from dispose.errors import UserError
from dispose.guidance.cmp.network import CMP, CMPConfig

WRAPPER_PREFIX = "module."
_BN_COUNTER = "num_batches_tracked"
_SHOWN = 5


def expected_state_dict_shapes(config: CMPConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Checkpoint key (with its ``module.`` prefix) -> tensor shape, for the given configuration."""
    model = CMP(config)
    return {WRAPPER_PREFIX + k: tuple(v.shape) for k, v in model.state_dict().items()}


def _listing(label: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN]) + (", ..." if len(keys) > _SHOWN else "")
    return f"{len(keys)} {label} ({shown})"


def _read_file(path: Path) -> Mapping[str, object]:
    if not path.is_file():
        raise UserError(f"CMP checkpoint not found: {path} (expected ckpt_iter_42000.pth.tar from the CMP "
                        "release 'semiauto_annot/resnet50_vip+mpii_liteflow')")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"CMP checkpoint {path} could not be read as a PyTorch file ({first_line}); "
                        "re-download ckpt_iter_42000.pth.tar") from exc
    if not isinstance(data, Mapping):
        raise UserError(f"CMP checkpoint {path} holds a {type(data).__name__}, not a checkpoint dict")
    return data


def _weights(path: Path, data: Mapping[str, object]) -> tuple[dict[str, torch.Tensor], str]:
    """The un-prefixed weights and the prefix the file used (``module.`` or empty)."""
    if "state_dict" in data:
        weights = data["state_dict"]
    elif data and all(isinstance(v, torch.Tensor) for v in data.values()):
        weights = data
    else:
        raise UserError(f"CMP checkpoint {path} has no 'state_dict' entry (top-level keys: "
                        f"{', '.join(map(str, list(data)[:_SHOWN]))})")
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise UserError(f"CMP checkpoint {path}: 'state_dict' is not a mapping of tensors")
    prefixed = [k.startswith(WRAPPER_PREFIX) for k in weights]
    if any(prefixed) and not all(prefixed):
        raise UserError(f"CMP checkpoint {path} mixes keys with and without the '{WRAPPER_PREFIX}' prefix")
    if all(prefixed):
        return {k[len(WRAPPER_PREFIX):]: v for k, v in weights.items()}, WRAPPER_PREFIX
    return dict(weights), ""


def check_state_dict(model: CMP, weights: Mapping[str, torch.Tensor], source: str,
                     file_prefix: str = WRAPPER_PREFIX) -> dict[str, torch.Tensor]:
    """Validate un-prefixed ``weights`` against ``model``; return them with BN counters filled in.

    Raises UserError naming ``source`` when keys are missing (other than BN counters), unexpected or
    mis-shaped; keys are reported as the file spells them (with ``file_prefix``).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in weights and not k.endswith(_BN_COUNTER)]
    unexpected = [k for k in weights if k not in own]
    wrong = [f"{k} {tuple(weights[k].shape)} != {tuple(v.shape)}"
             for k, v in own.items() if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [_listing(label, keys) for label, keys in
                 (("missing keys", [file_prefix + k for k in missing]),
                  ("unexpected keys", [file_prefix + k for k in unexpected]),
                  ("shape mismatches", [file_prefix + k for k in wrong])) if keys]
        raise UserError(f"{source} is not the CMP resnet50_vip+mpii_liteflow checkpoint: " + "; ".join(parts))
    filled = dict(weights)
    for key, value in own.items():
        if key.endswith(_BN_COUNTER) and key not in filled:
            filled[key] = torch.zeros_like(value)
    return filled


def load_cmp(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> CMP:
    """Build CMP, load ``path`` strictly, and return it in eval mode on ``device`` / ``dtype``.

    The release runs CMP in float16 on CUDA; float32 is the default here (CPU-safe).
    """
    path = Path(path)
    data = _read_file(path)
    model = CMP()
    weights, prefix = _weights(path, data)
    weights = check_state_dict(model, weights, f"CMP checkpoint {path}", prefix)
    model.load_state_dict(weights, strict=True)
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype).eval()
