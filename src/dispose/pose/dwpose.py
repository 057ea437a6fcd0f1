"""DWPose whole-body detector (the paper's, Sec. 5.1): YOLOX person boxes, then 133 COCO-WholeBody keypoints.

Runs the release's two ONNX models (``yolox_l.onnx``, ``dw-ll_ucoco_384.onnx``) with ONNX Runtime, on CUDA
when ``onnxruntime-gpu`` and a GPU are present, else on the CPU.  Pre- and post-processing are the release's
(``mimicmotion/dwpose/{onnxdet,onnxpose,wholebody,dwpose_detector}.py``): see :mod:`dispose.pose.yolox` and
:mod:`dispose.pose.rtmpose` for the numbers.  The 133 points become the container's layout as the release
does it: 18 OpenPose body points (COCO's 17 reordered, plus a neck at the shoulders' midpoint whose score is
1 when both shoulders score > 0.3 and 0 otherwise), the 68 face points (COCO-WholeBody 23-90), the left hand
(91-111) then the right hand (112-132); the 6 foot points are dropped.  A keypoint is visible when its score
is > 0.3.

Person policy (the release's): people are ordered by YOLOX box score, best first.  When YOLOX finds no
person, the pose model is run on the whole frame as one box.

Differences from the release:

* the whole-frame fallback counts as "nobody" when none of its body keypoints is visible (the release draws
  whatever it returns and includes it in the alignment fit); such frames are then filled by
  :func:`dispose.pose.extract.extract_poses`;
* both models run on batches (several frames for YOLOX, every person of those frames for the pose model)
  when their ONNX input has a free batch dimension; the release runs one image / one person at a time.
  A model with a fixed batch of 1 (as the released files are believed to be) is run one item at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dispose.errors import UserError
from dispose.pose.detectors import DWPOSE_DETECTOR_FILE, DWPOSE_POSE_FILE, Frames, PoseDetector
from dispose.pose.keypoints import DEFAULT_SCORE_THRESHOLD, Pose
from dispose.pose.rtmpose import crop_person, decode_keypoints
from dispose.pose.yolox import INPUT_SIZE, letterbox, person_boxes

#: COCO-WholeBody index of each OpenPose body point (None: the neck, synthesised from the shoulders).
BODY_FROM_COCO: tuple[int | None, ...] = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
COCO_SHOULDERS = (5, 6)
FACE_SLICE, LEFT_HAND_SLICE, RIGHT_HAND_SLICE = slice(23, 91), slice(91, 112), slice(112, 133)
NUM_WHOLEBODY = 133


def wholebody_pose(keypoints: np.ndarray, scores: np.ndarray, width: int, height: int,
                   threshold: float = DEFAULT_SCORE_THRESHOLD) -> Pose:
    """A :class:`Pose` from 133 COCO-WholeBody keypoints (pixels of a width x height frame) and scores."""
    keypoints = np.asarray(keypoints, dtype=np.float64) / np.array([float(width), float(height)])
    scores = np.asarray(scores, dtype=np.float64)
    body = np.empty((len(BODY_FROM_COCO), 2))
    body_score = np.empty(len(BODY_FROM_COCO))
    for index, coco in enumerate(BODY_FROM_COCO):
        if coco is None:
            body[index] = keypoints[list(COCO_SHOULDERS)].mean(axis=0)
            body_score[index] = float(all(scores[k] > threshold for k in COCO_SHOULDERS))
        else:
            body[index], body_score[index] = keypoints[coco], scores[coco]
    hands = np.concatenate((keypoints[LEFT_HAND_SLICE], keypoints[RIGHT_HAND_SLICE]))
    hands_score = np.concatenate((scores[LEFT_HAND_SLICE], scores[RIGHT_HAND_SLICE]))
    return Pose.from_scores(body, body_score, hands, hands_score, keypoints[FACE_SLICE], scores[FACE_SLICE],
                            threshold=threshold)


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("DWPose needs onnxruntime: pip install 'dispose-animate[pose]' "
                        "(or onnxruntime-gpu for CUDA)") from None
    return onnxruntime


def _providers(device: str) -> list:
    """ONNX Runtime providers for ``device``: CUDA for "cuda[:i]" (and "auto") when onnxruntime-gpu has it."""
    ort = _import_onnxruntime()
    wants_cuda = device == "auto" or device.startswith("cuda")
    if wants_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _open_session(path: Path, providers: list):
    ort = _import_onnxruntime()
    if not path.is_file():
        raise UserError(f"DWPose model {path} does not exist")
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    load_errors = (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail,
                   ort_errors.NoSuchFile, ort_errors.InvalidArgument, ort_errors.NotImplemented,
                   ort_errors.RuntimeException, OSError)
    try:
        return ort.InferenceSession(str(path), providers=providers)
    except load_errors as error:
        raise UserError(f"DWPose model {path} is not a readable ONNX model ({error.__class__.__name__}); "
                        f"download it again from huggingface.co/yzd-v/DWPose") from None


def _fixed_batch(session) -> int | None:
    batch = session.get_inputs()[0].shape[0]
    return batch if isinstance(batch, int) and batch > 0 else None


def _run(session, batch: np.ndarray) -> list[np.ndarray]:
    """Run ``session`` on a batch, one item at a time when its input has a fixed batch size."""
    name = session.get_inputs()[0].name
    fixed = _fixed_batch(session)
    if fixed is None or fixed == len(batch):
        return session.run(None, {name: batch})
    if fixed != 1:
        raise ValueError(f"cannot run a model with a fixed batch of {fixed} on {len(batch)} items")
    parts = [session.run(None, {name: batch[i:i + 1]}) for i in range(len(batch))]
    return [np.concatenate(outputs) for outputs in zip(*parts)]


class DWPose(PoseDetector):
    """DWPose on ONNX Runtime.  ``batch_size`` frames go through the detector together."""

    def __init__(self, detector_model: str | Path, pose_model: str | Path, device: str = "cpu",
                 batch_size: int = 8) -> None:
        providers = _providers(device)
        self.detector_session = _open_session(Path(detector_model), providers)
        self.pose_session = _open_session(Path(pose_model), providers)
        self.batch_size = max(1, int(batch_size))
        self.detector_size = self._check_detector(Path(detector_model))
        self.pose_input_size = self._check_pose_model(Path(pose_model))
        on_gpu = self.pose_session.get_providers()[0] == "CUDAExecutionProvider"
        self.name = f"DWPose ({'CUDA' if on_gpu else 'CPU'})"

    @classmethod
    def from_folder(cls, folder: Path, device: str = "cpu") -> DWPose:
        """The release's two files from one folder (``yolox_l.onnx``, ``dw-ll_ucoco_384.onnx``)."""
        if not folder.is_dir():
            raise UserError(f"DWPose folder {folder} does not exist" if not folder.exists()
                            else f"DWPose folder {folder} is not a folder")
        missing = [name for name in (DWPOSE_DETECTOR_FILE, DWPOSE_POSE_FILE) if not (folder / name).is_file()]
        if missing:
            raise UserError(f"DWPose folder {folder} lacks {', '.join(missing)} "
                            f"(download them from huggingface.co/yzd-v/DWPose)")
        return cls(folder / DWPOSE_DETECTOR_FILE, folder / DWPOSE_POSE_FILE, device=device)

    def _check_detector(self, path: Path) -> tuple[int, int]:
        shape = self.detector_session.get_inputs()[0].shape
        if len(shape) != 4 or shape[1] != 3:
            raise UserError(f"DWPose detector {path} takes input {shape}; expected (batch, 3, 640, 640)")
        height, width = shape[2:]
        return (height, width) if isinstance(height, int) and isinstance(width, int) else INPUT_SIZE

    def _check_pose_model(self, path: Path) -> tuple[int, int]:
        shape = self.pose_session.get_inputs()[0].shape
        outputs = self.pose_session.get_outputs()
        if (len(shape) != 4 or shape[1] != 3 or not all(isinstance(v, int) for v in shape[2:])
                or len(outputs) != 2):
            raise UserError(f"DWPose pose model {path} takes input {shape} and gives {len(outputs)} outputs; "
                            f"expected (batch, 3, 384, 288) and two SimCC outputs")
        return int(shape[3]), int(shape[2])  # (w, h)

    def detect_people(self, frames: Frames, progress: bool = True) -> list[list[Pose]]:
        people: list[list[Pose]] = []
        with tqdm(total=len(frames), desc="DWPose", unit="frame", disable=not progress) as bar:
            for start in range(0, len(frames), self.batch_size):
                chunk = [np.asarray(f) for f in frames[start:start + self.batch_size]]
                people.extend(self._detect_chunk(chunk))
                bar.update(len(chunk))
        return people

    def _detect_chunk(self, frames: list[np.ndarray]) -> list[list[Pose]]:
        letterboxed = [letterbox(frame, self.detector_size) for frame in frames]
        raw = _run(self.detector_session, np.stack([image for image, _ in letterboxed]))[0]
        crops, centers, scales, owners, fallback = [], [], [], [], []
        for index, (frame, (_, ratio)) in enumerate(zip(frames, letterboxed)):
            boxes = person_boxes(raw[index], ratio, self.detector_size)
            fallback.append(len(boxes) == 0)
            if not len(boxes):
                boxes = np.array([[0.0, 0.0, frame.shape[1], frame.shape[0]]])
            for box in boxes:
                crop, center, scale = crop_person(frame, box, self.pose_input_size)
                crops.append(crop)
                centers.append(center)
                scales.append(scale)
                owners.append(index)
        simcc_x, simcc_y = _run(self.pose_session, np.stack(crops))
        keypoints, scores = decode_keypoints(simcc_x, simcc_y, np.stack(centers), np.stack(scales),
                                             self.pose_input_size)
        if keypoints.shape[1] != NUM_WHOLEBODY:
            raise UserError(f"DWPose pose model gives {keypoints.shape[1]} keypoints; "
                            f"expected {NUM_WHOLEBODY} (COCO-WholeBody)")
        result: list[list[Pose]] = [[] for _ in frames]
        for owner, points, point_scores in zip(owners, keypoints, scores):
            height, width = frames[owner].shape[:2]
            result[owner].append(wholebody_pose(points, point_scores, width, height))
        for index, poses in enumerate(result):
            if fallback[index] and not poses[0].has_person:
                result[index] = []
        return result
