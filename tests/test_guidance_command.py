"""``dispose guidance`` end to end on the shared dancer video (MediaPipe poses, no weights), and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file

from dispose.cli import main
from dispose.guidance.sparse_field import sparse_motion_field
from dispose.guidance.trajectories import body_trajectories
from dispose.pose.keypoints import PoseSequence

pytest.importorskip("mediapipe")


@pytest.fixture(scope="module")
def guidance_run(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("guidance")
    code = main(["guidance", "--ref", str(shared_data / "musepose_ref.png"),
                 "--driving", str(shared_data / "musepose_dance.mp4"), "--resolution", "256",
                 "--max-frames", "4", "--no-progress", "--out", str(out)])
    return code, out


def test_writes_fields_poses_and_pictures(guidance_run, capsys) -> None:
    code, out = guidance_run
    assert code == 0
    width, height, frames = 256, 448, 4
    with safe_open(out / "motion_fields.safetensors", "np") as f:
        meta = f.metadata()
    tensors = load_file(out / "motion_fields.safetensors")
    assert meta["format"] == "dispose-motion-fields/1" and meta["dense_method"] == "propagate"
    assert (meta["width"], meta["height"], meta["frames"]) == ("256", "448", "4")
    assert set(json.loads(meta["tensors"])) == set(tensors)
    assert tensors["sparse_flow"].shape == tensors["dense_flow"].shape == (frames, 2, height, width)
    assert tensors["reference_flow"].shape == tensors["reference_mask"].shape == (frames, 2, 384, 384)
    assert tensors["trajectories"].shape == (frames + 1, 18, 2) and tensors["visibility"].dtype == bool
    assert tensors["foreground"].shape == (height, width)
    assert np.abs(tensors["dense_flow"]).max() > 1.0 and np.abs(tensors["sparse_flow"]).max() > 0

    # the stored F_s is what the stored poses give
    driving = PoseSequence.from_json(json.loads((out / "poses.json").read_text()))
    reference = PoseSequence.from_json(json.loads((out / "reference.json").read_text()))[0]
    assert len(driving) == frames and (driving.width, driving.height) == (width, height)
    traj = body_trajectories(reference, driving, width, height)
    np.testing.assert_allclose(traj.points, tensors["trajectories"], atol=1e-4)
    np.testing.assert_array_equal(sparse_motion_field(traj), tensors["sparse_flow"])

    pictures = sorted((out / "frames").glob("*.png"))
    assert [p.name for p in pictures] == [f"{n:04d}.png" for n in range(frames)]
    assert np.asarray(Image.open(pictures[0])).shape == (height, 3 * width, 3)
    assert (out / "guidance.mp4").stat().st_size > 0


@pytest.mark.parametrize("extra,message", [
    (["--max-frames", "1"], "gave 1 frame after sampling"),
    (["--dense", "cmp"], "--dense cmp needs --cmp-checkpoint"),
    (["--resolution", "32"], "--resolution 32 is too small"),
])
def test_bad_options(shared_data, tmp_path, capsys, extra, message) -> None:
    code = main(["guidance", "--ref", str(shared_data / "musepose_ref.png"), "--driving",
                 str(shared_data / "musepose_dance.mp4"), "--no-progress", "--out", str(tmp_path / "out"), *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "motion_fields.safetensors").exists()


def test_bad_files(shared_data, tmp_path, capsys) -> None:
    video = str(shared_data / "musepose_dance.mp4")
    broken = tmp_path / "ckpt.pth.tar"
    broken.write_bytes(b"not a checkpoint")
    assert main(["guidance", "--ref", str(shared_data / "musepose_ref.png"), "--driving", video,
                 "--cmp-checkpoint", str(broken), "--out", str(tmp_path / "a")]) == 2
    assert "could not be read as a PyTorch file" in capsys.readouterr().err
    assert main(["guidance", "--ref", str(tmp_path / "missing.png"), "--driving", video,
                 "--out", str(tmp_path / "b")]) == 2
    assert f"--ref {tmp_path / 'missing.png'} does not exist" in capsys.readouterr().err

    empty = tmp_path / "empty.png"
    Image.fromarray(np.full((320, 180, 3), 90, np.uint8)).save(empty)  # a reference without a person
    assert main(["guidance", "--ref", str(empty), "--driving", video, "--max-frames", "2", "--no-progress",
                 "--out", str(tmp_path / "c")]) == 2
    assert f"no person found in the reference image {empty}" in capsys.readouterr().err
