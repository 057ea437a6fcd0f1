"""MediaPipe on the real example media: plausible skeletons (not exact pixels), and the no-person paths."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from dispose.errors import UserError
from dispose.media.geometry import resize_and_crop, target_size
from dispose.media.image import load_image
from dispose.media.video import read_video
from dispose.pose.detector_factory import load_detector
from dispose.pose.extract import extract_poses
from dispose.pose.mediapipe_pose import BODY_FROM_BLAZEPOSE, _forward_except_noise, blazepose_pose

pytest.importorskip("mediapipe", reason="MediaPipe is the optional 'pose' extra")

NOSE, NECK, R_SHOULDER, L_SHOULDER, R_HIP, L_HIP, R_ANKLE, L_ANKLE = 0, 1, 2, 5, 8, 11, 10, 13


@pytest.fixture(scope="module")
def detector():
    return load_detector(None)


@pytest.fixture(scope="module")
def dancer(shared_data):
    clip = read_video(shared_data / "musepose_dance.mp4", sample_stride=8, max_frames=4)
    return np.stack([resize_and_crop(frame, (288, 512)) for frame in clip.frames])


def _assert_plausible_frontal(pose) -> None:
    body, visible = pose.body, pose.body_visible
    for k in (NOSE, NECK, R_SHOULDER, L_SHOULDER, R_HIP, L_HIP):
        assert visible[k]
    assert visible.sum() >= 14
    assert ((body[visible] > -0.02) & (body[visible] < 1.02)).all()  # inside the frame
    assert body[NOSE, 1] < body[NECK, 1] < body[R_HIP, 1]  # head above shoulders above hips
    assert body[R_SHOULDER, 0] < body[NECK, 0] < body[L_SHOULDER, 0]  # facing us: their right is our left
    assert body[R_HIP, 0] < body[L_HIP, 0]
    np.testing.assert_allclose(body[NECK], (body[R_SHOULDER] + body[L_SHOULDER]) / 2, atol=1e-6)
    assert pose.body_score[NECK] == 1.0
    assert not pose.hands_visible.any() and (pose.hands == 0).all()
    assert pose.face_visible.sum() <= 6


def test_finds_the_dancer(detector, dancer):
    poses = detector.detect(dancer, progress=False)
    assert all(pose is not None for pose in poses)
    for pose in poses:
        _assert_plausible_frontal(pose)
        if pose.body_visible[[R_ANKLE, L_ANKLE]].all():
            assert pose.body[R_ANKLE, 1] > pose.body[R_HIP, 1] + 0.15


@pytest.mark.parametrize("name", ["musepose_ref.png", "moore_anyone-2.png", "moore_anyone-5.png"])
def test_finds_the_reference_people(detector, shared_data, name):
    image = load_image(shared_data / name)
    frame = resize_and_crop(image, target_size(image.shape[1], image.shape[0], 256))
    pose = detector.detect([frame], progress=False)[0]
    assert pose is not None
    _assert_plausible_frontal(pose)


def test_half_body_reference(detector, shared_data):
    image = load_image(shared_data / "moore_anyone-1.png")  # waist up: legs below the frame
    pose = detector.detect([resize_and_crop(image, (256, 448))], progress=False)[0]
    assert pose is not None and pose.body_visible[[NOSE, NECK, R_SHOULDER, L_SHOULDER]].all()
    assert not pose.body_visible[[R_ANKLE, L_ANKLE]].any()


def test_nobody(detector, dancer):
    blank = np.full((512, 288, 3), 90, np.uint8)
    assert detector.detect([blank], progress=False) == [None]
    with pytest.raises(UserError, match="no person found in the reference image by MediaPipe"):
        extract_poses(blank, dancer[:1], detector, progress=False)
    # A driving frame without anybody carries the previous pose.
    frames = np.stack([dancer[0], blank, dancer[1]])
    result = extract_poses(dancer[0], frames, detector, progress=False)
    assert result.filled == 1 and result.filled_frames == [1]
    np.testing.assert_array_equal(result.driving[1].body, result.driving[0].body)


def test_dancer_aligned_to_the_reference(detector, dancer, shared_data):
    image = load_image(shared_data / "musepose_ref.png")
    reference = resize_and_crop(image, target_size(image.shape[1], image.shape[0], 256))
    result = extract_poses(reference, dancer, detector, progress=False, align="global")
    assert (result.driving.width, result.driving.height) == (256, 448)
    ref = result.reference.body
    ref_height = ref[[R_ANKLE, L_ANKLE], 1].mean() - ref[NOSE, 1]
    for pose in result.driving.poses:
        height = pose.body[[R_ANKLE, L_ANKLE], 1].mean() - pose.body[NOSE, 1]
        assert abs(height / ref_height - 1) < 0.25  # the dancer is brought to the reference's size
        assert abs(pose.body[NECK, 0] - ref[NECK, 0]) < 0.15  # and place


def test_landmark_mapping():
    landmarks = np.zeros((33, 3))
    landmarks[:, 0] = np.arange(33) / 100
    landmarks[:, 1] = np.arange(33) / 50
    landmarks[:, 2] = 0.9
    landmarks[11, 2] = 0.4  # left shoulder unsure
    pose = blazepose_pose(landmarks)
    for index, source in enumerate(BODY_FROM_BLAZEPOSE):
        if source is not None:
            np.testing.assert_allclose(pose.body[index], [source / 100, source / 50], rtol=1e-6)
    assert not pose.body_visible[L_SHOULDER] and pose.body_score[NECK] == 0 and not pose.body_visible[NECK]
    np.testing.assert_allclose(pose.face[[36, 45, 48, 54]], landmarks[[6, 3, 10, 9], :2], rtol=1e-6)
    assert pose.face_visible.sum() == 6


def test_missing_mediapipe_is_explained(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mediapipe(name, *args, **kwargs):
        if name == "mediapipe":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mediapipe)
    with pytest.raises(UserError, match=r"pip install 'dispose-animate\[pose\]'"):
        load_detector(None)


def test_native_start_up_lines_are_dropped_and_everything_else_kept():
    source, sink = os.pipe()
    result, target = os.pipe()
    pieces = [b"\rMediaPipe:   0%|   | 0/6", b"INFO: ", b"Created TensorFlow Lite XNNPACK delegate for CPU.",
              b"\n",
              b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
              (b"W0000 00:00:1796224012.608105   11675 inference_feedback_manager.cc:114] "
               b"Feedback manager ...\n"),
              b"\rMediaPipe: 100%|###| 6/6\n", b"E0000 00:00:17.5   11 graph.cc:10] a real error\n",
              b"last words"]
    forwarder = threading.Thread(target=_forward_except_noise, args=(source, target))
    forwarder.start()
    for piece in pieces:
        os.write(sink, piece)
    os.close(sink)
    forwarder.join()
    os.close(target)
    with os.fdopen(result, "rb") as shown:
        assert shown.read() == (b"\rMediaPipe:   0%|   | 0/6\rMediaPipe: 100%|###| 6/6\n"
                                b"E0000 00:00:17.5   11 graph.cc:10] a real error\nlast words")
    os.close(source)


def test_dispose_pose_stderr_has_no_mediapipe_start_up_lines(shared_data, tmp_path):
    # Standard error is a pipe here, as in `dispose pose ... 2>&1 | cat`.
    run = subprocess.run([sys.executable, "-m", "dispose.cli", "pose",
                          "--image", str(shared_data / "musepose_ref.png"),
                          "--resolution", "128", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, check=True)
    assert run.stderr == "" and "wrote poses.json" in run.stdout


def test_stream_tracks_like_the_whole_list(detector, shared_data):
    clip = read_video(shared_data / "musepose_dance.mp4", sample_stride=2, max_frames=24)
    frames = [resize_and_crop(frame, (288, 512)) for frame in clip.frames]
    pulled = []

    def source():
        for frame in frames:
            pulled.append(1)
            yield frame

    streamed = []
    for people in detector.detect_stream(source()):  # one graph: frames are read as they are needed
        streamed.append(people)
        assert len(pulled) <= len(streamed) + 1
    whole = detector.detect_people(frames, progress=False)
    assert len(streamed) == len(whole) == 24 and all(len(people) == 1 for people in streamed)
    for got, expected in zip(streamed, whole):
        np.testing.assert_array_equal(got[0].body, expected[0].body)
        np.testing.assert_array_equal(got[0].body_score, expected[0].body_score)
    # A stream of one frame is a still image, as a one-frame list.
    still = detector.detect_stream(iter(frames[5:6]))
    np.testing.assert_array_equal(next(still)[0].body, detector.detect(frames[5:6], progress=False)[0].body)
