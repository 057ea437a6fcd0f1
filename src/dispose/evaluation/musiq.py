"""MUSIQ (Ke et al. 2021, "Multi-scale Image Quality Transformer") in plain PyTorch, for VBench.

VBench's imaging quality scores every frame with MUSIQ trained on SPAQ, in the PyTorch form of
the ``pyiqa`` package (checkpoint ``musiq_spaq_ckpt-358bb6af.pth``, converted from Google's
Apache-2.0 JAX release).  pyiqa's code is under a non-commercial licence, so this module is written
from the model's description; module names follow the checkpoint so it loads strictly.

Input: ``(B, 3, H, W)`` RGB in ``[0, 1]`` (any size).  The image is mapped to ``[-1, 1]`` and cut
into a multi-scale sequence of 32x32 patches, as MUSIQ's preprocessing defines it:

* for each longer-side length in (224, 384): resize keeping the aspect ratio (``round`` of the
  scaled sides, bicubic, ``align_corners=False``, no antialias), zero-pad TensorFlow-``SAME`` style
  to whole patches, take the non-overlapping patches row by row, then pad (zero patches, mask 0)
  or cut the sequence to ``ceil(L / 32)^2`` patches;
* the original resolution: all its patches (no padding of the sequence);
* each patch carries a hashed spatial position (its row/column mapped onto a 10x10 grid by
  nearest-neighbour interpolation), its scale index (0, 1, 2) and a mask bit.

Each patch goes through a ResNet stem (weight-standardised 7x7/2 conv without bias, TF-``SAME``
zero padding, GroupNorm(32, eps 1e-6), ReLU, 3x3/2 max-pool on zero ``SAME`` padding, one
bottleneck block with weight standardisation and GroupNorm eps 1e-4), is flattened in
height-width-channel order (TensorFlow's) and embedded to 384-d; hashed position and scale
embeddings are added, a CLS token is prepended, and 14 pre-norm transformer layers (6 heads,
MLP 1152, LayerNorm eps 1e-6: the shared :class:`~dispose.evaluation.vit.Block`; the checkpoint's
separate ``attention.query/key/value/out`` projections are mapped onto its fused ``attn.qkv`` and
``attn.proj`` when loading, :func:`~dispose.evaluation.vit.fuse_qkv`) follow, with padded patches
masked out of the attention by ``-1000`` logits (the reference's value, not ``-inf``).  The head reads the CLS
token: a single score for SPAQ/KonIQ checkpoints, or a 10-bin distribution turned into its mean for AVA.
Weight standardisation divides by the *unbiased* standard deviation plus ``1e-5``, as the
reference does.  Checked against pyiqa's ``MUSIQ`` with one random state dict: identical scores at
landscape, portrait and odd sizes (``bench/eval_musiq_vs_reference.py`` prints the largest difference).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dispose.checkpoints import load_strict, read_state_dict, strip_prefix
from dispose.errors import UserError
from dispose.evaluation.vit import Block, fuse_qkv

_WHAT = "a MUSIQ checkpoint (pyiqa's musiq_spaq_ckpt-358bb6af.pth)"
_SOURCE = "https://github.com/chaofengc/IQA-PyTorch releases (v0.1-weights)"
PATCH = 32
GRID = 10
LONGER_SIDES = (224, 384)


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow ``SAME`` zero padding (the odd pixel at the end)."""
    h, w = x.shape[-2:]
    pad_h = max((math.ceil(h / stride) - 1) * stride + kernel - h, 0)
    pad_w = max((math.ceil(w / stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


class StdConv(nn.Conv2d):
    """Conv with weight standardisation and TF-``SAME`` padding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
        w = w / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(_same_pad(x, self.kernel_size[0], self.stride[0]), w, self.bias, self.stride)


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, outplanes: int) -> None:
        super().__init__()
        self.conv1 = StdConv(inplanes, inplanes, 1, bias=False)
        self.gn1 = nn.GroupNorm(32, inplanes, eps=1e-4)
        self.conv2 = StdConv(inplanes, inplanes, 3, bias=False)
        self.gn2 = nn.GroupNorm(32, inplanes, eps=1e-4)
        self.conv3 = StdConv(inplanes, outplanes, 1, bias=False)
        self.gn3 = nn.GroupNorm(32, outplanes, eps=1e-4)
        self.conv_proj = StdConv(inplanes, outplanes, 1, bias=False)
        self.gn_proj = nn.GroupNorm(32, outplanes, eps=1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.gn_proj(self.conv_proj(x))
        x = F.relu(self.gn1(self.conv1(x)))
        x = F.relu(self.gn2(self.conv2(x)))
        return F.relu(self.gn3(self.conv3(x)) + identity)


class TransformerEncoder(nn.Module):
    def __init__(self, dim: int, mlp_dim: int, heads: int, layers: int, scales: int) -> None:
        super().__init__()
        self.posembed_input = nn.Module()
        self.posembed_input.position_emb = nn.Parameter(torch.zeros(1, GRID * GRID, dim))
        self.scaleembed_input = nn.Module()
        self.scaleembed_input.scale_emb = nn.Parameter(torch.zeros(scales, dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.transformer = nn.ModuleDict({f"encoderblock_{i}": Block(dim, heads, mlp_dim)
                                          for i in range(layers)})

    def forward(self, x: torch.Tensor, spatial: torch.Tensor, scale: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        x = x + self.posembed_input.position_emb[0][spatial] + self.scaleembed_input.scale_emb[scale]
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1)
        mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        for block in self.transformer.values():
            x = block(x, mask)
        return self.encoder_norm(x)


def _hashed_positions(rows: int, cols: int) -> torch.Tensor:
    """Row-major grid positions mapped onto the GRID x GRID embedding table (nearest neighbour)."""
    table = torch.arange(GRID, dtype=torch.float32).view(1, 1, GRID)
    col = F.interpolate(table, size=cols, mode="nearest").view(1, cols).expand(rows, cols)
    row = F.interpolate(table, size=rows, mode="nearest").view(rows, 1).expand(rows, cols)
    return (row * GRID + col).reshape(-1).long()


def _patches(image: torch.Tensor, scale_id: int, max_len: int | None) -> tuple[torch.Tensor, ...]:
    """(patches (B, N, 3*32*32), spatial (N,), scale (N,), mask (N,)) of one scale."""
    rows, cols = math.ceil(image.shape[-2] / PATCH), math.ceil(image.shape[-1] / PATCH)
    patches = F.unfold(_same_pad(image, PATCH, PATCH), PATCH, stride=PATCH).transpose(1, 2)
    spatial = _hashed_positions(rows, cols).to(image.device)
    count = patches.shape[1]
    if max_len is None or max_len == count:
        return (patches, spatial, torch.full_like(spatial, scale_id),
                torch.ones_like(spatial, dtype=torch.bool))
    keep = min(count, max_len)
    padded = patches.new_zeros(patches.shape[0], max_len, patches.shape[2])
    padded[:, :keep] = patches[:, :keep]
    index = torch.zeros(max_len, dtype=torch.long, device=image.device)
    scales, mask = index.clone(), torch.zeros(max_len, dtype=torch.bool, device=image.device)
    index[:keep], scales[:keep], mask[:keep] = spatial[:keep], scale_id, True
    return padded, index, scales, mask


def multiscale_patches(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """MUSIQ's input sequence for ``(B, 3, H, W)`` images in ``[-1, 1]`` (see module docstring)."""
    h, w = images.shape[-2:]
    parts = []
    for scale_id, longer in enumerate(LONGER_SIDES):
        ratio = longer / max(h, w)
        resized = F.interpolate(images, size=(round(h * ratio), round(w * ratio)), mode="bicubic",
                                align_corners=False)
        parts.append(_patches(resized, scale_id, math.ceil(longer / PATCH) ** 2))
    parts.append(_patches(images, len(LONGER_SIDES), None))
    return tuple(torch.cat(items, dim=-2 if items[0].ndim == 3 else 0) for items in zip(*parts, strict=True))


class MUSIQ(nn.Module):
    """``forward(images (B, 3, H, W) in [0, 1]) -> (B,)`` quality scores (SPAQ: 0..100)."""

    def __init__(self, num_classes: int = 1, dim: int = 384, mlp_dim: int = 1152, heads: int = 6,
                 layers: int = 14) -> None:
        super().__init__()
        self.conv_root = StdConv(3, 64, 7, 2, bias=False)
        self.gn_root = nn.GroupNorm(32, 64, eps=1e-6)
        self.block1 = Bottleneck(64, 256)
        self.embedding = nn.Linear(256 * (PATCH // 4) ** 2, dim)
        self.transformer_encoder = TransformerEncoder(dim, mlp_dim, heads, layers, len(LONGER_SIDES) + 1)
        self.head = nn.Linear(dim, 1) if num_classes == 1 else nn.Sequential(nn.Linear(dim, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches, spatial, scale, mask = multiscale_patches((images - 0.5) * 2)
        b, n, _ = patches.shape
        x = self.conv_root(patches.reshape(b * n, 3, PATCH, PATCH))
        x = F.relu(self.gn_root(x))
        x = F.max_pool2d(_same_pad(x, 3, 2), 3, 2)
        x = self.block1(x).permute(0, 2, 3, 1).reshape(b, n, -1)
        x = self.transformer_encoder(self.embedding(x), spatial, scale, mask.expand(b, -1))
        q = self.head(x[:, 0])
        if q.shape[-1] == 1:
            return q[:, 0]
        bins = torch.arange(1, q.shape[-1] + 1, device=q.device, dtype=q.dtype)
        return (q.softmax(dim=-1) * bins).sum(dim=-1)


def checkpoint_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A pyiqa MUSIQ state dict (``module.`` prefix removed) with this module's names (module docstring)."""
    return fuse_qkv(state, "attention")


def load_musiq(path: str | Path, device: str | torch.device = "cpu") -> MUSIQ:
    """MUSIQ from a pyiqa checkpoint (``musiq_spaq_ckpt-358bb6af.pth`` for VBench), strictly.

    A ``module.`` prefix is stripped (as pyiqa does); a ``head.0.*`` head is the 10-bin AVA kind.
    """
    state, prefix = strip_prefix(read_state_dict(path, what=_WHAT, source=_SOURCE), "module.", path)
    head = state.get("head.weight", state.get("head.0.weight"))
    blocks = [k for k in state
              if k.startswith("transformer_encoder.transformer.") and k.endswith(".norm1.weight")]
    if head is None or not blocks:
        raise UserError(f"{path} is not {_WHAT}: it has no head.weight or transformer blocks")
    model = MUSIQ(num_classes=1 if "head.weight" in state else int(head.shape[0]), layers=len(blocks))
    load_strict(model, checkpoint_names(state), path, what=_WHAT, file_prefix=prefix)
    return model.eval().to(device)
