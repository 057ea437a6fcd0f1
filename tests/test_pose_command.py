"""`dispose pose` end to end through the CLI entry point (MediaPipe, real example media)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dispose.cli import main
from dispose.media.files import MANIFEST
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
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "overlay.mp4", "poses.json", "reference.json",
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
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "overlay.mp4", "poses.json", "skeleton.mp4"]


def _fails(argv: list[str], capsys, message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dispose pose: error:") and "\n" not in err and message in err


def test_errors_are_one_line_and_leave_nothing(shared_data, tmp_path, capsys):
    out = tmp_path / "out"
    _fails(["pose", "--image", str(tmp_path / "missing.png"), "--out", str(out)], capsys,
           "missing.png does not exist")
    Image.fromarray(np.full((300, 200, 3), 90, np.uint8)).save(tmp_path / "empty.png")
    _fails(["pose", "--image", str(tmp_path / "empty.png"), "--out", str(out)], capsys,
           f"no person found in the reference image {tmp_path / 'empty.png'}")
    (tmp_path / "clip.mp4").write_text("not a video")
    _fails(["pose", "--video", str(tmp_path / "clip.mp4"), "--out", str(out)], capsys,
           "could not be opened as a video")
    _fails(["pose", "--video", str(shared_data / "musepose_dance.mp4"), "--align", "none", "--out", str(out)],
           capsys, "--align needs --ref")
    _fails(["pose", "--image", str(shared_data / "musepose_ref.png"), "--ref",
            str(shared_data / "musepose_ref.png"), "--out", str(out)], capsys, "go with --video")
    _fails(["pose", "--image", str(shared_data / "musepose_ref.png"), "--dwpose-dir", str(tmp_path / "dw"),
            "--out", str(out)], capsys, "DWPose folder")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "tiny.png")
    _fails(["pose", "--image", str(tmp_path / "tiny.png"), "--out", str(out)], capsys, "at least 64 pixels")
    assert not out.exists()


def _openpose_folder(folder, count: int, canvas: bool = True) -> None:
    """``count`` frames of a standing person (pixels of a 576x1024 canvas) stepping to the right."""
    folder.mkdir()
    body = np.array([[288, 200], [288, 260], [238, 262], [200, 360], [190, 450], [338, 262], [376, 360],
                     [386, 450], [258, 480], [255, 640], [252, 790], [318, 480], [321, 640], [324, 790],
                     [275, 188], [301, 188], [262, 195], [314, 195]], np.float64)
    for n in range(count):
        frame = {"people": [{"pose_keypoints_2d": [v for x, y in body for v in (x + 10 * n, y, 0.9)]}]}
        if canvas:
            frame |= {"canvas_width": 576, "canvas_height": 1024}
        (folder / f"frame_{n}_keypoints.json").write_text(json.dumps(frame))


def test_poses_from_openpose_files(shared_data, tmp_path, capsys):
    _openpose_folder(tmp_path / "openpose", 3)
    out = tmp_path / "own"
    assert main(["pose", "--poses", str(tmp_path / "openpose"), "--resolution", "128", "--out", str(out),
                 "--no-progress"]) == 0  # no detector at all
    printed = capsys.readouterr().out
    assert "gives no frame rate: 24 fps assumed" in printed and "3 frames at 24 fps (stride 1)" in printed
    assert "detector" not in printed
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "poses.json", "skeleton.mp4"]
    sequence = PoseSequence.from_json(json.loads((out / "poses.json").read_text()))
    assert (sequence.width, sequence.height, len(sequence)) == (128, 192, 3)
    assert sequence[2].body[0, 0] - sequence[0].body[0, 0] == pytest.approx(20 / 576)  # 20 px of the canvas

    aligned = tmp_path / "aligned"  # on a reference (the only image MediaPipe looks at) and a video's frames
    assert main(["pose", "--poses", str(tmp_path / "openpose"), "--video",
                 str(shared_data / "musepose_dance.mp4"), "--max-frames", "2", "--ref",
                 str(shared_data / "moore_anyone-2.png"), "--resolution", "128",
                 "--out", str(aligned), "--no-progress"]) == 0
    assert "2 frames at 12 fps (stride 2), aligned to" in capsys.readouterr().out
    assert sorted(p.name for p in aligned.iterdir()) == [MANIFEST, "overlay.mp4", "poses.json",
                                                         "reference.json", "reference_skeleton.png",
                                                         "skeleton.mp4"]


def test_wrong_pose_files_are_one_line_and_leave_nothing(shared_data, tmp_path, capsys):
    _openpose_folder(tmp_path / "no_canvas", 3, canvas=False)
    _openpose_folder(tmp_path / "openpose", 3)
    out = tmp_path / "out"
    _fails(["pose", "--poses", str(tmp_path / "no_canvas"), "--out", str(out)], capsys,
           "gives pixel coordinates but not the frame size (canvas_width, canvas_height); give the driving "
           "video")
    _fails(["pose", "--poses", str(tmp_path / "openpose"), "--video",
            str(shared_data / "animatex_ubc_fashion.mp4"), "--max-frames", "2", "--out", str(out)], capsys,
           "holds poses of 576x1024 frames but the video's frames are 720x940")
    _fails(["pose", "--poses", str(tmp_path / "openpose"), "--video", str(shared_data / "musepose_dance.mp4"),
            "--max-frames", "3", "--out", str(out)], capsys, "gives 2 poses for the 3 frames used of")
    (tmp_path / "notes.json").write_text(json.dumps({"frames": []}))
    _fails(["pose", "--poses", str(tmp_path / "notes.json"), "--out", str(out)], capsys,
           "neither a dispose-poses/1 file nor OpenPose JSON")
    _fails(["pose", "--poses", str(tmp_path / "missing.json"), "--out", str(out)], capsys, "does not exist")
    _fails(["pose", "--image", str(shared_data / "musepose_ref.png"), "--poses", str(tmp_path / "openpose"),
            "--out", str(out)], capsys, "give one of --image, --video or --poses")
    assert not out.exists() and not list(tmp_path.glob(".out*"))
