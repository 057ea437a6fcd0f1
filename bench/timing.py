"""Helpers shared by the benchmark scripts (run them from any folder: ``python bench/<script>.py``): timing of
one function, interleaved A/B timing with min and median, the example dancer's poses, and the PSNR of two
uint8 videos."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

T = TypeVar("T")

#: The example media (reference image + dancer video), beside the checkout unless DISPOSE_SHARED_DATA is set.
SHARED = Path(os.environ.get("DISPOSE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays (peak 255); ``inf`` when they are equal."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def best_of(fn: Callable[[], T], repeats: int = 3) -> tuple[float, T]:
    """Fastest wall time of ``repeats`` calls of ``fn`` and the last call's result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int = 5) -> dict[str, list[float]]:
    """Wall times of ``repeats`` rounds, each round calling every candidate once in turn (so that a slow
    phase of a shared machine hits all of them), after one untimed warm-up call each."""
    for fn in candidates.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def report(times: dict[str, list[float]], baseline: str, unit: float = 1.0, unit_name: str = "s") -> None:
    """Print min and median of each candidate (divided by ``unit``) and its speed-up over ``baseline``
    (ratio of the minima and ratio of the medians)."""
    base_min, base_median = min(times[baseline]), statistics.median(times[baseline])
    for name, values in times.items():
        low, median = min(values) / unit, statistics.median(values) / unit
        line = f"  {name:34s} min {low:9.4f} {unit_name}  median {median:9.4f} {unit_name}"
        if name != baseline:
            line += (f"   {baseline}/{name}: x{base_min / min(values):.1f} (min), "
                     f"x{base_median / statistics.median(values):.1f} (median)")
        print(line)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` threads in torch and OpenCV (None: their defaults).  One thread gives steadier ratios
    on a machine shared with other work, where a parallel region waits for its slowest thread."""
    if threads is not None:
        import cv2
        import torch

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)


def dancer_poses(frames: int, resolution: int = 576, sample_stride: int = 2):
    """The example reference (uint8 at the generation size), its pose and the first ``frames`` aligned driving
    poses of the example dancer (MediaPipe, as ``dispose guidance`` without weights)."""
    from dispose.media.video import read_video
    from dispose.pose.detector_factory import load_detector
    from dispose.pose.extract import extract_poses, load_reference

    detector = load_detector(None)
    reference, reference_pose = load_reference(SHARED / "musepose_ref.png", resolution, detector)
    clip = read_video(SHARED / "musepose_dance.mp4", sample_stride=sample_stride, max_frames=frames)
    extraction = extract_poses(reference, clip.frames, detector, progress=False,
                               reference_pose=reference_pose)
    return reference, extraction
