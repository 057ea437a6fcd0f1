"""Temporal tiles and their fusion weights (MimicMotion's progressive latent fusion).

A video of ``n`` frames is denoised in overlapping tiles of ``tile_size`` frames.  Frame 0 is the
reference frame (the reference image and its pose); it belongs to *every* tile, so each tile is
``[0] + (tile_size - 1)`` consecutive driving frames.  Tile starts advance by ``tile_size - overlap``
frames; a last tile aligned to the end is added when the regular tiles stop short of the last frame.
The overlap counts the shared reference frame: consecutive tiles share ``overlap - 1`` driving frames
(5 with the release's 16 / 6).  An overlap of 0 would leave every ``tile_size``-th frame in no tile (the
release then divides by a zero weight); it is rejected.
The noise predictions of all tiles are summed per frame with triangular weights over the tile
positions and divided by the summed weights (MimicMotion Sec. 3.3, "progressive latent fusion").

What we reproduce from the release (MimicMotion / DisPose ``pipeline_*.py``): the index formula above,
``weight_k = min(w, 2 - w)`` with ``w = (k + 0.5) * 2 / T`` for position ``k`` of a tile of ``T``
frames (position 0, the reference frame, gets the smallest weight), and the initial noise being one
tile-length block repeated along the video (:func:`repeat_tile_noise`).

Deliberate difference: the release crashes (IndexError) on videos shorter than one tile; here such a
video is one tile of its own length, weighted by the same formula over that length.
"""

from __future__ import annotations

import torch


def check_tiling(tile_size: int, overlap: int) -> None:
    """Raise ValueError unless ``2 <= tile_size`` and ``1 <= overlap < tile_size``."""
    if tile_size < 2:
        raise ValueError(f"tile size (num_frames) must be at least 2 (the reference frame + 1), "
                         f"got {tile_size}")
    if not 1 <= overlap < tile_size:
        raise ValueError(f"frames overlap must be in [1, {tile_size - 1}] for tiles of {tile_size} frames "
                         f"(it counts the shared reference frame; 0 would leave frames uncovered), "
                         f"got {overlap}")


def tile_indices(num_frames: int, tile_size: int = 16, overlap: int = 6) -> list[list[int]]:
    """Frame indices of each tile of a video of ``num_frames`` frames (frame 0 = the reference).

    Every tile starts with 0, then ``tile_size - 1`` consecutive frames; tiles advance by
    ``tile_size - overlap``.  A video of at most ``tile_size`` frames is a single tile of all frames.
    Every frame is covered; with release settings (16, 6) the tiles are ``[0, 1..15]``, ``[0, 11..25]``...
    """
    check_tiling(tile_size, overlap)
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    if num_frames <= tile_size:
        return [list(range(num_frames))]
    stride = tile_size - overlap
    tiles = [[0, *range(start + 1, start + tile_size)]
             for start in range(0, num_frames - tile_size + 1, stride)]
    if tiles[-1][-1] < num_frames - 1:
        tiles.append([0, *range(num_frames - tile_size + 1, num_frames)])
    return tiles


def fusion_weights(length: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Triangular weights of the ``length`` positions of a tile: ``min(w, 2 - w)``,
    ``w = (k + .5) * 2 / length``."""
    ramp = (torch.arange(length, device=device, dtype=torch.float64) + 0.5) * 2.0 / length
    return torch.minimum(ramp, 2.0 - ramp).to(dtype)


def fusion_normaliser(tiles: list[list[int]], num_frames: int, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sum over tiles of each frame's weight, shape (num_frames,); every entry is positive."""
    total = torch.zeros(num_frames, device=device, dtype=dtype)
    for tile in tiles:
        total[tile] += fusion_weights(len(tile), device, dtype)
    return total


def repeat_tile_noise(block: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Tile a (B, T, C, h, w) noise block along frames and cut to ``num_frames`` (release's initial noise)."""
    repeats = num_frames // block.shape[1] + 1
    return block.repeat(1, repeats, 1, 1, 1)[:, :num_frames]
