"""Aligning the driving poses to the reference person (their size and place in the generation frame).

Three modes, all returning driving poses normalised to the reference (generation) frame:

``"global"`` (default) -- the release's fit (``mimicmotion/dwpose/preprocess.py::get_video_pose``):
  one affine map per video, ``p_ref = a * p_driving + b`` per axis, in normalised coordinates.  ``a_y, b_y``
  is a least-squares line (``np.polyfit``, degree 1) from the driving y to the reference y over the body
  keypoints ``FIT_KEYPOINTS`` (nose, neck, shoulders, hips, knees, ankles, eyes, ears; no elbows/wrists)
  that are visible in the reference, pooled over every driving frame with exactly one person;
  ``a_x = a_y / (fh / fw / H * W)`` (the same pixel scale on both axes, ``fw x fh`` the driving frame,
  ``W x H`` the reference); ``b_x`` is the mean of ``x_ref - a_x x_driving`` over the same pairs.  It is
  applied to body, hands and face.
``"bones"`` -- per-bone retargeting on top of the global fit: walking the OpenPose tree from the neck, each
  visible bone keeps its driving direction and takes the reference's length for that bone (the mirrored
  bone's length when the reference's is occluded, the globally fitted length when both are).  A joint whose
  bone cannot be measured (an endpoint occluded) moves with its nearest placed ancestor; a frame without
  a visible neck keeps the global fit.  Hands follow their wrist, the face follows the nose.
``"none"`` -- no fitting: the driving frame's coordinates are carried through the same resize-and-centre-crop
  that maps the driving frame onto the generation frame (:mod:`dispose.media.geometry`).

Differences from the release in ``"global"``:

* driving keypoints that are not located (see :mod:`dispose.pose.keypoints`; e.g. missing points of
  OpenPose JSON) are left out of the fit; the release has no such points (DWPose always estimates a
  location) and pools every selected keypoint, visible or not -- so do we;
* when no driving frame has exactly one person, the first person of every frame with someone is used (the
  release crashes); a fit that cannot be made (fewer than two pairs, or no vertical spread) raises a
  :class:`~dispose.errors.UserError` suggesting ``--align none`` (the release crashes too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dispose.errors import UserError
from dispose.media.geometry import resize_crop_transform
from dispose.pose.keypoints import NUM_HAND, Pose, located
from dispose.validation import JOB_RULES

ALIGN_MODES = JOB_RULES["align"].choices  # the setting's one rule: global, bones, none
#: Body keypoints (OpenPose order) used by the release's global fit.
FIT_KEYPOINTS = (0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)
#: Parent of each OpenPose body keypoint in the kinematic tree rooted at the neck (1).
BODY_PARENT: tuple[int | None, ...] = (1, None, 1, 2, 3, 1, 5, 6, 1, 8, 9, 1, 11, 12, 0, 0, 14, 15)
#: Left/right counterpart of each body keypoint (its bone is the one to its parent).
BODY_MIRROR = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16)
#: Keypoints in an order where every parent comes before its children.
TREE_ORDER = (1, 0, 2, 5, 8, 11, 3, 6, 9, 12, 14, 15, 4, 7, 10, 13, 16, 17)
NOSE, RIGHT_WRIST, LEFT_WRIST = 0, 4, 7


@dataclass(frozen=True)
class LinearFit:
    """Per-axis map ``p_ref = p_driving * scale + offset`` between normalised coordinates."""

    scale: np.ndarray  # (2,) a_x, a_y
    offset: np.ndarray  # (2,) b_x, b_y

    def apply(self, pose: Pose) -> Pose:
        return pose.transformed(self.scale, self.offset)


def fit_global(reference: Pose, people: Sequence[Sequence[Pose]], reference_size: tuple[int, int],
               frame_size: tuple[int, int]) -> LinearFit:
    """The release's global fit (module docstring) from every frame's people; sizes are (width, height)."""
    ids = [k for k in FIT_KEYPOINTS if reference.body_visible[k]]
    single = [persons[0] for persons in people if len(persons) == 1]
    used = single or [persons[0] for persons in people if persons]
    driving_xy, reference_xy = [], []
    for pose in used:
        keep = [k for k in ids if located(pose.body[k:k + 1], pose.body_visible[k:k + 1])[0]]
        driving_xy.append(pose.body[keep].astype(np.float64))
        reference_xy.append(reference.body[keep].astype(np.float64))
    driving = np.concatenate(driving_xy) if driving_xy else np.zeros((0, 2))
    target = np.concatenate(reference_xy) if reference_xy else np.zeros((0, 2))
    if len(driving) < 2 or np.ptp(driving[:, 1]) < 1e-6:
        raise UserError(f"cannot fit the driving poses to the reference: {len(ids)} of the fit keypoints are "
                        f"visible in the reference and {len(driving)} keypoint pairs were found; "
                        "use --align none (or a reference showing the whole body)")
    a_y, b_y = np.polyfit(driving[:, 1], target[:, 1], 1)
    ref_w, ref_h = reference_size
    frame_w, frame_h = frame_size
    a_x = a_y / (frame_h / frame_w / ref_h * ref_w)
    b_x = np.mean(target[:, 0] - driving[:, 0] * a_x)
    return LinearFit(np.array([a_x, a_y]), np.array([b_x, b_y]))


def frame_transform(reference_size: tuple[int, int], frame_size: tuple[int, int]) -> LinearFit:
    """The ``"none"`` map: the driving frame resized to cover the reference frame and centre-cropped."""
    scale, offset = resize_crop_transform(frame_size[0], frame_size[1], reference_size)
    ref = np.asarray(reference_size, dtype=np.float64)
    return LinearFit(scale * np.asarray(frame_size, dtype=np.float64) / ref, offset / ref)


def reference_bone_lengths(reference: Pose, reference_size: tuple[int, int]) -> np.ndarray:
    """Length in reference pixels of the bone ending at each keypoint (NaN when unknown, incl. the neck)."""
    pixels = reference.body.astype(np.float64) * np.asarray(reference_size, dtype=np.float64)
    visible = reference.body_visible
    lengths = np.full(len(BODY_PARENT), np.nan)
    for child, parent in enumerate(BODY_PARENT):
        if parent is not None and visible[child] and visible[parent]:
            lengths[child] = np.linalg.norm(pixels[child] - pixels[parent])
    mirrored = lengths[list(BODY_MIRROR)]
    return np.where(np.isnan(lengths), mirrored, lengths)


def retarget_bones(pose: Pose, lengths: np.ndarray, reference_size: tuple[int, int]) -> Pose:
    """Give each visible bone of ``pose`` (already in the reference frame) the length ``lengths[child]``."""
    if not pose.body_visible[1]:
        return pose
    size = np.asarray(reference_size, dtype=np.float64)
    pixels = pose.body.astype(np.float64) * size
    visible = pose.body_visible
    placed = pixels.copy()
    shift = np.zeros_like(pixels)
    for child in TREE_ORDER[1:]:
        parent = BODY_PARENT[child]
        bone = pixels[child] - pixels[parent]
        norm = float(np.linalg.norm(bone))
        if visible[child] and visible[parent] and np.isfinite(lengths[child]) and norm > 1e-6:
            placed[child] = placed[parent] + bone * (lengths[child] / norm)
            shift[child] = placed[child] - pixels[child]
        else:
            shift[child] = shift[parent]
            placed[child] = pixels[child] + shift[child]
    hand_shift = np.concatenate((np.repeat(shift[LEFT_WRIST][None], NUM_HAND, 0),
                                 np.repeat(shift[RIGHT_WRIST][None], NUM_HAND, 0)))

    def moved(points: np.ndarray, visible_points: np.ndarray, delta: np.ndarray) -> np.ndarray:
        new = (points.astype(np.float64) * size + delta) / size
        return np.where(located(points, visible_points)[:, None], new, 0.0)

    return Pose(body=moved(pose.body, visible, shift), body_score=pose.body_score, body_visible=visible,
                hands=moved(pose.hands, pose.hands_visible, hand_shift), hands_score=pose.hands_score,
                hands_visible=pose.hands_visible,
                face=moved(pose.face, pose.face_visible, shift[NOSE]), face_score=pose.face_score,
                face_visible=pose.face_visible)


def align_people(reference: Pose | None, people: Sequence[Sequence[Pose]], reference_size: tuple[int, int],
                 frame_size: tuple[int, int], mode: str = "global") -> tuple[list[Pose | None], LinearFit]:
    """First person of each frame, aligned to ``reference`` (``None`` where a frame has nobody), and the
    linear map that was used (the global fit, or the frame map for ``"none"``, which needs no reference)."""
    if mode not in ALIGN_MODES:
        raise UserError(f"unknown alignment {mode!r}; choose one of {', '.join(ALIGN_MODES)}")
    if reference is None and mode != "none":
        raise ValueError(f"alignment {mode!r} needs a reference pose")
    if mode == "none":
        fit = frame_transform(reference_size, frame_size)
    else:
        fit = fit_global(reference, people, reference_size, frame_size)
    aligned = [fit.apply(persons[0]) if persons else None for persons in people]
    if mode == "bones":
        lengths = reference_bone_lengths(reference, reference_size)
        aligned = [None if pose is None else retarget_bones(pose, lengths, reference_size)
                   for pose in aligned]
    return aligned, fit
