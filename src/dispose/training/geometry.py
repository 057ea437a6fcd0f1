"""Carrying poses into a resized-and-cropped frame, and mirroring them, for prepared training data.

:func:`carry_pose` maps a pose normalised to a ``from_size`` frame into the frame that
:func:`dispose.media.geometry.resize_and_crop` makes of it at ``to_size`` (the same affine map as
:func:`dispose.media.geometry.resize_crop_transform`, in normalised units).

:func:`mirror_pose` is the pose of the horizontally flipped frame: ``x -> 1 - x`` (exact for pixel centres:
pixel ``i`` of a ``W``-wide frame becomes pixel ``W - 1 - i``) and the left/right labels swapped, as a
detector would label the mirrored person: body keypoints through :data:`BODY_MIRROR` (so each limb keeps
its OpenPose colour for its anatomical side), the two hands exchanged.  The 68 face points are mirrored
without relabelling (they are drawn as identical grey dots, so the skeleton image does not depend on it).
Points that are not located (invisible at exactly (0, 0)) stay at (0, 0).
"""

from __future__ import annotations

import numpy as np

from dispose.media.geometry import resize_crop_transform
from dispose.pose.keypoints import NUM_HAND, Pose, located

#: Body keypoint of the mirrored frame -> keypoint of the original (OpenPose order, see BODY_NAMES).
BODY_MIRROR = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16)
_HANDS_MIRROR = tuple(range(NUM_HAND, 2 * NUM_HAND)) + tuple(range(NUM_HAND))


def carry_pose(pose: Pose, from_size: tuple[int, int], to_size: tuple[int, int]) -> Pose:
    """``pose`` (normalised to ``from_size = (W, H)``) in the resize-and-crop of that frame to ``to_size``."""
    if tuple(from_size) == tuple(to_size):
        return pose
    scale, offset = resize_crop_transform(from_size[0], from_size[1], to_size)
    target = np.asarray(to_size, np.float64)
    return pose.transformed(scale * np.asarray(from_size, np.float64) / target, offset / target)


def inside(pose: Pose) -> np.ndarray:
    """(18,) bool: body keypoints that are visible and inside the frame."""
    x, y = pose.body[:, 0], pose.body[:, 1]
    return pose.body_visible & (x >= 0) & (x < 1) & (y >= 0) & (y < 1)


def _mirror(points: np.ndarray, visible: np.ndarray) -> np.ndarray:
    out = points.copy()
    where = located(points, visible)
    out[where, 0] = 1.0 - points[where, 0]
    return out


def mirror_pose(pose: Pose) -> Pose:
    """The pose of the horizontally flipped frame (module docstring)."""
    body, hands = list(BODY_MIRROR), list(_HANDS_MIRROR)
    return Pose(body=_mirror(pose.body, pose.body_visible)[body], body_score=pose.body_score[body],
                body_visible=pose.body_visible[body],
                hands=_mirror(pose.hands, pose.hands_visible)[hands], hands_score=pose.hands_score[hands],
                hands_visible=pose.hands_visible[hands],
                face=_mirror(pose.face, pose.face_visible), face_score=pose.face_score,
                face_visible=pose.face_visible)
