"""Point encoder (Eq. 7): MLPs and resize on the occupied cells only vs the release's MLPs on every cell
of the grid followed by the mask and the resizes.

Run by hand: ``python bench/bench_point_encoder.py [--frames 16] [--repeats 7]`` (16 = one tile of the
pipeline, which encodes a tile's guidance once and shares it between the CFG halves and all steps; the release
encodes 2 x 16 grids at every ControlNet call).  576x1024 frames: 1/16 grid of 64x36 cells, 1280-channel
embeddings, 18 keypoints per frame (10 % missing), full-size MLPs (320, 640, 1280, 1280) with random weights,
fp32 on the CPU.  The baseline is the release's computation written with whole-tensor torch ops (dense MLP,
mask, bilinear resize, nearest mask), batched over frames (the release loops over them, slower still).  Both
run interleaved in one process; prints min and median, their ratios and the largest difference of the outputs.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from timing import interleaved, report, set_threads

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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, help="torch and OpenCV threads (default: theirs)")
    args = parser.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    encoder = PointEncoder().eval()
    features, mask = correspondence_map(torch.randn(18, 1280), torch.rand(args.frames, 18, 2),
                                        torch.rand(args.frames, 18) > 0.1, (576, 1024))
    print(f"{args.frames} grids of 64x36x1280, {int(mask.sum())} occupied cells, torch threads "
          f"{torch.get_num_threads()}")
    with torch.no_grad():
        diff = max((a - b).abs().max().item() for a, b in zip(encoder(features, mask, LEVEL_SIZES),
                                                              dense_release(encoder, features, mask)))
        print(f"max |occupied-only - dense| over the 4 levels: {diff:.2e}")
        times = interleaved({"dense (release)": lambda: dense_release(encoder, features, mask),
                             "occupied cells (ours)": lambda: encoder(features, mask, LEVEL_SIZES)},
                            args.repeats)
    report(times, "dense (release)", unit=1e-3, unit_name="ms")


if __name__ == "__main__":
    main()
