"""DINO ViT-B/16 (Caron et al. 2021) in plain PyTorch, for VBench's subject consistency.

Architecture and parameter names follow DINO's ``vision_transformer.py`` (the model
``torch.hub.load("facebookresearch/dino:main", "dino_vitb16")`` that VBench uses), so the
released ``dino_vitbase16_pretrain.pth`` loads strictly: 768-d, 12 blocks, 12 heads, MLP x4,
LayerNorm eps 1e-6, qkv bias (the shared :class:`~dispose.evaluation.vit.Block`, whose names are
DINO's).  The output is the final-norm CLS token (768-d).

Reproduced quirk: for inputs other than 224x224, DINO resizes the 14x14 position grid bicubically
with ``scale_factor = (n + 0.1) / 14`` per axis (``n`` = patches along that axis), not to an
exact size; VBench feeds non-square frames (short side 224, no crop), so this matters.

Checked against DINO's ``vit_base`` (Apache-2.0) with one random state dict, on non-square and square
input (``bench/eval_dino_vs_reference.py`` prints the largest feature difference).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dispose.checkpoints import load_strict, read_state_dict
from dispose.errors import UserError
from dispose.evaluation.vit import Block

_WHAT = "a DINO ViT backbone state dict (VBench: dino_vitbase16_pretrain.pth, not a training checkpoint)"
_SOURCE = "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/"


class DinoViT(nn.Module):
    """``forward(images (B, 3, H, W) ImageNet-normalised) -> (B, dim)`` CLS features."""

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, patch: int = 16,
                 grid: int = 14) -> None:
        super().__init__()
        self.patch = patch
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, dim * 4) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def _position(self, rows: int, cols: int) -> torch.Tensor:
        grid = int(math.sqrt(self.pos_embed.shape[1] - 1))
        if rows == grid and cols == grid:
            return self.pos_embed
        table = self.pos_embed[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        table = F.interpolate(table, scale_factor=((rows + 0.1) / grid, (cols + 0.1) / grid), mode="bicubic")
        table = table.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([self.pos_embed[:, :1], table], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rows, cols = images.shape[2] // self.patch, images.shape[3] // self.patch
        x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self._position(rows, cols)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


def load_dino(path: str | Path, device: str | torch.device = "cpu") -> DinoViT:
    """DINO ViT from a released backbone file, strictly (VBench uses ``dino_vitbase16_pretrain.pth``).

    Width, depth, patch size and position grid are read from the tensor shapes (64-d heads, as
    in all DINO ViTs), so ViT-S/16 or ViT-B/8 files load too; only ViT-B/16 is VBench's setting.
    """
    state = read_state_dict(path, what=_WHAT, source=_SOURCE)
    try:
        dim = int(state["cls_token"].shape[-1])
        model = DinoViT(dim=dim,
                        depth=1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks.")),
                        heads=dim // 64, patch=int(state["patch_embed.proj.weight"].shape[-1]),
                        grid=math.isqrt(state["pos_embed"].shape[1] - 1))
    except (KeyError, ValueError, IndexError) as error:  # a tensor (or every block) absent, or a wrong rank
        raise UserError(f"{path} is not {_WHAT}: the ViT's sizes cannot be read from it "
                        f"({error!r})") from error
    load_strict(model, state, path, what=_WHAT)
    return model.eval().to(device)
