"""The pre-norm transformer block shared by the evaluation's ViTs: DINO, VideoMAE-v2 and MUSIQ.

``x + attn(norm1(x))`` then ``x + mlp.fc2(gelu(mlp.fc1(norm2(x))))``, LayerNorm eps 1e-6, multi-head
self-attention with one fused ``attn.qkv`` projection and an output projection ``attn.proj`` (the
parameter names of DINO's and VideoMAE-v2's code).  The checkpoints differ only in the attention's
projections, handled here or by a name map when loading:

* DINO: ``attn.qkv`` with a bias (``qkv_bias="full"``);
* VideoMAE-v2: ``attn.qkv`` without a bias plus ``attn.q_bias`` and ``attn.v_bias`` (``qkv_bias="qv"``;
  the key gets no bias);
* MUSIQ (pyiqa): separate ``attention.query/key/value/out`` projections; :func:`fuse_qkv` maps them onto
  ``attn.qkv`` and ``attn.proj`` (an exact concatenation), and :meth:`Attention.forward`'s ``mask``
  reproduces its padding mask (see there).

Unmasked attention runs through ``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

#: the value MUSIQ gives the attention logits of padded patches (not ``-inf``)
MASKED_LOGIT = -1e3


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: str = "full") -> None:
        super().__init__()
        if qkv_bias not in ("full", "qv"):
            raise ValueError(f"qkv_bias must be 'full' or 'qv', got {qkv_bias!r}")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias == "full")
        if qkv_bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention over ``x`` (B, N, C).  ``mask`` (B, N) bool marks real tokens; as in MUSIQ, the
        logit of every pair with a padded token is *replaced* by :data:`MASKED_LOGIT` (computed as MUSIQ does,
        so its scores are reproduced exactly; without a mask the fused kernel runs)."""
        b, n, c = x.shape
        bias = self.qkv.bias
        if bias is None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        q, k, v = (F.linear(x, self.qkv.weight, bias).view(b, n, 3, self.heads, c // self.heads)
                   .permute(2, 0, 3, 1, 4))
        if mask is None:
            attended = F.scaled_dot_product_attention(q, k, v)
        else:
            logits = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
            pair = mask[:, None, :, None] & mask[:, None, None, :]
            attended = logits.masked_fill(~pair, MASKED_LOGIT).softmax(dim=-1) @ v
        return self.proj(attended.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """One pre-norm ViT block (see module docstring)."""

    def __init__(self, dim: int, heads: int, hidden: int, qkv_bias: str = "full") -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, hidden)
        self.mlp.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


def fuse_qkv(state: Mapping[str, torch.Tensor], attention: str) -> dict[str, torch.Tensor]:
    """Map separate ``<block>.<attention>.query/key/value/out`` tensors onto a :class:`Block`'s ``attn.qkv``
    and ``attn.proj``.  A block that lacks one of the three projections is left as it is, so a strict load
    then names its keys."""
    state = dict(state)
    marker = f".{attention}."
    blocks = {key.split(marker)[0] for key in state if marker in key}
    for block in sorted(blocks):
        for kind in ("weight", "bias"):
            names = [f"{block}{marker}{part}.{kind}" for part in ("query", "key", "value")]
            if all(name in state for name in names):
                state[f"{block}.attn.qkv.{kind}"] = torch.cat([state.pop(name) for name in names])
            out = f"{block}{marker}out.{kind}"
            if out in state:
                state[f"{block}.attn.proj.{kind}"] = state.pop(out)
    return state
