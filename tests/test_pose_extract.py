"""extract_poses: reference and driving poses in the reference frame, with empty frames filled."""

from __future__ import annotations

import numpy as np
import pytest

from dispose.errors import UserError
from dispose.pose.detectors import PoseDetector
from dispose.pose.extract import extract_poses, fill_missing, load_reference
from dispose.pose.keypoints import Pose

SKELETON = np.array([
    [288, 200], [288, 260], [238, 262], [200, 360], [190, 450], [338, 262], [376, 360], [386, 450],
    [258, 480], [255, 640], [252, 790], [318, 480], [321, 640], [324, 790],
    [275, 188], [301, 188], [262, 195], [314, 195]], dtype=np.float64)


def _pose(pixels, size) -> Pose:
    return Pose.from_scores(pixels / np.asarray(size, np.float64), np.full(18, 0.9))


class ScriptedDetector(PoseDetector):
    """Answers from a script: the reference's people, then each driving frame's people."""

    name = "scripted detector"

    def __init__(self, reference: list[Pose], driving: list[list[Pose]]):
        self.answers = {1: [reference], len(driving): driving}
        self.calls: list[int] = []

    def detect_people(self, frames, progress=True):
        self.calls.append(len(frames))
        return self.answers[len(frames)]


def test_fill_missing_rule():
    a, b = object(), object()
    filled, indices = fill_missing([None, None, a, None, b, None])
    assert filled == [a, a, a, a, b, b] and indices == [0, 1, 3, 5]
    with pytest.raises(ValueError):
        fill_missing([None, None])


def test_extract_aligns_fills_and_reports():
    reference_image = np.zeros((1024, 576, 3), np.uint8)
    frames = np.zeros((5, 480, 640, 3), np.uint8)
    driving = _pose(SKELETON * 0.5 + [100, 20], (640, 480))
    detector = ScriptedDetector([_pose(SKELETON, (576, 1024))], [[], [driving], [], [driving], []])
    result = extract_poses(reference_image, frames, detector, progress=False, fps=12.0)
    assert detector.calls == [1, 5]
    assert (result.driving.width, result.driving.height, result.driving.fps) == (576, 1024, 12.0)
    assert result.filled == 3 and result.filled_frames == [0, 2, 4]
    assert len(result.driving) == 5
    for pose in result.driving.poses:  # global fit: the driving skeleton lands on the reference's
        np.testing.assert_allclose(pose.body, result.reference.body, atol=1e-5)
    none = extract_poses(reference_image, frames, detector, align="none", progress=False)
    # 640x480 covers 576x1024 once scaled to 1366x1024 (ceil of 1365.3): normalised x scale 1366 / 576.
    np.testing.assert_allclose(none.fit.scale, [1366 / 576, 1.0], rtol=1e-9)
    assert none.filled == 3


def test_reference_pose_can_be_given():
    detector = ScriptedDetector([], [[_pose(SKELETON, (576, 1024))]])
    given = _pose(SKELETON, (576, 1024))
    result = extract_poses(np.zeros((1024, 576, 3), np.uint8), np.zeros((1, 1024, 576, 3), np.uint8),
                           detector, progress=False, reference_pose=given)
    assert result.reference is given and detector.calls == [1]  # only the driving frame was detected


def test_no_person_in_the_reference():
    detector = ScriptedDetector([], [[_pose(SKELETON, (576, 1024))]] * 2)
    with pytest.raises(UserError, match="no person found in the reference image by scripted detector"):
        extract_poses(np.zeros((1024, 576, 3), np.uint8), np.zeros((2, 64, 64, 3), np.uint8), detector,
                      progress=False)


def test_load_reference_resizes_detects_and_names_the_file(shared_data):
    # musepose_ref.png is 704x1216: scaled to 593x1024 and centre-cropped to 576x1024 at resolution 576.
    person = _pose(SKELETON, (576, 1024))
    frame, pose = load_reference(shared_data / "musepose_ref.png", 576, ScriptedDetector([person], []))
    assert frame.shape == (1024, 576, 3) and frame.dtype == np.uint8 and pose is person
    with pytest.raises(UserError,
                       match="no person found in the reference image .*musepose_ref.png by scripted"):
        load_reference(shared_data / "musepose_ref.png", 256, ScriptedDetector([], []))


def test_nobody_in_any_driving_frame():
    detector = ScriptedDetector([_pose(SKELETON, (576, 1024))], [[], [], []])
    with pytest.raises(UserError, match="no person found in any of the 3 driving frames"):
        extract_poses(np.zeros((1024, 576, 3), np.uint8), np.zeros((3, 64, 64, 3), np.uint8), detector,
                      progress=False)


def test_bad_requests():
    detector = ScriptedDetector([_pose(SKELETON, (576, 1024))], [])
    with pytest.raises(UserError, match="unknown alignment"):
        extract_poses(np.zeros((1024, 576, 3), np.uint8), np.zeros((1, 8, 8, 3), np.uint8), detector,
                      align="x")
    with pytest.raises(UserError, match="no driving frame"):
        extract_poses(np.zeros((1024, 576, 3), np.uint8), np.zeros((0, 8, 8, 3), np.uint8), detector)


class CountingDetector(PoseDetector):
    """One person per frame whose nose x is the frame's mean value; records the chunk sizes it was asked."""

    name = "counting detector"

    def __init__(self):
        self.calls: list[int] = []

    def detect_people(self, frames, progress=True):
        self.calls.append(len(frames))
        return [[_pose(SKELETON + [float(np.mean(frame)), 0], (576, 1024))] for frame in frames]


def test_detect_stream_pulls_one_chunk_at_a_time_and_matches_the_whole_list():
    frames = [np.full((8, 8, 3), value, np.uint8) for value in range(70)]
    pulled = []

    def source():
        for frame in frames:
            pulled.append(frame)
            yield frame

    detector = CountingDetector()
    stream = detector.detect_stream(source())
    first = next(stream)
    assert len(pulled) == 32  # the first chunk only, not the whole video
    streamed = [first, *stream]
    assert detector.calls == [32, 32, 6]
    whole = detector.detect_people(frames)
    assert len(streamed) == 70
    for got, expected in zip(streamed, whole):
        np.testing.assert_array_equal(got[0].body, expected[0].body)


def test_stream_poses_of_an_iterator_equal_extract_poses_of_the_frames():
    from dispose.pose.extract import stream_poses

    reference_pose = _pose(SKELETON, (576, 1024))
    frames = np.zeros((5, 480, 640, 3), np.uint8)
    driving = _pose(SKELETON * 0.5 + [100, 20], (640, 480))
    script = [[], [driving], [], [driving], []]
    listed = extract_poses(np.zeros((1024, 576, 3), np.uint8), frames,
                           ScriptedDetector([reference_pose], script), progress=False, fps=12.0,
                           reference_pose=reference_pose)
    streamed = stream_poses(reference_pose, iter(frames), ScriptedDetector([reference_pose], script),
                            (576, 1024), fps=12.0)
    assert streamed.driving.to_json() == listed.driving.to_json()
    assert ((streamed.filled_frames, streamed.fit.scale.tolist())
            == (listed.filled_frames, listed.fit.scale.tolist()))
    with pytest.raises(UserError, match="no driving frame"):
        stream_poses(reference_pose, iter([]), CountingDetector(), (576, 1024))
