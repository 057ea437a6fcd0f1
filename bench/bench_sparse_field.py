"""Sparse motion field F_s: our separable splatting vs the release's direct per-frame 199x199 cv2.filter2D.

Both run on the same random trajectories (64 driving frames at 576x1024, 18 keypoints, ~10 % missing);
prints each time, the ratio and the largest difference.  Run by hand: ``python bench/bench_sparse_field.py``.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from dispose.guidance.sparse_field import gaussian_kernel_1d, sparse_motion_field, trajectory_map
from dispose.guidance.trajectories import Trajectories


def random_trajectories(frames: int, width: int, height: int, seed: int = 0) -> Trajectories:
    rng = np.random.default_rng(seed)
    points = np.cumsum(rng.normal(0, 4, (frames + 1, 18, 2)), axis=0) + rng.uniform(0, [width, height], (18, 2))
    points = np.clip(points, 0, [width - 1, height - 1])
    visible = rng.random((frames + 1, 18)) > 0.1
    points[~visible] = 0
    return Trajectories(points, visible, width, height)


def direct(traj: Trajectories, kernel_size: int, sigma: float) -> np.ndarray:
    """The release: float64 map, then cv2.filter2D with the full 2-D kernel, frame by frame."""
    g = gaussian_kernel_1d(kernel_size, sigma)
    kernel = np.outer(g, g)
    maps = trajectory_map(traj, release_missing_points=True).astype(np.float64).transpose(0, 2, 3, 1)
    return np.stack([cv2.filter2D(m, -1, kernel) for m in maps]).transpose(0, 3, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--width", type=int, default=576)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    traj = random_trajectories(args.frames, args.width, args.height)
    ours_times, direct_times = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = sparse_motion_field(traj, release_missing_points=True)
        ours_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference = direct(traj, 199, 20.0)
        direct_times.append(time.perf_counter() - start)
    t_ours, t_direct = min(ours_times), min(direct_times)
    print(f"{args.frames} frames at {args.width}x{args.height}, cv2 threads {cv2.getNumThreads()}")
    print(f"ours   {t_ours:.3f} s ({1000 * t_ours / args.frames:.2f} ms/frame)")
    print(f"direct {t_direct:.3f} s ({1000 * t_direct / args.frames:.2f} ms/frame)")
    print(f"ratio direct/ours {t_direct / t_ours:.1f}x; max |diff| {np.abs(ours - reference).max():.2e} "
          f"(field max {np.abs(reference).max():.3e})")


if __name__ == "__main__":
    main()
