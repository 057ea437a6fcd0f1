"""What ``--controlnet-interval K`` (ControlNet residuals made every K-th step, reused in between) does to the
frames and to the sampling time, against every step (K = 1, the release) and against plain MimicMotion.

Run by hand: ``python bench/controlnet_interval.py [--frames 16] [--resolution 256] [--steps 6] [--runs 3]``.
Builds the tiny random weights of :mod:`dispose.bases.mimicmotion.tiny` in a temporary folder, computes the
dancer's guidance once, then samples in alternating rounds with K = 1, 2, 3 and the baseline (same guidance,
seed, tiles).  Prints, per K, the difference of its frames to K = 1 (mean absolute difference in uint8 levels,
PSNR) and the sampling time ratios (min and median over the rounds).  The tiny models' ControlNet is as
costly relative to their UNet as the full-size ones are (both are shrunk alike), so the time ratio is
indicative; the full-size prediction is ``bench/cost_model.py``'s.  The tiny ControlNet is random, not
trained: the frame differences say how much the residuals' staleness moves the output, not whether it
looks worse.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import SHARED, psnr_uint8

from dispose.bases.mimicmotion.tiny import build_tiny_weights
from dispose.engine import Animator, Runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        build_tiny_weights(Path(folder))
        engine = Animator.load(weights=folder, runtime=Runtime(detector="mediapipe", dense="propagate",
                                                               progress=False))
        job = engine.settings(resolution=args.resolution, num_inference_steps=args.steps,
                              max_frames=args.frames)
        guidance = engine.compute_guidance(SHARED / "musepose_ref.png", SHARED / "musepose_dance.mp4",
                                           settings=job)
        variants = {"K=1 (every step)": job, "K=2": dataclasses.replace(job, controlnet_interval=2),
                    "K=3": dataclasses.replace(job, controlnet_interval=3),
                    "baseline (no DisPose)": dataclasses.replace(job, baseline=True)}
        times: dict[str, list[float]] = {name: [] for name in variants}
        frames: dict[str, np.ndarray] = {}
        for _ in range(args.runs):
            for name, settings in variants.items():
                start = time.perf_counter()
                result = engine.animate(guidance=guidance, settings=settings)
                times[name].append(time.perf_counter() - start)
                frames[name] = np.asarray(result.frames)
    every = "K=1 (every step)"
    print(f"{args.frames} frames at resolution {args.resolution}, {args.steps} steps, "
          f"{args.runs} interleaved rounds")
    for name in variants:
        ratio = [t / b for t, b in zip(times[name], times["baseline (no DisPose)"])]
        diff = np.abs(frames[name].astype(np.int16) - frames[every].astype(np.int16))
        print(f"  {name:22s} sampling min {min(times[name]):6.2f} s  "
              f"median {statistics.median(times[name]):6.2f} s"
              f"  / baseline: x{min(ratio):.3f} (min) x{statistics.median(ratio):.3f} (median)"
              f"  vs K=1: mean |diff| {diff.mean():.2f}/255, max {diff.max()}, "
              f"PSNR {psnr_uint8(frames[name], frames[every]):.1f} dB")


if __name__ == "__main__":
    main()
