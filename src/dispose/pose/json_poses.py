"""Pre-computed poses read from JSON (``--poses FILE``): :func:`load_pose_file`.

Accepted inputs:

* our ``dispose-poses/1`` file (written by ``dispose pose``): one pose per frame, normalised coordinates of
  the file's ``width`` x ``height`` frames; when the frames they are used with are given, those must have
  the file's aspect ratio (a :class:`~dispose.errors.UserError` otherwise: such poses describe other, e.g.
  cropped, frames);
* an OpenPose JSON file, one frame (``{"people": [...]}``): each person's ``pose_keypoints_2d`` (18 COCO
  points or 25 BODY_25 points, as x, y, confidence triplets; BODY_25's mid-hip and feet are dropped),
  ``hand_left_keypoints_2d``, ``hand_right_keypoints_2d`` (21 points each) and ``face_keypoints_2d`` (or
  ``face_keypoints_70``; 70 points whose first 68 are kept, or 68).  Coordinates are pixels; the frame size
  is the file's ``canvas_width`` / ``canvas_height`` when present (as ControlNet's tools write them), else
  the size of the frames the poses belong to (a UserError when neither is known);
* a folder of such per-frame files, taken in natural name order (``frame_2`` before ``frame_10``).

Every number must be finite (NaN and infinity are refused, naming the file and frame) and the structure as
described (``people`` a list of records, sizes positive whole numbers); anything else is a one-line
:class:`~dispose.errors.UserError` naming the file.  A point is visible when its confidence exceeds 0.3
(DWPose's threshold); a point with confidence 0 at (0, 0) is missing, as OpenPose writes them.  The first
person of each frame is kept (the one DisPose animates, as with the detectors); a frame without anybody holds
a pose with no visible point.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dispose.errors import UserError
from dispose.pose.keypoints import DEFAULT_SCORE_THRESHOLD, NUM_BODY, NUM_FACE, NUM_HAND, Pose, PoseSequence
from dispose.validation import Rule

_SIZE = Rule(int, least=1)

#: BODY_25 index of each of the 18 COCO/OpenPose body points (BODY_25 adds mid-hip 8 and six foot points).
BODY_FROM_BODY25 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)


@dataclass
class _Frame:
    people: list[Pose]
    size: tuple[int, int] | None  # (width, height) of the frame the coordinates refer to (None: not given)
    pixels: bool  # True: pixels of ``size`` (or of the matched frame when size is None); False: normalised
    fps: float | None = None  # frame rate the file states (dispose-poses/1 only)


def _triplets(values, count: int, key: str, source: Path) -> np.ndarray:
    try:
        array = np.asarray(values if values is not None else [], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise UserError(f"pose file {source}: {key} is not a list of numbers") from None
    if array.size == 0:
        return np.zeros((count, 3))
    if array.size % 3:
        raise UserError(f"pose file {source}: {key} holds {array.size} numbers, not x, y, confidence "
                        "triplets")
    return array.reshape(-1, 3)


def openpose_person(person: dict, source: Path, threshold: float = DEFAULT_SCORE_THRESHOLD) -> Pose:
    """A :class:`Pose` (pixel coordinates) from one OpenPose ``people[]`` record."""
    if not isinstance(person, dict):
        raise UserError(f"pose file {source}: 'people' holds {_short(person)}, not a person record "
                        "({\"pose_keypoints_2d\": [...]})")
    body = _triplets(person.get("pose_keypoints_2d"), NUM_BODY, "pose_keypoints_2d", source)
    if len(body) == 25:
        body = body[list(BODY_FROM_BODY25)]
    if len(body) != NUM_BODY:
        raise UserError(f"pose file {source}: pose_keypoints_2d has {len(body)} points; expected 18 (COCO) "
                        "or 25 (BODY_25)")
    hands = []
    for key in ("hand_left_keypoints_2d", "hand_right_keypoints_2d"):
        hand = _triplets(person.get(key), NUM_HAND, key, source)
        if len(hand) != NUM_HAND:
            raise UserError(f"pose file {source}: {key} has {len(hand)} points; expected {NUM_HAND}")
        hands.append(hand)
    face_key = "face_keypoints_2d" if "face_keypoints_2d" in person else "face_keypoints_70"
    face = _triplets(person.get(face_key), NUM_FACE, face_key, source)
    if len(face) not in (NUM_FACE, NUM_FACE + 2):
        raise UserError(f"pose file {source}: {face_key} has {len(face)} points; expected 68 or 70")
    face = face[:NUM_FACE]
    hands = np.concatenate(hands)
    return Pose.from_scores(body[:, :2], body[:, 2], hands[:, :2], hands[:, 2], face[:, :2], face[:, 2],
                            threshold=threshold)


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def checked_finite(pose: Pose, source: Path, frame: int) -> Pose:
    """``pose`` (frame ``frame`` of the file ``source``) when every number in it is finite, else a
    UserError."""
    for name in ("body", "body_score", "hands", "hands_score", "face", "face_score"):
        if not np.isfinite(getattr(pose, name)).all():
            raise UserError(f"pose file {source}: frame {frame} has a {name} value that is not a finite "
                            "number (NaN or Infinity); fix the file or pose the video again")
    return pose


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"pose file {path} is not readable JSON ({error})") from None


def _read_file(path: Path) -> list[_Frame]:
    data = _read_json(path)
    if isinstance(data, dict) and data.get("format") == "dispose-poses/1":
        size = (_SIZE.check(data.get("width"), f"pose file {path}: width"),
                _SIZE.check(data.get("height"), f"pose file {path}: height"))
        try:
            sequence = PoseSequence.from_json(data)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise UserError(f"pose file {path} is a damaged dispose-poses/1 file ({error})") from None
        if not sequence.poses:
            raise UserError(f"pose file {path} is a damaged dispose-poses/1 file (it holds no frames)")
        for number, pose in enumerate(sequence.poses):
            checked_finite(pose, path, number)
        return [_Frame([pose] if pose.has_person else [], size, False, sequence.fps)
                for pose in sequence.poses]
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]  # some tools wrap the frame in a list
    if not isinstance(data, dict) or "people" not in data:
        raise UserError(f"pose file {path} is neither a dispose-poses/1 file nor OpenPose JSON (no 'people')")
    if not isinstance(data["people"], list):
        raise UserError(f"pose file {path}: 'people' is {_short(data['people'])}, not a list of person "
                        "records")
    people = [checked_finite(openpose_person(person, path), path, 0) for person in data["people"]]
    size = None
    if data.get("canvas_width") and data.get("canvas_height"):
        size = (_SIZE.check(data["canvas_width"], f"pose file {path}: canvas_width"),
                _SIZE.check(data["canvas_height"], f"pose file {path}: canvas_height"))
    return [_Frame([pose for pose in people if pose.has_person], size, True)]


def _read_path(path: Path) -> list[_Frame]:
    if path.is_dir():
        files = sorted(path.glob("*.json"), key=_natural_key)
        if not files:
            raise UserError(f"pose folder {path} holds no .json file")
        return [frame for file in files for frame in _read_file(file)]
    if path.is_file():
        return _read_file(path)
    raise UserError(f"pose file {path} does not exist")


def load_pose_file(path: str | Path, frame_size: tuple[int, int] | None = None) -> PoseSequence:
    """The poses of a JSON file or a folder of per-frame files (module docstring), one per frame.

    ``frame_size = (W, H)`` is the size of the frames the poses belong to (the driving video's), when known.
    The result is normalised to the file's own frame size when it gives one (checked against
    ``frame_size``: same aspect ratio), else to ``frame_size``; its ``fps`` is the file's (dispose-poses/1)
    or None.
    """
    path = Path(path)
    frames = _read_path(path)
    sizes = {frame.size for frame in frames if frame.size is not None}
    if len(sizes) > 1:
        raise UserError(f"pose file {path} mixes frame sizes "
                        f"({', '.join(f'{w}x{h}' for w, h in sorted(sizes))}); give the poses of one video")
    size = next(iter(sizes), None) or frame_size
    if size is None:
        raise UserError(f"pose file {path} gives pixel coordinates but not the frame size (canvas_width, "
                        "canvas_height); give the driving video the poses belong to as well")
    width, height = size
    if frame_size is not None and abs(width / height - frame_size[0] / frame_size[1]) > 0.01 * width / height:
        raise UserError(f"{path} holds poses of {width}x{height} frames but the video's frames are "
                        f"{frame_size[0]}x{frame_size[1]}: a different shape (e.g. poses of resized and "
                        "cropped frames); pose the video itself instead")
    poses = []
    for frame in frames:
        pose = frame.people[0] if frame.people else _nobody()
        poses.append(pose.transformed((1.0 / width, 1.0 / height), (0.0, 0.0)) if frame.pixels else pose)
    return PoseSequence(poses, int(width), int(height), frames[0].fps)


def _nobody() -> Pose:
    return Pose(body=np.zeros((NUM_BODY, 2)), body_score=np.zeros(NUM_BODY),
                body_visible=np.zeros(NUM_BODY, bool))
