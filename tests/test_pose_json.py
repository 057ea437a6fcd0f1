"""Pre-computed poses from JSON: our dispose-poses/1 format and OpenPose files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dispose.errors import UserError
from dispose.pose.detectors import PoseDetector
from dispose.pose.extract import align_sequence, extract_poses
from dispose.pose.json_poses import BODY_FROM_BODY25, load_pose_file
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
    sequence = load_pose_file(tmp_path / "frame.json", frame_size=(200, 400))  # same shape as the canvas
    assert (len(sequence), sequence.width, sequence.height, sequence.fps) == (1, 400, 800, None)
    first = sequence[0]  # the first person
    for index, source in enumerate(BODY_FROM_BODY25):
        if source not in (3, 5):
            np.testing.assert_allclose(first.body[index], [(10 + source) / 400, (20 + source) / 800],
                                       rtol=1e-6)
    assert not first.body_visible[3] and first.body_visible[8]  # 0.1 < 0.3; BODY_25 9 (right hip) -> 8
    assert not first.body_visible[5] and (first.body[5] == 0).all()  # missing stays at (0, 0)
    np.testing.assert_allclose(first.hands[0], [100 / 400, 200 / 800], rtol=1e-6)
    np.testing.assert_allclose(first.hands[21], [300 / 400, 200 / 800], rtol=1e-6)
    np.testing.assert_allclose(first.face[67], [117 / 400, 60 / 800], rtol=1e-6)  # 70 points, first 68 kept
    with pytest.raises(UserError, match=r"holds poses of 400x800 frames but the video's frames are 400x400"):
        load_pose_file(tmp_path / "frame.json", frame_size=(400, 400))


def test_openpose_coco18_folder_in_natural_order_uses_frame_size(tmp_path):
    for index in (10, 2, 1):
        person = _openpose_person(18, base=float(index), face=68)
        (tmp_path / f"frame_{index}_keypoints.json").write_text(json.dumps({"people": [person]}))
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "nobody.json").write_text(json.dumps({"people": []}))  # sorts last: a frame without a person
    sequence = load_pose_file(tmp_path, frame_size=(100, 200))
    assert (len(sequence), sequence.width, sequence.height) == (4, 100, 200)
    np.testing.assert_allclose([p.body[0, 0] for p in sequence[:3]], [1 / 100, 2 / 100, 10 / 100], rtol=1e-6)
    assert not sequence[3].has_person
    with pytest.raises(UserError,
                       match="gives pixel coordinates but not the frame size .+; give the driving video"):
        load_pose_file(tmp_path)


def test_poses_from_a_file_are_aligned_and_filled_like_detected_ones(tmp_path):
    body = np.stack([np.linspace(0.3, 0.7, 18), np.linspace(0.1, 0.9, 18)], axis=1)
    poses = [Pose.from_scores(body + 0.01 * k, np.ones(18)) for k in range(3)]
    poses.insert(1, Pose.from_scores(body, np.zeros(18)))  # nobody in frame 1
    PoseSequence(poses, 100, 200, 30.0).save(tmp_path / "poses.json")
    driving = load_pose_file(tmp_path / "poses.json")
    reference = Pose.from_scores(body * 0.5 + 0.25, np.ones(18))

    class Detector(PoseDetector):  # finds exactly the file's people
        name = "file poses"

        def detect_people(self, frames, progress=True):
            return [[pose] if pose.has_person else [] for pose in poses]

    frames = np.zeros((4, 200, 100, 3), np.uint8)
    for align in ("global", "bones"):
        extraction = align_sequence(reference, driving, (288, 512), align=align)
        detected = extract_poses(np.zeros((512, 288, 3), np.uint8), frames, Detector(), align=align, fps=30.0,
                                 reference_pose=reference)
        assert extraction.filled_frames == detected.filled_frames == [1] and extraction.driving.fps == 30.0
        assert (extraction.driving.width, extraction.driving.height, len(extraction.driving)) == (288, 512, 4)
        for got, expected in zip(extraction.driving, detected.driving):
            np.testing.assert_array_equal(got.body, expected.body)
    own = align_sequence(None, driving, (288, 512), align="none")  # no reference: the frame's own geometry
    assert own.reference is None and own.driving[2].has_person
    empty = PoseSequence([Pose.from_scores(body, np.zeros(18))] * 2, 100, 200)
    with pytest.raises(UserError, match="the 2 poses given hold no person"):
        align_sequence(reference, empty, (288, 512))


def test_dispose_format_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    poses = [Pose.from_scores(rng.random((18, 2)), rng.random(18), rng.random((42, 2)), rng.random(42),
                              rng.random((68, 2)), rng.random(68)) for _ in range(3)]
    poses.append(Pose.from_scores(rng.random((18, 2)), np.zeros(18)))  # nobody visible
    PoseSequence(poses, 576, 1024, 12.0).save(tmp_path / "poses.json")
    loaded = load_pose_file(tmp_path / "poses.json", frame_size=(18, 32))
    assert (loaded.width, loaded.height, loaded.fps) == (576, 1024, 12.0) and not loaded[3].has_person
    for got, expected in zip(loaded[:3], poses[:3]):
        np.testing.assert_array_equal(got.body, expected.body)
        np.testing.assert_array_equal(got.hands_visible, expected.hands_visible)
    # Normalised to 576x1024 frames: meaningless on frames of another shape.
    with pytest.raises(UserError,
                       match="poses.json holds poses of 576x1024 frames but the video's frames are 10x10"):
        load_pose_file(tmp_path / "poses.json", frame_size=(10, 10))


def test_bad_json_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_pose_file(tmp_path / "missing.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no .json file"):
        load_pose_file(tmp_path / "empty")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UserError, match="broken.json is not readable JSON"):
        load_pose_file(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(UserError, match="neither a dispose-poses/1 file nor OpenPose JSON"):
        load_pose_file(tmp_path / "other.json")
    (tmp_path / "short.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": [1, 2, 0.5] * 10}]}))
    with pytest.raises(UserError, match="has 10 points; expected 18"):
        load_pose_file(tmp_path / "short.json")
    (tmp_path / "odd.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": [1, 2]}]}))
    with pytest.raises(UserError, match="not x, y, confidence triplets"):
        load_pose_file(tmp_path / "odd.json")
