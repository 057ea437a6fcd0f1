"""Pose detectors behind one interface (the choice between them: :mod:`dispose.pose.detector_factory`).

A detector turns RGB frames into :class:`~dispose.pose.keypoints.Pose` objects in coordinates normalised
to each frame.  :meth:`PoseDetector.detect_people` returns every person found in each frame, in the
detector's order of confidence (DWPose: YOLOX box score, best first); :meth:`PoseDetector.detect` keeps the
first one, which is the person DisPose animates (the release uses the first person's body keypoints for its
motion guidance and for the alignment fit).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from dispose.pose.keypoints import Pose

#: File names of the DWPose release (huggingface.co/yzd-v/DWPose).
DWPOSE_DETECTOR_FILE = "yolox_l.onnx"
DWPOSE_POSE_FILE = "dw-ll_ucoco_384.onnx"

Frames = np.ndarray | Sequence[np.ndarray]


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
