"""Multi-scale point encoder of the hybrid ControlNet (paper sec. 4.2, Eq. 7): ``F_c^l = E_p^l(phi(F_p))``.

Input: the keypoint correspondence grid ``F_p`` (reference DIFT embeddings placed at each frame's
keypoints, averaged where they collide) and its occupancy mask, both at 1/16 of the image
(:func:`dispose.guidance.correspondence.correspondence_map`).  One MLP per ControlNet level (Linear
``C_p`` -> 128, SiLU, Linear 128 -> ``C_l``; ``C_p`` = 1280, ``C_l`` = 320, 640, 1280, 1280) maps the
embeddings to the level's width; the result is resized to the level's size and added after the
ControlNet's down block ``l`` (:class:`dispose.models.controlnet_svd.HybridControlNetSVD`).

What the release (``point_adapter.py``) does, and we reproduce:

* The MLPs run on the 1/16 grid, the result is zeroed outside the occupied cells, then resized to the
  level's size with bilinear interpolation (``align_corners=False``) and multiplied by the mask resized
  with nearest-neighbour interpolation.  With sizes 1/16, 1/32, 1/64, 1/64 of the image this keeps the
  point features essentially at the first level only: halving bilinearly averages 2x2 cells and the
  nearest mask keeps only cells whose top-left source cell is occupied, so an isolated point survives
  at 1/16, with a quarter of its value (or not at all) at 1/32, and never at 1/64, where the bilinear
  taps (cells 4i+1, 4i+2) and the nearest tap (cell 4i) never coincide.  Reproduced exactly.
* Parameter names ``model_list.{l}.mlp.{0,2}.*`` (loaded under ``point_adapter.*``).

Deliberate differences from the release (same numbers, up to float rounding of the matrix products):

* The MLPs run only on the occupied cells (at most 18 per frame) instead of on every cell of every frame
  followed by the mask, and the bilinear resize is applied to those cells only: a level is
  ``sum_i mlp(v_i) (x) a_y[row_i] (x) a_x[col_i]`` over the occupied cells ``i`` of a frame, where ``a[p]``
  is how ``F.interpolate`` (bilinear, ``align_corners=False``) spreads grid cell ``p`` over the level's axis
  (the weights are taken from ``F.interpolate`` itself, :func:`bilinear_spread`).  That is one batched
  matrix product ``(N, C_l, slots) @ (N, slots, h_l * w_l)`` per level, written channel-first; no 1/16
  grid of ``C_l`` channels is ever built (at the grid's own size the values are scattered into a zero
  grid).  Nothing loops over frames or points.  Building the grid from
  keypoints is done beforehand, also vectorised (:mod:`dispose.guidance.correspondence`); the release does
  it inside this module, point by point.
* The target size of each level is the actual size of the ControlNet hidden state it is added to; the
  release uses ``(H // r, W // r)`` for r = 16, 32, 64, 64, the same for sizes that are multiples of 64
  (others fail there with a shape error).  Resizing to the grid's own size is skipped (an identity).
* The release also builds a training loss mask here; inference never uses it and it is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class PointMLP(nn.Module):
    """Linear -> SiLU -> Linear, parameters under ``mlp.0`` and ``mlp.2`` as in the release."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden_channels), nn.SiLU(),
                                 nn.Linear(hidden_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


@dataclass
class OccupiedCells:
    """The M occupied cells of N correspondence grids of size (h, w).

    Attributes:
        values: (M, C_p) embeddings of the occupied cells, frame by frame.
        frame, row, col: (M,) int64 position of each cell.
        slot: (M,) int64 rank of each cell among the occupied cells of its frame.
        mask: (N, 1, h, w) occupancy (1 where a point landed).
        slots: the largest number of occupied cells in one frame (a plain int, read once when gathering, so
            that a compiled forward does not have to read a tensor's value).
    """

    values: torch.Tensor
    frame: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    slot: torch.Tensor
    mask: torch.Tensor
    slots: int

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.mask.shape[-2], self.mask.shape[-1]


def bilinear_spread(size_in: int, size_out: int, *, device: torch.device | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(size_in, size_out)``: row ``p`` holds the weights with which input cell ``p`` enters each output
    cell when ``F.interpolate(mode="bilinear", align_corners=False)`` resizes one axis from ``size_in`` to
    ``size_out`` (computed by ``F.interpolate`` on one-hot inputs, so the weights are its own)."""
    eye = torch.eye(size_in, device=device, dtype=torch.float32).reshape(size_in, 1, size_in, 1)
    spread = F.interpolate(eye, size=(size_out, 1), mode="bilinear", align_corners=False)
    return spread.reshape(size_in, size_out).to(dtype)


class PointEncoder(nn.Module):
    """``E_p^l`` of Eq. 7 for every level ``l`` (see module docstring).

    Args:
        embedding_channels: channels of the point embeddings (DIFT up block 1 of SD1.5: 1280).
        channels: output width of each level (the ControlNet's block widths).
        hidden_channels: MLP hidden width.
    """

    def __init__(self, embedding_channels: int = 1280, channels: Sequence[int] = (320, 640, 1280, 1280),
                 hidden_channels: int = 128) -> None:
        super().__init__()
        self.embedding_channels = embedding_channels
        self.model_list = nn.ModuleList(PointMLP(embedding_channels, width, hidden_channels)
                                        for width in channels)

    @property
    def num_levels(self) -> int:
        return len(self.model_list)

    def gather(self, features: torch.Tensor, mask: torch.Tensor) -> OccupiedCells:
        """Occupied cells of grids ``features`` (N, C_p, h, w) with occupancy ``mask`` (N, h, w)."""
        if features.dim() != 4 or features.shape[1] != self.embedding_channels:
            raise ValueError(f"point features: expected (N, {self.embedding_channels}, h, w), got "
                             f"{tuple(features.shape)}")
        if mask.shape != (features.shape[0], *features.shape[2:]):
            raise ValueError(f"point mask {tuple(mask.shape)} does not match the features "
                             f"{tuple(features.shape)}")
        dtype = self.model_list[0].mlp[0].weight.dtype
        frames, channels, height, width = features.shape
        index = mask.reshape(-1).nonzero().squeeze(1)
        frame, cell = index // (height * width), index % (height * width)
        values = features.reshape(frames, channels, -1).transpose(1, 2)[frame, cell]
        counts = torch.bincount(frame, minlength=frames)
        slot = torch.arange(len(index), device=index.device) - (counts.cumsum(0) - counts)[frame]
        slots = int(counts.max()) if len(index) else 0
        return OccupiedCells(values.to(dtype), frame, cell // width, cell % width, slot,
                             mask.unsqueeze(1).to(dtype), slots)

    def level(self, level: int, cells: OccupiedCells, size: tuple[int, int]) -> torch.Tensor:
        """``F_c^level`` (N, C_level, size[0], size[1]) of the gathered cells (see module docstring)."""
        mlp = self.model_list[level]
        mask = cells.mask
        num_frames, slots, count = mask.shape[0], cells.slots, len(cells.frame)
        height, width = cells.grid_size
        size = (int(size[0]), int(size[1]))
        values = mlp(cells.values)
        if size == (height, width):  # no resize: the values scattered into a zero grid
            out = values.new_zeros(num_frames, values.shape[1], height * width)
            out.transpose(1, 2)[cells.frame, cells.row * width + cells.col] = values
            return out.view(num_frames, -1, height, width)
        along_y = bilinear_spread(height, size[0], device=mask.device, dtype=mask.dtype)[cells.row]
        along_x = bilinear_spread(width, size[1], device=mask.device, dtype=mask.dtype)[cells.col]
        spread = mask.new_zeros(num_frames, slots, size[0] * size[1])
        spread[cells.frame, cells.slot] = (along_y[:, :, None] * along_x[:, None, :]).reshape(count, -1)
        spread *= F.interpolate(mask, size=size, mode="nearest").view(num_frames, 1, -1)  # the nearest mask
        padded = values.new_zeros(num_frames, slots, values.shape[1])
        padded[cells.frame, cells.slot] = values
        return torch.bmm(padded.transpose(1, 2), spread).view(num_frames, -1, *size)

    def forward(self, features: torch.Tensor, mask: torch.Tensor,
                sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """All levels at once: ``[F_c^l]`` for grids (N, C_p, h, w), masks (N, h, w), one size per level."""
        if len(sizes) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} level sizes, got {len(sizes)}")
        cells = self.gather(features, mask)
        return [self.level(index, cells, size) for index, size in enumerate(sizes)]
