"""`dispose pose` end to end through the CLI entry point (MediaPipe, real example media)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dispose.cli import main
from dispose.media.image import load_image
from dispose.media.video import read_video
from dispose.pose.keypoints import PoseSequence

pytest.importorskip("mediapipe", reason="MediaPipe is the optional 'pose' extra")


def test_image(shared_data, tmp_path, capsys):
    out = tmp_path / "ref"
    assert main(["pose", "--image", str(shared_data / "musepose_ref.png"), "--resolution", "256",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "detector: MediaPipe" in printed and "18/18 body keypoints visible at 256x448" in printed
    sequence = PoseSequence.from_json(json.loads((out / "poses.json").read_text()))
    assert (sequence.width, sequence.height, len(sequence)) == (256, 448, 1) and sequence[0].has_person
    skeleton, overlay = load_image(out / "skeleton.png"), load_image(out / "overlay.png")
    assert skeleton.shape == overlay.shape == (448, 256, 3) and skeleton.any()


def test_video_aligned_to_a_reference(shared_data, tmp_path, capsys):
    out = tmp_path / "dance"
    assert main(["pose", "--video", str(shared_data / "musepose_dance.mp4"), "--ref",
                 str(shared_data / "moore_anyone-2.png"), "--align", "bones", "--resolution", "256",
                 "--max-frames", "3", "--sample-stride", "4", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "3 frames at 6 fps (stride 4)" in printed and "(bones)" in printed and "0 frame(s)" in printed
    assert sorted(p.name for p in out.iterdir()) == ["overlay.mp4", "poses.json", "reference.json",
                                                     "reference_skeleton.png", "skeleton.mp4"]
    sequence = PoseSequence.from_json(json.loads((out / "poses.json").read_text()))
    assert (sequence.width, sequence.height, sequence.fps, len(sequence)) == (256, 448, 6.0, 3)
    skeleton = read_video(out / "skeleton.mp4", sample_stride=1)
    assert skeleton.frames.shape == (3, 448, 256, 3) and skeleton.source_fps == pytest.approx(6)
    overlay = read_video(out / "overlay.mp4", sample_stride=1).frames
    reference = load_image(shared_data / "moore_anyone-2.png")
    assert overlay.shape == (3, 448, 256, 3) and overlay.mean() > 0.3 * reference.mean()


def test_video_in_its_own_frame(shared_data, tmp_path, capsys):
    out = tmp_path / "own"
    assert main(["pose", "--video", str(shared_data / "musepose_dance.mp4"), "--resolution", "128",
                 "--max-frames", "2", "--out", str(out), "--no-progress"]) == 0
    assert "in the video's own frame, 128x192" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["overlay.mp4", "poses.json", "skeleton.mp4"]


def _fails(argv: list[str], capsys, message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dispose pose: error:") and "\n" not in err and message in err


def test_errors_are_one_line_and_leave_nothing(shared_data, tmp_path, capsys):
    out = tmp_path / "out"
    _fails(["pose", "--image", str(tmp_path / "missing.png"), "--out", str(out)], capsys, "missing.png does not exist")
    Image.fromarray(np.full((300, 200, 3), 90, np.uint8)).save(tmp_path / "empty.png")
    _fails(["pose", "--image", str(tmp_path / "empty.png"), "--out", str(out)], capsys,
           f"no person found in the reference image {tmp_path / 'empty.png'}")
    (tmp_path / "clip.mp4").write_text("not a video")
    _fails(["pose", "--video", str(tmp_path / "clip.mp4"), "--out", str(out)], capsys,
           "could not be opened as a video")
    _fails(["pose", "--video", str(shared_data / "musepose_dance.mp4"), "--align", "none", "--out", str(out)],
           capsys, "--align needs --ref")
    _fails(["pose", "--image", str(shared_data / "musepose_ref.png"), "--ref", str(shared_data / "musepose_ref.png"),
            "--out", str(out)], capsys, "go with --video")
    _fails(["pose", "--image", str(shared_data / "musepose_ref.png"), "--dwpose-dir", str(tmp_path / "dw"),
            "--out", str(out)], capsys, "DWPose folder")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "tiny.png")
    _fails(["pose", "--image", str(tmp_path / "tiny.png"), "--out", str(out)], capsys, "at least 64 pixels")
    assert not out.exists()
