"""`dispose animate|models|convert --base musepose` on tiny random MusePose-shaped weights in the release
layout: the same files, sidecar and errors as the MimicMotion base, with and without DisPose."""

from __future__ import annotations

import json
import shutil

import pytest

from dispose.bases.musepose.tiny import build_tiny_musepose_weights
from dispose.cli import main
from dispose.media.video import read_video

FAST = ["--base", "musepose", "--resolution", "128", "--max-frames", "3", "--steps", "2", "--num-frames", "4",
        "--frames-overlap", "1", "--detector", "mediapipe", "--dense", "propagate", "--no-progress"]


pytestmark = pytest.mark.usefixtures("offline_hub")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return build_tiny_musepose_weights(tmp_path_factory.mktemp("musepose-weights"))


def _inputs(shared_data) -> list[str]:
    return ["--ref", str(shared_data / "musepose_ref.png"), "--driving",
            str(shared_data / "musepose_dance.mp4")]


@pytest.mark.parametrize("baseline", [True, False])
def test_animate_with_and_without_dispose(shared_data, weights, tmp_path, baseline):
    out = tmp_path / "out" / "dance.mp4"
    extra = ["--baseline"] if baseline else []
    assert main(["animate", *_inputs(shared_data), "--weights", str(weights), *FAST, *extra, "--out",
                 str(out), "--side-by-side", str(tmp_path / "out" / "sbs.mp4")]) == 0
    clip = read_video(out, sample_stride=1)
    assert clip.frames.shape == (3, 192, 128, 3)
    assert read_video(tmp_path / "out" / "sbs.mp4", sample_stride=1).frames.shape == (3, 192, 384, 3)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["runtime"]["base"] == "musepose" and sidecar["job"]["base"] == "musepose"
    assert sidecar["seed"] == 99  # MusePose's default seed, not MimicMotion's
    assert ("dispose_musepose" in sidecar["weights"]) != baseline


def test_missing_musepose_weights_are_listed_before_loading(shared_data, weights, tmp_path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(weights, partial)
    shutil.rmtree(partial / "MusePose")
    (partial / "DisPose_MusePose.pth").unlink()
    code = main(["animate", *_inputs(shared_data), "--weights", str(partial), *FAST, "--out",
                 str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err
    assert (code == 2 and err.count("error:") == 1 and "MusePose" in err
            and "dispose train --base musepose" in err)
    assert not (tmp_path / "x.mp4").exists()


def test_models_table_gives_the_papers_count(capsys):
    assert main(["models", "--base", "musepose"]) == 0
    out = capsys.readouterr().out
    assert "2,173,325,524" in out and "2072.64" in out and "364,397,184" in out


def test_convert_the_musepose_controlnet(weights, tmp_path, capsys):
    source = tmp_path / "DisPose_MusePose.pth"
    shutil.copy(weights / "DisPose_MusePose.pth", source)
    config = weights / "sd-image-variations-diffusers" / "unet"
    assert main(["convert", "--base", "musepose", "--unet-config", str(config), str(source),
                 "--no-progress"]) == 0
    assert source.with_suffix(".safetensors").is_file()
    assert main(["convert", str(source), "--force", "--no-progress"]) == 2  # not a MimicMotion checkpoint
    assert "check --base" in capsys.readouterr().err
