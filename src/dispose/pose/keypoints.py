"""Per-frame whole-body pose container.

One :class:`Pose` holds one person in one frame, in the three views DisPose needs:

* ``body``  -- 18 keypoints in OpenPose order (the layout DWPose derives from COCO-WholeBody,
  with the neck synthesised as the shoulder midpoint), see :data:`BODY_NAMES`;
* ``hands`` -- 2 x 21 keypoints (left hand first, then right, as DWPose emits them);
* ``face``  -- 68 keypoints.

Coordinates are normalised: ``x / width`` and ``y / height`` of the image the pose was detected
on, so ``(0, 0)`` is the top-left corner and ``(1, 1)`` the bottom-right one.  Every point has a
confidence score and an explicit visibility mask; a missing point is ``visible == False`` (its
coordinates are kept as detected, or 0 when the source has none, and must not be read).  An invisible
point at exactly (0, 0) is "not located" (the source had no estimate at all); geometric maps
(:meth:`Pose.transformed`) leave such points at (0, 0) so they stay recognisable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BODY_NAMES: tuple[str, ...] = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
NUM_BODY, NUM_HAND, NUM_FACE = 18, 21, 68

#: Confidence below which DWPose (and MimicMotion's renderer) treats a keypoint as missing.
DEFAULT_SCORE_THRESHOLD = 0.3


def _points(array, n: int, name: str) -> np.ndarray:
    out = (np.asarray(array, dtype=np.float32).reshape(-1, 2) if np.size(array)
           else np.zeros((0, 2), np.float32))
    if out.shape != (n, 2):
        raise ValueError(f"{name}: expected {n} points of (x, y), got array of shape {np.shape(array)}")
    return out


def _vector(array, n: int, name: str, dtype) -> np.ndarray:
    out = np.asarray(array, dtype=dtype).reshape(-1)
    if out.shape != (n,):
        raise ValueError(f"{name}: expected {n} values, got array of shape {np.shape(array)}")
    return out


def located(points: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Mask of points that carry a location: visible, or invisible but not at exactly (0, 0)."""
    return np.asarray(visible, bool) | np.any(np.asarray(points) != 0, axis=-1)


@dataclass
class Pose:
    """Keypoints of one person in one frame (normalised coordinates, see module docstring)."""

    body: np.ndarray
    body_score: np.ndarray
    body_visible: np.ndarray
    hands: np.ndarray = field(default_factory=lambda: np.zeros((2 * NUM_HAND, 2), np.float32))
    hands_score: np.ndarray = field(default_factory=lambda: np.zeros(2 * NUM_HAND, np.float32))
    hands_visible: np.ndarray = field(default_factory=lambda: np.zeros(2 * NUM_HAND, bool))
    face: np.ndarray = field(default_factory=lambda: np.zeros((NUM_FACE, 2), np.float32))
    face_score: np.ndarray = field(default_factory=lambda: np.zeros(NUM_FACE, np.float32))
    face_visible: np.ndarray = field(default_factory=lambda: np.zeros(NUM_FACE, bool))

    def __post_init__(self) -> None:
        self.body = _points(self.body, NUM_BODY, "body")
        self.body_score = _vector(self.body_score, NUM_BODY, "body_score", np.float32)
        self.body_visible = _vector(self.body_visible, NUM_BODY, "body_visible", bool)
        self.hands = _points(self.hands, 2 * NUM_HAND, "hands")
        self.hands_score = _vector(self.hands_score, 2 * NUM_HAND, "hands_score", np.float32)
        self.hands_visible = _vector(self.hands_visible, 2 * NUM_HAND, "hands_visible", bool)
        self.face = _points(self.face, NUM_FACE, "face")
        self.face_score = _vector(self.face_score, NUM_FACE, "face_score", np.float32)
        self.face_visible = _vector(self.face_visible, NUM_FACE, "face_visible", bool)

    @classmethod
    def from_scores(
        cls,
        body,
        body_score,
        hands=None,
        hands_score=None,
        face=None,
        face_score=None,
        threshold: float = DEFAULT_SCORE_THRESHOLD,
    ) -> Pose:
        """Build a pose whose visibility is ``score > threshold`` (DWPose's rule, compared in float64 as the
        release does: a float32 score of exactly 0.3 counts as visible)."""
        kwargs = {"body": body, "body_score": body_score,
                  "body_visible": np.asarray(body_score, np.float64) > threshold}
        if hands is not None:
            kwargs.update(hands=hands, hands_score=hands_score,
                          hands_visible=np.asarray(hands_score, np.float64) > threshold)
        if face is not None:
            kwargs.update(face=face, face_score=face_score,
                          face_visible=np.asarray(face_score, np.float64) > threshold)
        return cls(**kwargs)

    @property
    def has_person(self) -> bool:
        """True when at least one body keypoint is visible."""
        return bool(self.body_visible.any())

    def transformed(self, scale, offset) -> Pose:
        """A copy with every located point mapped by ``p * scale + offset`` (per-axis, normalised units).

        Computed in float64, stored as float32; points that are not located (see module docstring) stay
        at (0, 0).
        """
        scale = np.asarray(scale, np.float64)
        offset = np.asarray(offset, np.float64)

        def move(points: np.ndarray, visible: np.ndarray) -> np.ndarray:
            return np.where(located(points, visible)[:, None], points.astype(np.float64) * scale + offset,
                            0.0)

        return Pose(
            body=move(self.body, self.body_visible), body_score=self.body_score,
            body_visible=self.body_visible,
            hands=move(self.hands, self.hands_visible), hands_score=self.hands_score,
            hands_visible=self.hands_visible,
            face=move(self.face, self.face_visible), face_score=self.face_score,
            face_visible=self.face_visible,
        )

    def to_dict(self) -> dict:
        return {name: getattr(self, name).tolist() for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict) -> Pose:
        missing = [name for name in ("body", "body_score", "body_visible") if name not in data]
        if missing:
            raise ValueError(f"pose record lacks {missing}")
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


@dataclass
class PoseSequence:
    """Poses of consecutive frames of one video (or a single image), with the frame geometry.

    ``width``/``height`` are the pixel size of the frames the normalised coordinates refer to;
    ``fps`` is the frame rate after sampling (``None`` for an image).
    """

    poses: list[Pose]
    width: int
    height: int
    fps: float | None = None

    def __len__(self) -> int:
        return len(self.poses)

    def __getitem__(self, index):
        return self.poses[index]

    def to_json(self) -> dict:
        return {"format": "dispose-poses/1", "width": self.width, "height": self.height, "fps": self.fps,
                "frames": [p.to_dict() for p in self.poses]}

    def save(self, path: str | Path) -> None:
        from dispose.media.files import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_json()))

    @classmethod
    def from_json(cls, data: dict) -> PoseSequence:
        if data.get("format") != "dispose-poses/1":
            raise ValueError("not a dispose pose file (missing 'format': 'dispose-poses/1')")
        return cls([Pose.from_dict(f) for f in data["frames"]], int(data["width"]), int(data["height"]),
                   data.get("fps"))
