"""How far the release-exact mode (``match_release=True``) is from the default, on tiny random weights.

Run by hand: ``python bench/release_mode.py [--frames 16] [--resolution 256] [--steps 3]``.  Animates the
shared dancer once per mode through the engine with identical inputs and seed, and prints the PSNR and largest
uint8 difference between the two videos, for each of the mode's parts on its own (the diffusers-0.27 temporal
context order in batched CFG; the release's missing-keypoint handling with float32 F_d) and together.  Random
weights give noise videos: the figure says how much the switch moves the numbers, not how it looks.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
from timing import SHARED, psnr_uint8

from dispose.bases.mimicmotion.tiny import build_tiny_weights
from dispose.engine import Animator, Runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        engine = Animator.load(weights=build_tiny_weights(Path(folder) / "w"),
                               runtime=Runtime(device="cpu", dtype="fp32", detector="mediapipe",
                                               dense="propagate", progress=False))
        settings = engine.settings(resolution=args.resolution, max_frames=args.frames,
                                   num_inference_steps=args.steps)
        inputs = (SHARED / "musepose_ref.png", SHARED / "musepose_dance.mp4")
        runs = {"default": {}, "missing keypoints as the release": {"release_missing_points": True},
                "everything (--match-release)": {"match_release": True}}
        frames = {name: np.asarray(engine.animate(*inputs, settings=dataclasses.replace(settings, **change))
                                   .frames) for name, change in runs.items()}
    print(f"{args.frames} frames at resolution {args.resolution}, {args.steps} steps, "
          "tiny random weights, seed 42")
    for name in list(runs)[1:]:
        diff = np.abs(frames[name].astype(int) - frames["default"].astype(int)).max()
        print(f"default vs {name:<36} PSNR {psnr_uint8(frames[name], frames['default']):6.1f} dB, "
              f"max |diff| {diff}")


if __name__ == "__main__":
    main()
