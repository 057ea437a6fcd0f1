"""Peak memory of ``dispose eval`` on a short and an N-times longer video pair (``/usr/bin/time -v``).

Usage: ``python bench/eval_memory.py [SHARED_DATA_DIR] [--frames 24] [--factor 10] [--size W H]
[--metrics ...] [--weights DIR]``.  Builds, under a temporary folder, two pairs of folders (``pred/``,
``gt/``) holding two videos each (FVD-type metrics need two pairs): the ground truth loops the first
``frames`` frames of ``musepose_dance.mp4`` (1080x1920) forwards and backwards, the generated video is
the same blurred; the long pair is ``factor`` times longer.  Runs ``dispose eval`` on each, in turn, and
prints the peak resident memory of both and their ratio (streaming: ~1.0; a whole-video read: ~factor).
"""

from __future__ import annotations

import argparse
import itertools
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

from dispose.evaluation.videos import read_frames
from dispose.media.video import write_video

WEIGHT_FREE = ["psnr", "l1", "l1_disco", "temporal_flickering", "dynamic_degree_dis"]


def _pair(root: Path, source: list, length: int) -> Path:
    looped = source + source[::-1]
    for side in ("gt", "pred"):
        (root / side).mkdir(parents=True)
        frames = itertools.islice(itertools.cycle(looped), length)
        if side == "pred":
            frames = (cv2.GaussianBlur(f, (0, 0), 1.5) for f in frames)
        write_video(root / side / "dance.mp4", frames, 24, crf=23)
        (root / side / "dance2.mp4").symlink_to("dance.mp4")
    return root


def _peak_rss(root: Path, args: argparse.Namespace) -> tuple[float, float]:
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "dispose.cli", "eval",
               "--pred", str(root / "pred"), "--gt", str(root / "gt"), "--out", str(root / "report.json"),
               "--no-progress",
               "--metrics", *args.metrics]
    command += ["--size", *map(str, args.size)] if args.size else []
    command += ["--weights", str(args.weights)] if args.weights else []
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr).group(1)
    seconds = sum(float(part) * 60 ** i for i, part in enumerate(reversed(wall.split(":"))))
    return rss / 2 ** 20, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--size", nargs=2, type=int)
    parser.add_argument("--metrics", nargs="+", default=WEIGHT_FREE)
    parser.add_argument("--weights", type=Path)
    args = parser.parse_args()
    source = list(read_frames(args.data / "musepose_dance.mp4", max_frames=min(args.frames, 48)))
    with tempfile.TemporaryDirectory(prefix="dispose_eval_memory_") as folder:
        short = _pair(Path(folder) / "short", source, args.frames)
        long = _pair(Path(folder) / "long", source, args.frames * args.factor)
        (short_gb, short_s), (long_gb, long_s) = _peak_rss(short, args), _peak_rss(long, args)
    print(f"dispose eval peak RSS: {args.frames} frames {short_gb:.2f} GB ({short_s:.0f} s), "
          f"{args.frames * args.factor} frames {long_gb:.2f} GB ({long_s:.0f} s); long / short = "
          f"{long_gb / short_gb:.2f} for {args.factor}x the frames")


if __name__ == "__main__":
    main()
