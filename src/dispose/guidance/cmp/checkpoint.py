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
  and nothing else.  The counter is unused in eval mode; we fill it with 0 explicitly (and only it).
  Every other key must be present with the right shape and no extra key is allowed.
* ``step`` (int) and ``optimizer`` (SGD momentum buffers plus ``param_groups`` of numbers, bools and
  lists of ints) are plain containers of tensors and primitives, which ``torch.load(weights_only=True)``
  accepts without an allow-list; they are ignored.

Any problem (missing file, not a torch file, a different network) raises :class:`dispose.errors.UserError`
naming the file and listing the first missing / unexpected / mis-shaped keys with their counts, as the file
spells them (reading and strict loading are :mod:`dispose.checkpoints`').
"""

from __future__ import annotations

from pathlib import Path

import torch

from dispose.checkpoints import load_strict, read_state_dict, strip_prefix
from dispose.guidance.cmp.network import CMP, CMPConfig

WRAPPER_PREFIX = "module."
_WHAT = "the CMP resnet50_vip+mpii_liteflow checkpoint (ckpt_iter_42000.pth.tar)"
_SOURCE = ("https://huggingface.co/MyNiuuu/MOFA-Video-Hybrid "
           "(models/cmp/experiments/semiauto_annot/resnet50_vip+mpii_liteflow/checkpoints/)")


def expected_state_dict_shapes(config: CMPConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Checkpoint key (with its ``module.`` prefix) -> tensor shape, for the given configuration."""
    model = CMP(config)
    return {WRAPPER_PREFIX + k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_cmp(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> CMP:
    """Build CMP, load ``path`` strictly, and return it in eval mode on ``device`` / ``dtype``.

    The release runs CMP in float16 on CUDA; float32 is the default here (CPU-safe).
    """
    weights, prefix = strip_prefix(read_state_dict(path, what=_WHAT, source=_SOURCE), WRAPPER_PREFIX, path)
    model = CMP()
    load_strict(model, weights, path, what=_WHAT, file_prefix=prefix, fill_batchnorm_counters=True)
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype).eval()
