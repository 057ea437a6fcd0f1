"""Metrics that read a video one frame at a time, so memory does not grow with the video's length.

A :class:`FrameMeter` is fed one video's frames in order (``update``) and gives its value once at the
end (``result``); it keeps at most one batch or clip of frames.  :meth:`FrameMeter.run` feeds a whole
sequence (an array or any iterable of frames), which is what the metric functions of
:mod:`.vbench`, :mod:`.fvd` and :mod:`.resnet3d` do; ``dispose eval`` instead decodes each video
once and feeds every meter frame by frame.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

#: pixels a batch of full-size frames may hold (eight 512x512 frames); bigger frames go in smaller batches
BATCH_PIXELS = 8 * 512 * 512


def batch_size(size: tuple[int, int], most: int) -> int:
    """Frames per batch for ``(W, H)`` frames: ``most``, fewer for big frames (one 1080p frame at a time)."""
    return max(1, min(most, BATCH_PIXELS // (size[0] * size[1])))


class FrameMeter:
    """One metric of one video, fed frame by frame."""

    def update(self, frame: np.ndarray) -> None:
        raise NotImplementedError

    def result(self) -> Any:
        raise NotImplementedError

    def run(self, frames: Iterable[np.ndarray]) -> Any:
        for frame in frames:
            self.update(frame)
        return self.result()


class BatchedMeter(FrameMeter):
    """Frames gathered into ``(B, H, W, 3)`` batches: :meth:`process` gets each full batch, then the rest."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self._pending: list[np.ndarray] = []

    def process(self, frames: np.ndarray) -> None:
        raise NotImplementedError

    def summary(self) -> Any:
        raise NotImplementedError

    def update(self, frame: np.ndarray) -> None:
        self._pending.append(frame)
        if len(self._pending) == self.batch:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            frames, self._pending = np.stack(self._pending), []
            self.process(frames)

    def result(self) -> Any:
        self._flush()
        return self.summary()
