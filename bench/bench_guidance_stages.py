"""Time per driving frame of each motion-guidance stage at the generation size (576x1024 by default).

Poses come from MediaPipe on the shared example (reference image + dancer video); the stages timed are
the trajectories, F_s (Eq. 3), P_d (Eq. 4), the weight-free propagation of F_d (person region built once
per video, reported separately) and CMP with random weights on this machine's device (the public checkpoint
has the same cost).  Run by hand: ``python bench/bench_guidance_stages.py [--frames 64] [--cmp-frames 8]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from timing import SHARED

from dispose.guidance.cmp import CMP
from dispose.guidance.motion_fields import cmp_motion_field
from dispose.guidance.propagation import FlowPropagator
from dispose.guidance.reference_flow import reference_displacements, reference_sparse_flow
from dispose.guidance.sparse_field import sparse_motion_field
from dispose.guidance.trajectories import body_trajectories
from dispose.media.geometry import resize_and_crop, target_size
from dispose.media.image import load_image
from dispose.media.video import read_video
from dispose.pose.detector_factory import load_detector
from dispose.pose.extract import extract_poses


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", type=Path, default=SHARED / "musepose_ref.png")
    parser.add_argument("--driving", type=Path, default=SHARED / "musepose_dance.mp4")
    parser.add_argument("--resolution", type=int, default=576)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--cmp-frames", type=int, default=8, help="frames run through CMP (slow on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    image = load_image(args.ref)
    reference = resize_and_crop(image, target_size(image.shape[1], image.shape[0], args.resolution))
    height, width = reference.shape[:2]
    clip = read_video(args.driving, sample_stride=2, max_frames=args.frames)
    extraction = extract_poses(reference, clip.frames, load_detector(None), progress=False)
    n = len(extraction.driving)
    print(f"{n} driving frames at {width}x{height}, torch threads {torch.get_num_threads()}, "
          f"device {args.device}")

    traj, t_traj = timed(body_trajectories, extraction.reference, extraction.driving, width, height)
    _, t_sparse = timed(sparse_motion_field, traj)
    (flow, mask), t_pd = timed(reference_sparse_flow, traj)
    propagator, t_build = timed(FlowPropagator, reference, traj.points[0], traj.visible[0])
    _, vectors, given = reference_displacements(traj)
    _, t_prop = timed(propagator.propagate, vectors, given)
    rows = [("trajectories", t_traj, n), ("F_s sparse field", t_sparse, n), ("P_d (384 grid)", t_pd, n),
            ("propagate F_d (per frame)", t_prop, n)]

    cmp = CMP().to(args.device).eval()
    k = min(args.cmp_frames, n)
    with torch.no_grad():
        cmp_motion_field(cmp, reference, flow[:1], mask[:1])  # warm-up
        _, t_cmp = timed(cmp_motion_field, cmp, reference, flow[:k], mask[:k])
    rows.append((f"CMP F_d random weights ({k} frames, chunks of 8)", t_cmp, k))

    for name, seconds, frames in rows:
        print(f"{name:48s} {1000 * seconds / frames:9.2f} ms/frame  ({seconds:.3f} s total)")
    print(f"{'propagate: person region + geodesics (once)':48s} {1000 * t_build:9.2f} ms")


if __name__ == "__main__":
    main()
