"""Keypoint trajectories ``P_traj`` of DisPose's motion field guidance (paper sec. 4.1).

``P_traj = {(x_n^k, y_n^k) | k = 1..K, n = 0..N}``: the K = 18 body keypoints of the reference image
(``n = 0``) followed by those of the N driving frames, which are already aligned to the reference
(``dispose.pose.extract``).  Both motion fields are built from it: the sparse field ``F_s`` (Eq. 3,
:mod:`dispose.guidance.sparse_field`) and the reference-based sparse flow ``P_d`` (Eq. 4,
:mod:`dispose.guidance.reference_flow`).

As the release's ``pose2track``: pixel coordinates at the generation size are ``x * W`` and ``y * H``
of the normalised pose, clipped to ``[0, W - 1]`` and ``[0, H - 1]``; a keypoint that is not visible
(DWPose score <= 0.3) has coordinates ``(0, 0)`` and ``visible == False``.  The pixel coordinates are
computed and kept in float64 like the release's, as they are truncated to integer pixels later; the
normalised pose coordinates they come from are the pose container's float32 (the release's are float64), so
a point within about 1e-4 px of a pixel boundary can land on the neighbouring pixel.

Deliberate difference: the release builds a track of length ``N + 1`` even for ``N = 0`` driving frames
and then produces empty fields (its "stationary point" branch for one-frame tracks never changes the
result, because it only runs when there is no step to write).  We raise a clear error instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dispose.errors import UserError
from dispose.pose.keypoints import NUM_BODY, Pose, PoseSequence


@dataclass(frozen=True)
class Trajectories:
    """Body keypoint tracks of the reference (frame 0) and the N driving frames, in pixels.

    Attributes:
        points: float64 ``(N + 1, K, 2)`` pixel ``(x, y)`` at ``width`` x ``height``; ``(0, 0)`` where
            not visible.
        visible: bool ``(N + 1, K)``.
        width, height: the generation size the pixels refer to.
    """

    points: np.ndarray
    visible: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        points = np.asarray(self.points, dtype=np.float64)
        visible = np.asarray(self.visible, dtype=bool)
        if points.ndim != 3 or points.shape[2] != 2:
            raise ValueError(f"trajectory points must be (T, K, 2), got {points.shape}")
        if visible.shape != points.shape[:2]:
            raise ValueError(f"visibility {visible.shape} does not match points {points.shape[:2]}")
        if points.shape[0] < 2:
            raise ValueError(f"trajectories need the reference and at least one driving frame, got "
                             f"{points.shape[0]} frame(s)")
        if not np.isfinite(points).all():
            raise ValueError("trajectory points contain NaN or inf")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"invalid size {self.width}x{self.height}")
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "visible", visible)

    @property
    def num_driving(self) -> int:
        """N, the number of driving frames (motion fields have N frames)."""
        return self.points.shape[0] - 1

    @property
    def num_keypoints(self) -> int:
        return self.points.shape[1]


def _pixels(pose: Pose, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    body = np.asarray(pose.body, dtype=np.float64)
    if not np.isfinite(body[pose.body_visible]).all():
        raise ValueError("a visible body keypoint has NaN or inf coordinates")
    points = np.zeros((NUM_BODY, 2), np.float64)
    visible = np.asarray(pose.body_visible, bool)
    points[:, 0] = np.clip(body[:, 0] * width, 0, width - 1)
    points[:, 1] = np.clip(body[:, 1] * height, 0, height - 1)
    points[~visible] = 0.0
    return points, visible


def body_trajectories(reference_pose: Pose, driving: PoseSequence, width: int, height: int) -> Trajectories:
    """Trajectories of the 18 body keypoints: reference pose first, then every driving pose.

    ``driving`` holds the N driving poses normalised to the reference frame; ``width`` x ``height`` is
    the generation size.  Raises :class:`UserError` when the reference has no visible keypoint, when
    there is no driving frame, or when no driving frame has a visible keypoint.
    """
    if not reference_pose.has_person:
        raise UserError("no person found in the reference image (no body keypoint above the detector's "
                        "confidence threshold): use an image showing one person")
    if len(driving) == 0:
        raise UserError("the driving video gave no frames: check --driving, --sample-stride and --max-frames")
    if not any(pose.has_person for pose in driving.poses):
        raise UserError(f"no person found in any of the {len(driving)} driving frames: use a video "
                        "showing one person")
    tracks = [_pixels(pose, width, height) for pose in [reference_pose, *driving.poses]]
    return Trajectories(points=np.stack([p for p, _ in tracks]), visible=np.stack([v for _, v in tracks]),
                        width=int(width), height=int(height))
