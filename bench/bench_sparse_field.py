"""Sparse motion field F_s: ``sparse_field_torch`` (separable, batched matrix product) vs the release's
``points_to_flows`` + per-frame 199x199 ``cv2.filter2D``, on the example dancer's real poses.

Poses: MediaPipe on the shared reference image and dancer video (every 2nd frame), aligned to the reference,
576x1024.  The baseline is written here after the release's behaviour: a float64 (N, H, W, 2) map with each
visible keypoint's step written at its start pixel (keypoint by keypoint, frame by frame), then each frame
filtered by ``cv2.filter2D`` with the normalised 2-D Gaussian (default border, reflect-101).  Both use the
release's missing-keypoint rule.  Ours is timed twice: returning a fresh tensor, and writing into one
buffer reused from call to call (``out=``, what a pipeline does per tile; on the CPU the first touch of
fresh pages costs about as much as the computation).  Prints min and median of interleaved runs for the whole
clip and for one 16-frame tile (what the pipeline generates per tile), the ratios and the largest difference.
Run by hand: ``python bench/bench_sparse_field.py [--frames 64] [--repeats 5]``.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch
from timing import dancer_poses, interleaved, report, set_threads

from dispose.guidance.sparse_field import KERNEL_SIZE, SIGMA, sparse_field_torch
from dispose.guidance.trajectories import Trajectories, body_trajectories


def release_kernel(kernel_size: int, sigma: float) -> np.ndarray:
    """The isotropic 2-D Gaussian pdf on the grid -(k//2)..k//2 of both axes, normalised to sum 1."""
    axis = np.arange(-(kernel_size // 2), kernel_size // 2 + 1, dtype=np.float64)
    xx, yy = np.meshgrid(axis, axis)
    pdf = np.exp(-0.5 * (xx ** 2 + yy ** 2) / sigma ** 2)
    return pdf / pdf.sum()


def release_field(traj: Trajectories, frames: range, kernel: np.ndarray) -> np.ndarray:
    """points_to_flows + filter2D for the steps ``frames`` (N, 2, H, W) float64."""
    drag = np.zeros((len(frames), traj.height, traj.width, 2))
    for k in range(traj.num_keypoints):  # one track per keypoint, as the release loops
        for i, n in enumerate(frames):
            if traj.visible[n, k]:
                start, end = traj.points[n, k], traj.points[n + 1, k]
                drag[i, int(start[1]), int(start[0])] = end - start
    for i in range(len(frames)):
        drag[i] = cv2.filter2D(drag[i], -1, kernel)
    return drag.transpose(0, 3, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--tile", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch and OpenCV threads (default: theirs)")
    args = parser.parse_args()
    set_threads(args.threads)
    _, extraction = dancer_poses(args.frames)
    width, height = extraction.driving.width, extraction.driving.height
    traj = body_trajectories(extraction.reference, extraction.driving, width, height)
    points, visible = torch.from_numpy(traj.points), torch.from_numpy(traj.visible)
    kernel = release_kernel(KERNEL_SIZE, SIGMA)
    n = traj.num_driving
    print(f"dancer: {n} driving frames at {width}x{height}, {int(traj.visible.sum())} visible keypoints, "
          f"torch threads {torch.get_num_threads()}, cv2 threads {cv2.getNumThreads()}")

    def ours(frames: range, out: torch.Tensor | None = None) -> torch.Tensor:
        return sparse_field_torch(points, visible, frames, height, width, release_missing_points=True,
                                  out=out)

    for frames in (range(n), range(min(args.tile, n))):
        diff = (ours(frames).double() - torch.from_numpy(release_field(traj, frames, kernel))).abs().max()
        print(f"{len(frames)} frames: max |ours - release| {diff:.2e}")
        buffer = torch.empty(len(frames), 2, height, width)
        times = interleaved({"release": lambda f=frames: release_field(traj, f, kernel),
                             "sparse_field_torch": lambda f=frames: ours(f),
                             "sparse_field_torch, reused out": lambda f=frames, b=buffer: ours(f, b)},
                            args.repeats)
        report(times, "release")
        report(times, "release", unit=len(frames) / 1000, unit_name="ms/frame")


if __name__ == "__main__":
    main()
