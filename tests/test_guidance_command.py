"""``dispose guidance`` end to end on the shared dancer video (MediaPipe poses, no weights), and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file

from dispose.cli import main
from dispose.guidance.sparse_field import sparse_motion_field
from dispose.guidance.stage import Guidance
from dispose.guidance.trajectories import body_trajectories
from dispose.media.video import read_video
from dispose.pose.keypoints import PoseSequence

pytest.importorskip("mediapipe")


def _guidance(shared_data, out, *extra) -> int:
    return main(["guidance", "--ref", str(shared_data / "musepose_ref.png"),
                 "--driving", str(shared_data / "musepose_dance.mp4"), "--resolution", "256",
                 "--no-progress", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def guidance_run(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("guidance") / "g"
    return _guidance(shared_data, out, "--max-frames", "4", "--frame-pictures", "--picture-width", "0"), out


def test_writes_guidance_folder_and_pictures(guidance_run) -> None:
    code, out = guidance_run
    assert code == 0
    width, height, frames = 256, 448, 4
    info = json.loads((out / "guidance.json").read_text())
    assert info["format"] == "dispose-guidance/2" and (info["width"], info["height"], info["frames"]) == (
        width, height, frames)
    assert info["settings"]["dense"] == "propagate" and len(info["inputs"]["reference"]["sha256"]) == 64
    tensors = load_file(out / "fields.safetensors")
    assert set(tensors) == {"dense_flow"}  # no SD1.5 given: no point embeddings
    assert (tensors["dense_flow"].shape == (frames, 2, height, width)
            and tensors["dense_flow"].dtype == np.float16)
    assert np.abs(tensors["dense_flow"]).max() > 1.0
    # F_d in fp16
    assert (out / "fields.safetensors").stat().st_size / frames <= 2 * width * height * 2 + 4096

    # F_s is not stored: it is what the stored poses give
    driving = PoseSequence.from_json(json.loads((out / "poses.json").read_text()))
    reference = PoseSequence.from_json(json.loads((out / "reference.json").read_text()))[0]
    assert len(driving) == frames and (driving.width, driving.height) == (width, height)
    guidance = Guidance.load(out)
    traj = body_trajectories(reference, driving, width, height)
    np.testing.assert_allclose(guidance.sparse_flow().numpy(), sparse_motion_field(traj), atol=1e-6)
    assert guidance.num_frames == frames + 1 and guidance.reference.shape == (height, width, 3)

    pictures = sorted((out / "frames").glob("*.png"))
    assert [p.name for p in pictures] == [f"{n:04d}.png" for n in range(frames)]
    assert np.asarray(Image.open(pictures[0])).shape == (height, 3 * width, 3)
    assert read_video(out / "guidance.mp4", sample_stride=1).frames.shape == (frames, height, 3 * width, 3)


def test_rerun_replaces_the_folder_whole(shared_data, tmp_path) -> None:
    out = tmp_path / "g"
    assert _guidance(shared_data, out, "--max-frames", "3", "--frame-pictures") == 0
    assert len(list((out / "frames").glob("*.png"))) == 3
    assert _guidance(shared_data, out, "--max-frames", "2", "--no-pictures") == 0
    assert not (out / "frames").exists() and not (out / "guidance.mp4").exists()  # nothing stale is left
    assert len(Guidance.load(out).driving) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]  # no temporary sibling or lock left


def test_loaded_guidance_refuses_other_inputs_and_edits(guidance_run, shared_data, tmp_path) -> None:
    from dispose.errors import UserError
    from dispose.guidance.stage import input_fingerprint

    _, out = guidance_run
    guidance = Guidance.load(out)
    guidance.check_matches("g", inputs={"reference": input_fingerprint(shared_data / "musepose_ref.png")},
                           settings={"resolution": 256})
    with pytest.raises(UserError, match="another reference .*resolution 256, not 576"):
        guidance.check_matches("g",
                               inputs={"reference": input_fingerprint(shared_data / "moore_anyone-1.png")},
                               settings={"resolution": 576})
    edited = tmp_path / "edited"
    import shutil

    shutil.copytree(out, edited)
    info = json.loads((edited / "guidance.json").read_text())
    info["settings"]["sample_stride"] = 1
    (edited / "guidance.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match="changed after it was written"):
        Guidance.load(edited)


def test_dense_field_in_float16_is_within_its_bound(guidance_run) -> None:
    from dispose.guidance.stage import dense_field

    _, out = guidance_run
    guidance = Guidance.load(out)
    exact = torch.from_numpy(np.asarray(dense_field(guidance, "propagate", device=torch.device("cpu"),
                                                    dtype=torch.float32)))
    stored = torch.from_numpy(np.asarray(guidance.dense_flow, np.float32))
    assert (stored - exact).abs().le(exact.abs() * 2.0**-11 + 1e-6).all()


@pytest.mark.parametrize("extra,message", [
    (["--dense", "cmp"], "--dense cmp needs --cmp-checkpoint"),
    (["--resolution", "32"], "argument --resolution: 32 is not allowed: expected a multiple of 64 from 64"),
    (["--resolution", "577"], "argument --resolution: 577 is not allowed: expected a multiple of 64 from"),
])
def test_bad_options(shared_data, tmp_path, capsys, extra, message) -> None:
    code = main(["guidance", "--ref", str(shared_data / "musepose_ref.png"), "--driving",
                 str(shared_data / "musepose_dance.mp4"), "--no-progress", "--out", str(tmp_path / "out"),
                 *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


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
