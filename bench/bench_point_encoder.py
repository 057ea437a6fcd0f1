"""Point encoder (Eq. 7): MLPs on the occupied cells only vs the release's MLPs on every cell of the grid.

Run by hand: ``python bench/bench_point_encoder.py [frames]`` (default 32 = what the release encodes at every
ControlNet call: a 16-frame tile, both CFG halves; the pipeline encodes 16 frames once per tile and job, see
``bench/pipeline.py``).  576x1024 frames: 1/16 grid of 64x36 cells, 1280-channel embeddings, 18 keypoints per frame,
full-size MLPs (320, 640, 1280, 1280).  The baseline is the release's computation written with whole-tensor
torch ops (dense MLP, mask, bilinear resize, nearest mask); prints both timings, their ratio and the
largest difference of the outputs.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from timing import best_of

from dispose.guidance.correspondence import correspondence_map
from dispose.models.point_encoder import PointEncoder

LEVEL_SIZES = [(64, 36), (32, 18), (16, 9), (16, 9)]


def dense_release(encoder: PointEncoder, features: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    cells = features.permute(0, 2, 3, 1)  # (N, h, w, C)
    out = []
    for mlp, size in zip(encoder.model_list, LEVEL_SIZES):
        level = (mlp(cells) * mask[..., None]).permute(0, 3, 1, 2)
        level = F.interpolate(level, size=size, mode="bilinear")
        out.append(level * F.interpolate(mask[:, None], size=size, mode="nearest"))
    return out


def main() -> None:
    frames = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    torch.manual_seed(0)
    encoder = PointEncoder().eval()
    features, mask = correspondence_map(torch.randn(18, 1280), torch.rand(frames, 18, 2),
                                        torch.rand(frames, 18) > 0.1, (576, 1024))
    with torch.no_grad():
        ours_s, ours = best_of(lambda: encoder(features, mask, LEVEL_SIZES))
        dense_s, dense = best_of(lambda: dense_release(encoder, features, mask))
    diff = max((a - b).abs().max().item() for a, b in zip(ours, dense))
    print(f"{frames} grids of 64x36x1280, {int(mask.sum())} occupied cells: occupied-only {ours_s * 1e3:.1f} ms, "
          f"dense (release) {dense_s * 1e3:.1f} ms, speed-up x{dense_s / ours_s:.1f}, max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
