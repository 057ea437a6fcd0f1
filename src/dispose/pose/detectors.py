"""Pose detectors behind one interface (the choice between them: :mod:`dispose.pose.detector_factory`).

A detector turns RGB frames into :class:`~dispose.pose.keypoints.Pose` objects in coordinates normalised
to each frame.  :meth:`PoseDetector.detect_people` returns every person found in each frame, in the
detector's order of confidence (DWPose: YOLOX box score, best first); :meth:`PoseDetector.detect` keeps the
first one, which is the person DisPose animates (the release uses the first person's body keypoints for its
motion guidance and for the alignment fit).

:meth:`PoseDetector.detect_stream` does the same for frames that arrive one at a time (a video decoded as it
is read, :class:`~dispose.media.video.VideoFrames`): it holds at most one chunk of frames, so memory does not
grow with the video's length, and gives the same people as :meth:`~PoseDetector.detect_people` on the whole
list (detectors that track across frames, such as MediaPipe, override it to keep their state for the stream).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import numpy as np

from dispose.pose.keypoints import Pose

#: File names of the DWPose release (huggingface.co/yzd-v/DWPose).
DWPOSE_DETECTOR_FILE = "yolox_l.onnx"
DWPOSE_POSE_FILE = "dw-ll_ucoco_384.onnx"

Frames = np.ndarray | Sequence[np.ndarray]
#: Frames :meth:`PoseDetector.detect_stream` detects at once by default (a multiple of DWPose's batch of 8, so
#: its batches are the same as over the whole list).
STREAM_CHUNK = 32


class PoseDetector(ABC):
    """Finds people in uint8 RGB frames (H, W, 3)."""

    #: Short human-readable name, e.g. ``"DWPose (CPU)"``.
    name: str = "pose detector"

    @abstractmethod
    def detect_people(self, frames: Frames, progress: bool = True) -> list[list[Pose]]:
        """Every person of every frame (best first); an empty list when a frame has nobody."""

    def detect(self, frames: Frames, progress: bool = True) -> list[Pose | None]:
        """The first person of each frame, ``None`` when a frame has nobody."""
        return [people[0] if people else None for people in self.detect_people(frames, progress)]

    def detect_stream(self, frames: Iterable[np.ndarray],
                      chunk_size: int = STREAM_CHUNK) -> Iterator[list[Pose]]:
        """Every person of each frame of ``frames``, yielded in order as :meth:`detect_people` gives them;
        ``chunk_size`` frames are detected at a time and only their people are kept."""
        frames = iter(frames)
        while chunk := list(islice(frames, chunk_size)):
            yield from self.detect_people(chunk, progress=False)
