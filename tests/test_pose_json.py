"""Pre-computed poses from JSON: our dispose-poses/1 format and OpenPose files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dispose.errors import UserError
from dispose.pose.json_poses import BODY_FROM_BODY25, JsonPoses
from dispose.pose.keypoints import Pose, PoseSequence


def _openpose_person(count: int, base: float = 10.0, hands: bool = True, face: int = 70) -> dict:
    body = [[base + k, 2 * base + k, 0.9] for k in range(count)]
    body[3][2] = 0.1  # unsure point
    body[5] = [0, 0, 0]  # missing point
    person = {"pose_keypoints_2d": [v for point in body for v in point]}
    if hands:
        person["hand_left_keypoints_2d"] = [v for k in range(21) for v in (100 + k, 200, 0.8)]
        person["hand_right_keypoints_2d"] = [v for k in range(21) for v in (300 + k, 200, 0.8)]
    if face:
        person["face_keypoints_2d"] = [v for k in range(face) for v in (50 + k, 60, 0.7)]
    return person


def test_openpose_body25_with_canvas(tmp_path):
    data = {"version": 1.3, "canvas_width": 400, "canvas_height": 800,
            "people": [_openpose_person(25), _openpose_person(25, base=30.0, hands=False, face=0)]}
    (tmp_path / "frame.json").write_text(json.dumps(data))
    people = JsonPoses(tmp_path / "frame.json").detect_people([np.zeros((100, 50, 3), np.uint8)])[0]
    assert len(people) == 2
    first = people[0]
    for index, source in enumerate(BODY_FROM_BODY25):
        if source not in (3, 5):
            np.testing.assert_allclose(first.body[index], [(10 + source) / 400, (20 + source) / 800], rtol=1e-6)
    assert not first.body_visible[3] and first.body_visible[8]  # 0.1 < 0.3; BODY_25 9 (right hip) -> 8
    assert not first.body_visible[5] and (first.body[5] == 0).all()  # missing stays at (0, 0)
    np.testing.assert_allclose(first.hands[0], [100 / 400, 200 / 800], rtol=1e-6)
    np.testing.assert_allclose(first.hands[21], [300 / 400, 200 / 800], rtol=1e-6)
    np.testing.assert_allclose(first.face[67], [117 / 400, 60 / 800], rtol=1e-6)  # 70 points, first 68 kept
    assert not people[1].hands_visible.any() and (people[1].hands == 0).all()


def test_openpose_coco18_folder_in_natural_order_uses_frame_size(tmp_path):
    for index in (10, 2, 1):
        person = _openpose_person(18, base=float(index), face=68)
        (tmp_path / f"frame_{index}_keypoints.json").write_text(json.dumps({"people": [person]}))
    (tmp_path / "notes.txt").write_text("ignored")
    source = JsonPoses(tmp_path)
    assert len(source) == 3
    frames = np.zeros((3, 200, 100, 3), np.uint8)
    poses = source.detect(frames)
    np.testing.assert_allclose([p.body[0, 0] for p in poses], [1 / 100, 2 / 100, 10 / 100], rtol=1e-6)
    assert source.subsample(2).detect(frames[:2])[1].body[0, 0] == pytest.approx(10 / 100)
    with pytest.raises(UserError, match="holds poses for 3 frames but 2 frames were given"):
        source.detect(frames[:2])


def test_dispose_format_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    poses = [Pose.from_scores(rng.random((18, 2)), rng.random(18), rng.random((42, 2)), rng.random(42),
                              rng.random((68, 2)), rng.random(68)) for _ in range(3)]
    poses.append(Pose.from_scores(rng.random((18, 2)), np.zeros(18)))  # nobody visible
    PoseSequence(poses, 576, 1024, 12.0).save(tmp_path / "poses.json")
    loaded = JsonPoses(tmp_path / "poses.json").detect(np.zeros((4, 32, 18, 3), np.uint8))
    assert loaded[3] is None
    for got, expected in zip(loaded[:3], poses[:3]):
        np.testing.assert_array_equal(got.body, expected.body)
        np.testing.assert_array_equal(got.hands_visible, expected.hands_visible)
    # Normalised to 576x1024 frames: meaningless on frames of another shape.
    with pytest.raises(UserError, match="poses.json holds poses of 576x1024 frames but the frames given are 10x10"):
        JsonPoses(tmp_path / "poses.json").detect(np.zeros((4, 10, 10, 3), np.uint8))


def test_bad_json_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        JsonPoses(tmp_path / "missing.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no .json file"):
        JsonPoses(tmp_path / "empty")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UserError, match="broken.json is not readable JSON"):
        JsonPoses(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(UserError, match="neither a dispose-poses/1 file nor OpenPose JSON"):
        JsonPoses(tmp_path / "other.json")
    (tmp_path / "short.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": [1, 2, 0.5] * 10}]}))
    with pytest.raises(UserError, match="has 10 points; expected 18"):
        JsonPoses(tmp_path / "short.json")
    (tmp_path / "odd.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": [1, 2]}]}))
    with pytest.raises(UserError, match="not x, y, confidence triplets"):
        JsonPoses(tmp_path / "odd.json")
