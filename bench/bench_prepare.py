"""``dispose prepare``: time per frame of each stage, bytes per clip, and what a training sample costs
when read from the shards versus computed on the fly from the video.

1. The dancer clip (``--frames`` frames, ``--size``) goes through
   :func:`dispose.training.prepare.prepare_clip` with MediaPipe poses and OpenCV DIS flow (``--raft FILE``
   for RAFT; ``--sd15 DIR`` adds DIFT, else it is skipped); the detector, flow and DIFT calls are timed, the
   rest (decode, resize, JPEG, writing) is the remainder.  Bytes per file of the shard are printed.
2. Interleaved rounds, min and median: ``shards`` = one :class:`~dispose.training.dataset.TrainingDataset`
   sample (16 frames, no flip) versus ``on the fly`` = the same frames decoded from the video, resized,
   posed with MediaPipe, flowed with DIS from the reference and drawn (DIFT left out of both).

Run by hand: ``python bench/bench_prepare.py [--frames 32] [--size 576x1024] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import SHARED, interleaved, report

from dispose.guidance.optical_flow import DISFlowEstimator
from dispose.media.geometry import resize_and_crop
from dispose.media.video import read_video
from dispose.pose.detector_factory import load_detector
from dispose.pose.drawing import draw_pose
from dispose.training.dataset import TrainingDataset
from dispose.training.geometry import carry_pose
from dispose.training.prepare import ClipTools, ModelFiles, PrepareSettings, prepare_clip
from dispose.training.sources import list_clips


class Timed:
    """Wraps a callable (or an object's method) and adds up the seconds spent in it."""

    def __init__(self, fn) -> None:
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def stages(args, out: Path) -> None:
    settings = PrepareSettings(width=args.size[0], height=args.size[1], max_frames=args.frames,
                               references=args.references, dift=args.sd15 is not None)
    models = ModelFiles(raft=args.raft, sd15=args.sd15, device=args.device)
    tools = ClipTools.load(models, settings, args.device)
    detect, flow = Timed(tools.detector.detect_people), Timed(tools.flow)
    tools.detector.detect_people, tools.flow = detect, flow
    dift = Timed(tools.dift) if tools.dift is not None else None
    tools.dift = dift
    clip = list_clips(SHARED / "musepose_dance.mp4")[0]
    record = prepare_clip(clip, out, settings, tools, identity=models.identity())
    n, pairs = record["frames"], record["flow"]["pairs"]
    rest = record["seconds"] - detect.seconds - flow.seconds - (dift.seconds if dift else 0.0)
    print(f"prepare {clip.id}: {n} frames at {args.size[0]}x{args.size[1]}, "
          f"{len(record['references'])} references, "
          f"{pairs} flow pairs, {record['seconds']:.1f} s = {record['seconds'] / n:.3f} s per frame")
    print(f"  poses ({tools.detector.name}, full-size frames) {detect.seconds / n:.3f} s/frame")
    print(f"  optical flow ({record['flow']['model']}) {flow.seconds / pairs:.3f} s/pair, "
          f"{flow.seconds / n:.3f} s/frame")
    if dift:
        print(f"  DIFT {dift.seconds / len(record['references']):.3f} s/reference")
    print(f"  decode, resize, watershed, JPEG, write {rest / n:.3f} s/frame")
    folder = out / "clips" / clip.id
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
    print(f"  bytes per clip {record['bytes']:,} ({record['bytes'] / n / 1024:.0f} KiB per frame): "
          + ", ".join(f"{name} {size:,}" for name, size in sizes.items()))


def sample_cost(args, out: Path) -> None:
    from dispose.training import shard

    shard.write_manifest(out, [shard.read_record(p)["record"] for p in sorted((out / "clips").iterdir())])
    dataset = TrainingDataset(out, require_dift=False, flip_probability=0)
    draw = dataset.choose(0)
    indices = [draw["reference"], *draw["window"]]
    detector, estimator = load_detector(None), DISFlowEstimator("medium")

    def on_the_fly():
        video = read_video(SHARED / "musepose_dance.mp4", sample_stride=2, max_frames=max(indices) + 1)
        frames = np.stack([resize_and_crop(video.frames[i], args.size) for i in indices])
        poses = [p[0] for p in detector.detect_people(video.frames[indices], progress=False)]
        src = (video.width, video.height)
        skeletons = [draw_pose(carry_pose(p, src, args.size), *args.size) for p in poses]
        flows = [estimator(frames[0], frame) for frame in frames[1:]]
        return frames, skeletons, flows

    times = interleaved({"on the fly": on_the_fly,
                         "shards": lambda: dataset.sample(0, draw["candidate"], draw["window"], False)},
                        repeats=args.repeats)
    print(f"one training sample ({len(indices)} frames at {args.size[0]}x{args.size[1]}):")
    report(times, baseline="on the fly")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), default=(576, 1024))
    parser.add_argument("--references", type=int, default=4)
    parser.add_argument("--raft", type=Path)
    parser.add_argument("--sd15", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        stages(args, Path(folder))
        sample_cost(args, Path(folder))


if __name__ == "__main__":
    main()
