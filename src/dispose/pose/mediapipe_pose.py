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
call are tracked as a video (MediaPipe's ``static_image_mode=False``, with its landmark smoothing); a
single frame is processed as a still image.  This detector is not the paper's: skeletons are sparser (no
hands, almost no face) than the DWPose ones the released weights were trained on.

MediaPipe's C++ core prints start-up lines (TFLite's "Created XNNPACK delegate" on standard output, absl
warnings on standard error) straight to the file descriptors, and no option or environment variable
turns them off; they are discarded while a graph is created and runs its first frame, so they do not
break up the progress bar.  (When standard output is a pipe, the TFLite line can still turn up once at exit:
part of MediaPipe keeps its own output buffer, which only its exit handlers flush.)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator

import numpy as np
from tqdm.auto import tqdm

from dispose.errors import UserError
from dispose.pose.detectors import Frames, PoseDetector
from dispose.pose.keypoints import NUM_BODY, NUM_FACE, NUM_HAND, Pose

#: BlazePose landmark of each OpenPose body point (None: the neck).
BODY_FROM_BLAZEPOSE: tuple[int | None, ...] = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
BLAZEPOSE_SHOULDERS = (11, 12)
#: 68-point face index -> BlazePose landmark (eye corners and mouth corners).
FACE_FROM_BLAZEPOSE: dict[int, int] = {36: 6, 39: 4, 42: 1, 45: 3, 48: 10, 54: 9}
VISIBILITY_THRESHOLD = 0.5


def _import_mediapipe():
    try:
        import mediapipe
    except ImportError:
        raise UserError("the MediaPipe pose detector needs mediapipe: pip install 'dispose-animate[pose]' "
                        "(or give --dwpose-dir with the DWPose ONNX files)") from None
    return mediapipe


@contextlib.contextmanager
def _native_output_discarded() -> Iterator[None]:
    """Point file descriptors 1 and 2 at the null device for the duration (exceptions still propagate)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        _flush_c_stdio()  # what the C library still buffers belongs to the discarded output
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)


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

    def __init__(self, min_detection_confidence: float = 0.5, visibility_threshold: float = VISIBILITY_THRESHOLD):
        self.solutions = _import_mediapipe().solutions
        self.min_detection_confidence = min_detection_confidence
        self.visibility_threshold = visibility_threshold

    def detect_people(self, frames: Frames, progress: bool = True) -> list[list[Pose]]:
        people: list[list[Pose]] = []
        options = {"static_image_mode": len(frames) == 1, "model_complexity": 1,
                   "min_detection_confidence": self.min_detection_confidence}
        with _native_output_discarded():
            solution = self.solutions.pose.Pose(**options)
        with solution:
            for index, frame in enumerate(tqdm(frames, desc="MediaPipe", unit="frame", disable=not progress)):
                with _native_output_discarded() if index == 0 else contextlib.nullcontext():
                    result = solution.process(np.ascontiguousarray(frame, dtype=np.uint8))
                if result.pose_landmarks is None:
                    people.append([])
                    continue
                landmarks = np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark])
                pose = blazepose_pose(landmarks, self.visibility_threshold)
                people.append([pose] if pose.has_person else [])
        return people
