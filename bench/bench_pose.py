"""Time per frame of pose detection (MediaPipe) and skeleton drawing on the shared dancer video.

Run by hand: python bench/bench_pose.py [--frames 48] [--data DIR]

Prints, measured in this run on the same frames:
* MediaPipe at the video's native size (1080x1920), tracked as a video (what `dispose pose` does) vs the
  baseline of one independent still image per frame (static mode);
* MediaPipe on frames first resized/cropped to the generation size (576x1024) vs native;
* draw_pose per frame vs the baseline of dimming the 2160-px canvas with a float64 multiply as the release
  does (our renderer uses a 256-entry lookup table for the same result).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def _per_frame(function, frames, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        function(frames)
    return (time.perf_counter() - start) / (repeat * len(frames))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("DISPOSE_SHARED_DATA",
                                                    Path(__file__).parents[2] / "shared" / "data")))
    args = parser.parse_args()

    import mediapipe

    from dispose.media.geometry import resize_and_crop
    from dispose.media.video import read_video
    from dispose.pose.drawing import CANVAS_SIDE, draw_pose
    from dispose.pose.mediapipe_pose import MediaPipePose

    clip = read_video(args.data / "musepose_dance.mp4", sample_stride=2, max_frames=args.frames)
    frames = clip.frames
    print(f"{len(frames)} frames of {clip.width}x{clip.height} (stride {clip.stride})")
    detector = MediaPipePose()
    detector.detect(frames[:2], progress=False)  # warm-up (model load)

    tracked = _per_frame(lambda f: detector.detect(f, progress=False), frames)

    def still_images(batch):
        with mediapipe.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as solution:
            for frame in batch:
                solution.process(frame)

    static = _per_frame(still_images, frames)
    small = np.stack([resize_and_crop(frame, (576, 1024)) for frame in frames])
    resized = _per_frame(lambda f: detector.detect(f, progress=False), small)
    print(f"MediaPipe native, tracked  : {tracked * 1000:7.1f} ms/frame")
    print(f"MediaPipe native, static   : {static * 1000:7.1f} ms/frame  "
          f"(tracked / static = {tracked / static:.2f})")
    print(f"MediaPipe 576x1024, tracked: {resized * 1000:7.1f} ms/frame  "
          f"(576x1024 / native = {resized / tracked:.2f})")

    poses = [p for p in detector.detect(small, progress=False) if p is not None]
    drawing = _per_frame(lambda batch: [draw_pose(p, 576, 1024) for p in batch], poses, repeat=3)
    canvas = np.zeros((int(1024 * CANVAS_SIDE / 576), CANVAS_SIDE, 3), np.uint8)
    float_dim = _per_frame(lambda batch: [(canvas * 0.6).astype(np.uint8) for _ in batch], poses, repeat=3)
    # The release's renderer is ours with the float dimming instead of the lookup table (~0 ms).
    print(f"draw_pose 576x1024         : {drawing * 1000:7.1f} ms/frame  (release-style float dimming alone: "
          f"{float_dim * 1000:.1f} ms; ours / release-style = {drawing / (drawing + float_dim):.2f})")


if __name__ == "__main__":
    main()
