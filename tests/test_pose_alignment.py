"""Alignment of driving poses to the reference: the release's global fit, per-bone retargeting, and no fit."""

from __future__ import annotations

import numpy as np
import pytest

from dispose.errors import UserError
from dispose.pose.alignment import (
    BODY_PARENT,
    FIT_KEYPOINTS,
    align_people,
    fit_global,
    frame_transform,
    reference_bone_lengths,
    retarget_bones,
)
from dispose.pose.keypoints import NUM_HAND, Pose

REF_SIZE = (576, 1024)
# A standing person in reference pixels (OpenPose order).
SKELETON = np.array([
    [288, 200], [288, 260], [238, 262], [200, 360], [190, 450], [338, 262], [376, 360], [386, 450],
    [258, 480], [255, 640], [252, 790], [318, 480], [321, 640], [324, 790],
    [275, 188], [301, 188], [262, 195], [314, 195]], dtype=np.float64)


def _pose(pixels: np.ndarray, size, visible=None, hands=None, face=None) -> Pose:
    size = np.asarray(size, np.float64)
    visible = np.ones(18, bool) if visible is None else np.asarray(visible)
    hands = np.zeros((2 * NUM_HAND, 2)) if hands is None else hands / size
    face = np.zeros((68, 2)) if face is None else face / size
    return Pose(body=pixels / size, body_score=np.where(visible, 0.9, 0.1), body_visible=visible,
                hands=hands, hands_score=np.full(2 * NUM_HAND, 0.9 if hands.any() else 0.0),
                hands_visible=np.full(2 * NUM_HAND, bool(hands.any())),
                face=face, face_score=np.full(68, 0.9 if face.any() else 0.0),
                face_visible=np.full(68, bool(face.any())))


def _hands_around(pixels: np.ndarray) -> np.ndarray:
    offsets = np.linspace(-10, 10, NUM_HAND)[:, None] * np.array([1.0, 0.5])
    return np.concatenate((pixels[7] + offsets, pixels[4] + offsets))


@pytest.mark.parametrize("frame_size", [(1080, 1920), (640, 480), (577, 1001)])
def test_global_fit_recovers_a_scaled_and_shifted_skeleton(frame_size):
    scale, shift = 1.3, np.array([40.0, -25.0])  # driving pixels = reference pixels x 1.3 + shift
    reference = _pose(SKELETON, REF_SIZE, hands=_hands_around(SKELETON))
    driving = _pose(SKELETON * scale + shift, frame_size, hands=_hands_around(SKELETON) * scale + shift)
    people = [[driving], [], [driving]]
    fit = fit_global(reference, people, REF_SIZE, frame_size)
    # Pixel scale 1 / 1.3 on both axes, expressed in normalised coordinates.
    np.testing.assert_allclose(fit.scale, np.array(frame_size) / (scale * np.array(REF_SIZE)), rtol=1e-6)
    np.testing.assert_allclose(fit.offset, -shift / (scale * np.array(REF_SIZE)), atol=1e-6)
    aligned = fit.apply(people[0][0])
    expected = (people[0][0].body * np.array(frame_size) - shift) / scale / np.array(REF_SIZE)
    np.testing.assert_allclose(aligned.body, expected, atol=1e-5)
    np.testing.assert_allclose(aligned.body, reference.body, atol=1e-5)
    hands_expected = (people[0][0].hands * np.array(frame_size) - shift) / scale / np.array(REF_SIZE)
    np.testing.assert_allclose(aligned.hands, hands_expected, atol=1e-5)


def test_global_fit_is_the_release_formula():
    """np.polyfit on y over the reference-visible fit keypoints of single-person frames (restated)."""
    rng = np.random.default_rng(1)
    frame_size = (720, 1280)
    visible = np.ones(18, bool)
    visible[[10, 13, 16]] = False  # ankles and an ear hidden in the reference
    reference = _pose(SKELETON, REF_SIZE, visible=visible)
    people = [[_pose(SKELETON * rng.uniform(0.8, 1.5) + rng.normal(0, 20, SKELETON.shape), frame_size)]
              for _ in range(4)]
    stranger = _pose(rng.uniform(0, 700, SKELETON.shape), frame_size)
    people.append([stranger, people[0][0]])  # two people: left out of the fit
    people.append([])  # nobody
    fit = fit_global(reference, people, REF_SIZE, frame_size)
    ids = [k for k in FIT_KEYPOINTS if visible[k]]
    driving = np.stack([p[0].body for p in people[:4]])[:, ids].astype(np.float64)
    ref = reference.body[ids].astype(np.float64)
    a_y, b_y = np.polyfit(driving[:, :, 1].ravel(), np.tile(ref[:, 1], 4), 1)
    a_x = a_y / (frame_size[1] / frame_size[0] / REF_SIZE[1] * REF_SIZE[0])
    b_x = np.mean(np.tile(ref[:, 0], 4) - driving[:, :, 0].ravel() * a_x)
    np.testing.assert_allclose(fit.scale, [a_x, a_y], rtol=1e-9)
    np.testing.assert_allclose(fit.offset, [b_x, b_y], rtol=1e-9, atol=1e-12)
    # Invisible driving keypoints still count (the release pools them); not-located ones do not.
    hidden = _pose(people[0][0].body * np.array(frame_size), frame_size, visible=~visible)
    assert np.allclose(fit_global(reference, [[hidden]], REF_SIZE, frame_size).scale,
                       fit_global(reference, [people[0]], REF_SIZE, frame_size).scale)


def test_global_fit_without_single_person_frames_uses_first_people():
    frame_size = (576, 1024)
    crowd = [[_pose(SKELETON * 0.5 + 100, frame_size), _pose(SKELETON, frame_size)]] * 3
    fit = fit_global(_pose(SKELETON, REF_SIZE), crowd, REF_SIZE, frame_size)
    np.testing.assert_allclose(fit.scale, [2, 2], rtol=1e-6)


def test_global_fit_impossible():
    only_nose = np.zeros(18, bool)
    only_nose[0] = True
    with pytest.raises(UserError, match="--align none"):
        fit_global(_pose(SKELETON, REF_SIZE, visible=only_nose), [[_pose(SKELETON, REF_SIZE)]], REF_SIZE,
                   REF_SIZE)


def test_missing_points_stay_missing():
    reference = _pose(SKELETON, REF_SIZE)
    driving = _pose(SKELETON * 1.1, REF_SIZE)  # no hands or face: all at (0, 0) with score 0
    aligned, _ = align_people(reference, [[driving]], REF_SIZE, REF_SIZE, "global")
    assert (aligned[0].hands == 0).all() and (aligned[0].face == 0).all()
    bones, _ = align_people(reference, [[driving]], REF_SIZE, REF_SIZE, "bones")
    assert (bones[0].hands == 0).all() and (bones[0].face == 0).all()


def _bone_lengths(pose: Pose) -> np.ndarray:
    pixels = pose.body * np.array(REF_SIZE)
    return np.array([np.linalg.norm(pixels[c] - pixels[p]) if p is not None else np.nan
                     for c, p in enumerate(BODY_PARENT)])


def test_bones_take_the_reference_lengths_and_keep_directions():
    reference = _pose(SKELETON, REF_SIZE)
    driving_pixels = SKELETON.copy()
    driving_pixels[[3, 6]] += [[-30, 40], [30, 40]]  # longer upper arms
    driving_pixels[[4, 7]] = driving_pixels[[3, 6]] + [[60, -80], [-60, -80]]  # raised forearms
    # short legs
    driving_pixels[8:14] = SKELETON[8:14] + (SKELETON[8:14] - SKELETON[[8, 8, 8, 11, 11, 11]]) * -0.3
    face = driving_pixels[0] + np.linspace(-20, 20, 68)[:, None] * [1.0, 0.3]
    driving = _pose(driving_pixels, REF_SIZE, hands=_hands_around(driving_pixels), face=face)
    lengths = reference_bone_lengths(reference, REF_SIZE)
    out = retarget_bones(driving, lengths, REF_SIZE)
    got = _bone_lengths(out)
    np.testing.assert_allclose(got[1:], _bone_lengths(reference)[1:], rtol=1e-5)
    out_pixels, in_pixels = out.body * np.array(REF_SIZE), driving.body * np.array(REF_SIZE)
    for child, parent in enumerate(BODY_PARENT):
        if parent is not None:
            a, b = out_pixels[child] - out_pixels[parent], in_pixels[child] - in_pixels[parent]
            assert np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) == pytest.approx(1, abs=1e-6)
    np.testing.assert_allclose(out_pixels[1], in_pixels[1], atol=1e-3)  # rooted at the neck
    # Hands follow their wrist, the face follows the nose.
    hands = out.hands * np.array(REF_SIZE)
    np.testing.assert_allclose(hands[:NUM_HAND] - out_pixels[7], _hands_around(driving_pixels)[:NUM_HAND]
                               - in_pixels[7], atol=1e-3)
    np.testing.assert_allclose(hands[NUM_HAND:] - out_pixels[4], _hands_around(driving_pixels)[NUM_HAND:]
                               - in_pixels[4], atol=1e-3)
    np.testing.assert_allclose(out.face * np.array(REF_SIZE) - out_pixels[0], face - in_pixels[0], atol=1e-3)


def test_bones_with_occlusions():
    ref_visible = np.ones(18, bool)
    ref_visible[7] = False  # the reference's left wrist is hidden: use the right forearm's length
    reference = _pose(SKELETON, REF_SIZE, visible=ref_visible)
    lengths = reference_bone_lengths(reference, REF_SIZE)
    assert lengths[7] == pytest.approx(np.linalg.norm(SKELETON[4] - SKELETON[3]))
    assert np.isnan(lengths[1])
    driving_pixels = SKELETON * 1.2 - [50, 60]
    visible = np.ones(18, bool)
    visible[3] = False  # right elbow hidden in the driving frame: the wrist moves with the shoulder
    out = retarget_bones(_pose(driving_pixels, REF_SIZE, visible=visible), lengths, REF_SIZE)
    out_pixels = out.body * np.array(REF_SIZE)
    shoulder_shift = out_pixels[2] - driving_pixels[2]
    np.testing.assert_allclose(out_pixels[4], driving_pixels[4] + shoulder_shift, atol=1e-3)
    np.testing.assert_allclose(out_pixels[3], driving_pixels[3] + shoulder_shift, atol=1e-3)
    # Unknown on both sides: the bone keeps its (globally fitted) length.
    both = ref_visible.copy()
    both[4] = False
    lengths = reference_bone_lengths(_pose(SKELETON, REF_SIZE, visible=both), REF_SIZE)
    assert np.isnan(lengths[4]) and np.isnan(lengths[7])
    out = retarget_bones(_pose(driving_pixels, REF_SIZE), lengths, REF_SIZE)
    got = out.body * np.array(REF_SIZE)
    assert np.linalg.norm(got[7] - got[6]) == pytest.approx(np.linalg.norm(driving_pixels[7]
                                                                           - driving_pixels[6]))
    # No neck: the frame keeps the global fit.
    no_neck = np.ones(18, bool)
    no_neck[1] = False
    headless = _pose(driving_pixels, REF_SIZE, visible=no_neck)
    assert retarget_bones(headless, lengths, REF_SIZE) is headless


@pytest.mark.parametrize(("frame_size", "point", "expected"), [
    ((1080, 1920), (540, 960), (288, 512)),  # same aspect: plain scaling
    ((1920, 1080), (960, 540), (288, 512)),  # centre stays the centre
    # 1920x1080 -> 1821x1024, crop left 622 (rounded half even)
    ((1920, 1080), (0, 0), (-(1820 - 576) / 2, 0)),
])
def test_none_maps_through_resize_and_crop(frame_size, point, expected):
    fit = frame_transform(REF_SIZE, frame_size)
    mapped = (np.array(point) / np.array(frame_size) * fit.scale + fit.offset) * np.array(REF_SIZE)
    np.testing.assert_allclose(mapped, expected, atol=1.0)
    driving = _pose(np.tile(np.array(point, np.float64), (18, 1)) + 1e-3, frame_size)
    aligned, _ = align_people(None, [[driving], []], REF_SIZE, frame_size, "none")
    assert aligned[1] is None
    np.testing.assert_allclose(aligned[0].body[0] * np.array(REF_SIZE), expected, atol=1.0)


def test_unknown_mode():
    with pytest.raises(UserError, match="unknown alignment"):
        align_people(None, [], REF_SIZE, REF_SIZE, "affine")
