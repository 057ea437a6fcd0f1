"""``dispose animate`` end to end on the shared dancer video with tiny random weights in the release layout.

Random weights make noise: these tests check the plumbing (poses -> guidance -> sampling -> video +
sidecar), the error paths and the job controls, not the pictures.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from dispose.cli import main
from dispose.media.video import read_video

#: Small enough for CPU, large enough for MediaPipe to find the dancer: 128 x 192 portrait frames.
FAST = ["--resolution", "128", "--max-frames", "4", "--steps", "2", "--detector", "mediapipe",
        "--dense", "propagate", "--no-progress"]


pytestmark = pytest.mark.usefixtures("offline_hub")


@pytest.fixture(scope="module")
def weights(tiny_weights) -> Path:
    return tiny_weights


def _inputs(shared_data: Path) -> list[str]:
    return ["--ref", str(shared_data / "musepose_ref.png"), "--driving",
            str(shared_data / "musepose_dance.mp4")]


def test_animate_writes_video_side_by_side_and_sidecar(shared_data, weights, tmp_path, capsys):
    out, sbs = tmp_path / "new" / "dance.mp4", tmp_path / "new" / "sbs.mp4"  # the folder is created
    code = main(["animate", *_inputs(shared_data), "--weights", str(weights), *FAST, "--out", str(out),
                 "--side-by-side", str(sbs), "--num-frames", "4", "--frames-overlap", "2"])
    assert code == 0, capsys.readouterr().err
    video = read_video(out, sample_stride=1)
    assert video.frames.shape == (4, 192, 128, 3) and video.fps == pytest.approx(15)
    assert read_video(sbs, sample_stride=1).frames.shape == (4, 192, 3 * 128, 3)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["seed"] == 42 and sidecar["job"]["num_inference_steps"] == 2
    assert sidecar["runtime"]["dense"] == "propagate" and sidecar["result"]["frames"] == 4
    assert sidecar["result"]["tiles"] == 2  # 5 frames with the reference, tiles of 4 overlapping by 2
    assert {"svd", "mimicmotion", "dispose", "sd15"} <= set(sidecar["weights"])
    assert all(entry["fingerprint"] for entry in sidecar["weights"].values())
    assert {"poses", "dift", "motion_fields", "sampling", "decoding"} <= set(sidecar["timings"])
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["dance.json", "dance.mp4", "sbs.mp4"]
    assert sidecar["inputs"]["guidance_settings"]["source_frame_count"] == 288


def test_resume_redoes_a_video_without_its_sidecar(shared_data, weights, tmp_path, capsys):
    out = tmp_path / "done.mp4"
    out.write_bytes(b"an earlier result")  # its sidecar was never written: not a finished unit
    code = main(["animate", *_inputs(shared_data), "--weights", str(weights), *FAST, "--out", str(out),
                 "--resume"])
    assert code == 0 and out.read_bytes() != b"an earlier result" and out.with_suffix(".json").is_file()
    assert f"redo {out}: {out.with_suffix('.json')} missing" in capsys.readouterr().err


def test_missing_weights_listed_once_before_loading(shared_data, weights, tmp_path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(weights / "stable-video-diffusion-img2vid-xt-1-1",
                    partial / "stable-video-diffusion-img2vid-xt-1-1")
    code = main(["animate", *_inputs(shared_data), "--weights", str(partial), "--dense", "cmp",
                 "--out", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1
    for name in ("MimicMotion", "DisPose", "Stable Diffusion 1.5", "DWPose", "CMP"):
        assert name in err
    assert "huggingface.co/lihxxx/DisPose" in err and "--dense propagate" in err
    assert not (tmp_path / "x.mp4").exists()


def test_corrupt_checkpoint_is_one_clear_error(shared_data, weights, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(weights, broken)
    (broken / "DisPose.pth").write_bytes(b"not a checkpoint at all")
    code = main(["animate", *_inputs(shared_data), "--weights", str(broken), *FAST,
                 "--out", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "DisPose.pth" in err and "download it again" in err
    assert not (tmp_path / "x.mp4").exists()


def test_unwritable_output_fails_before_work(shared_data, weights, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    if _can_write(folder):  # root writes anyway: show the folder as an ordinary user would see it
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
            (not mode & os.W_OK and access(path, mode, **kw)) if Path(path) == folder
            else access(path, mode, **kw)))
    code = main(["animate", *_inputs(shared_data), "--weights", str(weights), *FAST,
                 "--out", str(folder / "x.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and str(folder) in err
    assert not (folder / "x.mp4").exists()


def _can_write(folder: Path) -> bool:
    try:
        (folder / "probe").write_bytes(b"")
    except PermissionError:
        return False
    (folder / "probe").unlink()
    return True


@pytest.mark.parametrize("bad", ["reference_without_person", "driving_not_a_video"])
def test_bad_inputs_are_reported_before_the_base_model_loads(shared_data, weights, tmp_path, capsys,
                                                            monkeypatch, bad):
    import numpy as np
    from PIL import Image

    from dispose.bases.mimicmotion import weights as loading

    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **k: pytest.fail("the base model was loaded"))
    inputs = _inputs(shared_data)
    if bad == "reference_without_person":
        empty = tmp_path / "empty.png"
        Image.fromarray(np.full((320, 180, 3), 90, np.uint8)).save(empty)
        inputs[1], expected = str(empty), f"no person found in the reference image {empty}"
    else:
        fake = tmp_path / "clip.mp4"
        fake.write_bytes(b"not a video at all")
        inputs[3], expected = str(fake), f"video {fake} could not be opened as a video"
    code = main(["animate", *inputs, "--weights", str(weights), *FAST, "--out", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize(("option", "expected"), [
    (["--controlnet-interval", "0"], "argument --controlnet-interval: 0 is not allowed"),
    (["--guidance-cache-mb", "-1"], "argument --guidance-cache-mb: -1 is not allowed")])
def test_bad_speed_options_name_themselves_before_loading(shared_data, weights, tmp_path, capsys, monkeypatch,
                                                          option, expected):
    from dispose.bases.mimicmotion import weights as loading

    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **k: pytest.fail("the base model was loaded"))
    code = main(["animate", *_inputs(shared_data), "--weights", str(weights), *FAST, *option,
                 "--out", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1
    assert not (tmp_path / "x.mp4").exists()
