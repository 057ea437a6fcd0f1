"""VideoMAE-v2 video encoder (Wang et al. 2023) in plain PyTorch, for content-debiased FVD.

CD-FVD (Ge et al. 2024) replaces FVD's I3D logits by the features of VideoMAE-v2 ViT-g/14
fine-tuned on Something-Something-v2 (``vit_g_hybrid_pt_1200e_ssv2_ft.pth``), exactly as the
``cd-fvd`` package computes them (github.com/songweige/content-debiased-fvd, MIT; its model file
is VideoMAE-v2's, MIT).  This is a compact re-implementation of that encoder with the same
parameter names, so the checkpoint loads strictly:

* tubelet embedding: ``Conv3d`` with kernel = stride = ``(2, 14, 14)`` over ``(B, 3, T, 224, 224)``
  inputs in ``[0, 1]`` (cd-fvd applies *no* mean/std normalisation);
* fixed sinusoid position table for 8 x 16 x 16 tubelets; for other clip lengths it is resized
  along time (trilinear, ``scale_factor = (t + 0.1) / 8``), as the reference does;
* 40 pre-norm blocks (1408-d, 16 heads, MLP 6144, LayerNorm eps 1e-6, qkv without a k bias: the
  shared :class:`~dispose.evaluation.vit.Block` with ``qkv_bias="qv"``, VideoMAE-v2's names);
* the feature is ``fc_norm(mean over all tokens)`` (1408-d).  The classification head is not
  used: its ``head.*`` tensors are required in the file (so a wrong file is still caught) and then
  dropped.

Widths are read from the checkpoint; the head count is not stored in it, so it comes from the
standard VideoMAE-v2 sizes (ViT-S/B/L/H/g = 6/12/16/16/16 heads), or 64-d heads otherwise.

Checked against cd-fvd's ``VisionTransformer`` in the full ViT-g/14 layout with one random state
dict on 16- and 32-frame dancer clips (``bench/eval_videomae_vs_reference.py --giant`` prints the
largest feature difference).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dispose.checkpoints import load_strict, read_state_dict
from dispose.errors import UserError
from dispose.evaluation.vit import Block

_WHAT = "a checkpoint in the VideoMAE-v2 layout (vit_g_hybrid_pt_1200e_ssv2_ft.pth)"
_SOURCE = "https://huggingface.co/OpenGVLab/InternVideoMAE_models (mae-g/)"
_HEADS = {384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}
#: tubelet grid of the position table (16 frames / tubelet 2, 224 / 14)
_TABLE_FRAMES, _TABLE_SIDE = 8, 16


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """``(1, positions, dim)`` table: ``sin`` on even, ``cos`` on odd channels, computed in float64."""
    exponent = 2 * (np.arange(dim) // 2) / dim
    angles = np.arange(positions)[:, None] / np.power(10000, exponent)[None, :]
    angles[:, 0::2], angles[:, 1::2] = np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])
    return torch.tensor(angles, dtype=torch.float32).unsqueeze(0)


class VideoMAEv2(nn.Module):
    """``forward(clips (B, 3, T, 224, 224) in [0, 1]) -> (B, dim)`` mean-pooled features."""

    def __init__(self, dim: int = 1408, depth: int = 40, heads: int = 16, hidden: int = 6144,
                 patch: int = 14, tubelet: int = 2, image_size: int = 224) -> None:
        super().__init__()
        self.tubelet, self.patch, self.image_size = tubelet, patch, image_size
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(3, dim, (tubelet, patch, patch), stride=(tubelet, patch, patch))
        side = image_size // patch
        self.register_buffer("pos_embed", sinusoid_table(_TABLE_FRAMES * side * side, dim), persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden, qkv_bias="qv") for _ in range(depth))
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)

    def _positions(self, frames: int) -> torch.Tensor:
        steps = frames // self.tubelet
        if steps == _TABLE_FRAMES:
            return self.pos_embed
        side = self.image_size // self.patch
        table = self.pos_embed.transpose(1, 2).reshape(1, -1, _TABLE_FRAMES, side, side)
        table = F.interpolate(table, scale_factor=((steps + 0.1) / _TABLE_FRAMES, 1, 1), mode="trilinear")
        return table.reshape(1, table.shape[1], -1).transpose(1, 2)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"VideoMAE-v2 expects {self.image_size}x{self.image_size} frames, got "
                             f"{tuple(clips.shape[-2:])}")
        x = self.patch_embed.proj(clips).flatten(2).transpose(1, 2)
        x = x + self._positions(clips.shape[2]).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.fc_norm(x.mean(dim=1))


def videomae_input(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """cd-fvd's preprocessing: uint8 (T, H, W, 3) -> (1, 3, T, 224, 224) in ``[0, 1]``, bilinear resize."""
    x = torch.as_tensor(frames, device=device).permute(3, 0, 1, 2).float() / 255
    return F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False).unsqueeze(0)


def load_videomae(path: str | Path, device: str | torch.device = "cpu") -> VideoMAEv2:
    """VideoMAE-v2 encoder from a fine-tuned checkpoint (``{"model"|"module": state}`` or bare state dict)."""
    state = read_state_dict(path, what=_WHAT, source=_SOURCE, nested=("model", "module"))
    if "patch_embed.proj.weight" not in state:
        raise UserError(f"{path} is not a VideoMAE-v2 checkpoint "
                        "(expected vit_g_hybrid_pt_1200e_ssv2_ft.pth)")
    if "head.weight" not in state or "head.bias" not in state:
        raise UserError(f"{path} has no classification head: use the fine-tuned VideoMAE-v2 checkpoint "
                        "(vit_g_hybrid_pt_1200e_ssv2_ft.pth), as cd-fvd does")
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    embed = state["patch_embed.proj.weight"]
    dim = int(embed.shape[0])
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    model = VideoMAEv2(dim=dim, depth=depth, heads=_HEADS.get(dim, max(1, dim // 64)),
                       hidden=int(state["blocks.0.mlp.fc1.weight"].shape[0]), patch=int(embed.shape[-1]),
                       tubelet=int(embed.shape[2]))
    load_strict(model, state, path, what=_WHAT)
    return model.eval().to(device)
