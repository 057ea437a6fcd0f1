"""MediaPipe Pose as a fallback detector: works offline with no weights to download.

MediaPipe 0.10.21 ships its BlazePose models in the wheel; we use ``mediapipe.solutions.pose`` with
``model_complexity=1`` (the "full" landmark model).  It is an optional extra (``pip install
'dispose-animate[pose]'``) imported only when used.  It finds one person per frame and gives 33 landmarks,
mapped to the container's layout as follows:

* body: the 18 OpenPose points from the BlazePose landmarks of the same name (nose, shoulders, elbows,
  wrists, hips, knees, ankles, eyes, ears); the neck is the shoulders' midpoint and, as with DWPose, scores
  1 when both shoulders are visible and 0 otherwise.  Scores are BlazePose's visibility; a point is visible
  when its visibility exceeds 0.5 (MediaPipe's own drawing threshold);
* face: the six 68-point landmarks BlazePose also locates -- the outer and inner eye corners (36, 39, 42,
  45) and the mouth corners (48, 54); the other 62 are missing;
* hands: missing (BlazePose only has three knuckle points per hand, not the 21-point hand).

Missing points have coordinates 0 and score 0 (they are not drawn).  Frames of one :meth:`detect_people`
call, or of one :meth:`detect_stream` (frames arriving one at a time, from a video being decoded), go
through one graph and are tracked as a video (MediaPipe's ``static_image_mode=False``, with its landmark
smoothing); a single frame is processed as a still image.  This detector is not the paper's: skeletons are
sparser (no hands, almost no face) than the DWPose ones the released weights were trained on.

MediaPipe's C++ core prints start-up lines straight to file descriptor 2 (TFLite's "INFO: Created TensorFlow
Lite XNNPACK delegate for CPU.", absl's "WARNING: All log messages before absl::InitializeLog()..." and
``W0000 ... *.cc:NNN]`` warnings), from its graph threads and at moments of their choosing (measured: often
just after the first frame is processed), and no option or environment variable turns them off.  While a
graph exists, descriptor 2 is therefore routed through a pipe whose reader forwards everything except those
lines, so Python's own output (the progress bar, warnings) still appears as it is written, whether standard
error is a terminal, a file or a pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from itertools import chain, islice

import numpy as np
from tqdm.auto import tqdm

from dispose.errors import UserError
from dispose.pose.detectors import Frames, PoseDetector
from dispose.pose.keypoints import NUM_BODY, NUM_FACE, NUM_HAND, Pose

#: BlazePose landmark of each OpenPose body point (None: the neck).
BODY_FROM_BLAZEPOSE: tuple[int | None, ...] = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27,
                                               5, 2, 8, 7)
BLAZEPOSE_SHOULDERS = (11, 12)
#: 68-point face index -> BlazePose landmark (eye corners and mouth corners).
FACE_FROM_BLAZEPOSE: dict[int, int] = {36: 6, 39: 4, 42: 1, 45: 3, 48: 10, 54: 9}
VISIBILITY_THRESHOLD = 0.5
#: Lines MediaPipe's C++ core writes to standard error on start-up (TFLite, absl): not shown.  They can
#: start in the middle of a progress bar's line, and always end with a newline.
NATIVE_NOISE = re.compile(rb"(INFO: Created TensorFlow Lite"
                          rb"|WARNING: All log messages before absl::InitializeLog"
                          rb"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\])[^\r\n]*\n")


def _import_mediapipe():
    try:
        import mediapipe
    except ImportError:
        raise UserError("the MediaPipe pose detector needs mediapipe: pip install 'dispose-animate[pose]' "
                        "(or give --dwpose-dir with the DWPose ONNX files)") from None
    return mediapipe


@contextlib.contextmanager
def _native_noise_filtered() -> Iterator[None]:
    """Route file descriptor 2 through a filter that drops MediaPipe's start-up lines (module docstring)."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    forwarder = threading.Thread(target=_forward_except_noise, args=(read_end, saved), daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        _flush_c_stdio()
        os.dup2(saved, 2)  # closes the pipe's last write end: the forwarder sees the end and stops
        forwarder.join()
        os.close(read_end)
        os.close(saved)


def _forward_except_noise(source: int, target: int) -> None:
    """Copy ``source`` to ``target`` a line at a time (``\\r`` ends a line too: progress bars), without
    :data:`NATIVE_NOISE`."""
    pending = b""
    while chunk := os.read(source, 65536):
        *lines, pending = re.split(rb"(?<=[\r\n])", pending + chunk)
        for line in lines:
            if line := NATIVE_NOISE.sub(b"", line):
                os.write(target, line)
    if pending:
        os.write(target, pending)


def _flush_c_stdio() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library handle on this platform: nothing to do
        pass


def blazepose_pose(landmarks: np.ndarray, threshold: float = VISIBILITY_THRESHOLD) -> Pose:
    """A :class:`Pose` from BlazePose landmarks (33, 3) as normalised x, y and visibility."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    body = np.zeros((NUM_BODY, 2))
    score = np.zeros(NUM_BODY)
    for index, source in enumerate(BODY_FROM_BLAZEPOSE):
        if source is None:
            body[index] = landmarks[list(BLAZEPOSE_SHOULDERS), :2].mean(axis=0)
            score[index] = float(all(landmarks[k, 2] > threshold for k in BLAZEPOSE_SHOULDERS))
        else:
            body[index], score[index] = landmarks[source, :2], landmarks[source, 2]
    face = np.zeros((NUM_FACE, 2))
    face_score = np.zeros(NUM_FACE)
    for index, source in FACE_FROM_BLAZEPOSE.items():
        face[index], face_score[index] = landmarks[source, :2], landmarks[source, 2]
    return Pose(body=body, body_score=score, body_visible=score > threshold,
                face=face, face_score=face_score, face_visible=face_score > threshold,
                hands=np.zeros((2 * NUM_HAND, 2)), hands_score=np.zeros(2 * NUM_HAND),
                hands_visible=np.zeros(2 * NUM_HAND, bool))


class MediaPipePose(PoseDetector):
    """MediaPipe Pose (BlazePose full, CPU); one person per frame."""

    name = "MediaPipe Pose (BlazePose full, CPU)"

    def __init__(self, min_detection_confidence: float = 0.5,
                 visibility_threshold: float = VISIBILITY_THRESHOLD):
        self.solutions = _import_mediapipe().solutions
        self.min_detection_confidence = min_detection_confidence
        self.visibility_threshold = visibility_threshold

    def detect_people(self, frames: Frames, progress: bool = True) -> list[list[Pose]]:
        return list(self.detect_stream(tqdm(frames, desc="MediaPipe", unit="frame", disable=not progress)))

    def detect_stream(self, frames: Iterable[np.ndarray], chunk_size: int = 1) -> Iterator[list[Pose]]:
        """People of each frame as they arrive, through ONE MediaPipe graph for the whole stream, so its
        tracking sees the frames as a video and gives the same poses as :meth:`detect_people` on the whole
        list (a stream of one frame is a still image, as there).  ``chunk_size`` is not used: nothing is
        held but the current frame."""
        frames = iter(frames)
        ahead = list(islice(frames, 2))
        options = {"static_image_mode": len(ahead) == 1, "model_complexity": 1,
                   "min_detection_confidence": self.min_detection_confidence}
        frames = chain(ahead, frames)
        del ahead  # the chain alone holds the first two frames, until they are used
        with _native_noise_filtered(), self.solutions.pose.Pose(**options) as solution:
            for frame in frames:
                yield self._people(solution, frame)

    def _people(self, solution, frame: np.ndarray) -> list[Pose]:
        result = solution.process(np.ascontiguousarray(frame, dtype=np.uint8))
        if result.pose_landmarks is None:
            return []
        landmarks = np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark])
        pose = blazepose_pose(landmarks, self.visibility_threshold)
        return [pose] if pose.has_person else []
