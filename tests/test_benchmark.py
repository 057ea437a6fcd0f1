"""`dispose benchmark speed|train|quality`: end to end on the tiny random models (tables, JSON, PNG), and the
full-size networks' parameter counts (built on the meta device) that Table 7's column is made of."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from launch import torchrun
from PIL import Image

from dispose.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _outputs(folder, name):
    report = json.loads((folder / f"{name}.json").read_text())
    text = (folder / f"{name}.txt").read_text()
    with Image.open(folder / f"{name}.png") as chart:
        assert chart.format == "PNG" and chart.width >= 400 and chart.height >= 100
        assert len(np.unique(np.asarray(chart.convert("RGB")).reshape(-1, 3), axis=0)) > 3  # bars drawn
    return report, text


def test_full_size_parameter_counts_on_meta():
    from dispose.benchmark.networks import random_pipeline, trainable_counts

    mimic = trainable_counts(random_pipeline("mimicmotion", True, torch.float16, "meta"))
    assert mimic["dispose"] == 685_139_601  # DisPose.pth; the paper's 653.40 "MB" = count / 2^20
    assert round(mimic["base"] / 2**20, 2) == 1454.19  # MimicMotion's UNet + PoseNet, Table 7
    muse = random_pipeline("musepose", True, torch.float16, "meta")
    assert round(trainable_counts(muse)["base"] / 2**20, 2) == 2072.64  # MusePose, Table 7
    assert muse.denoising_unet.device.type == "meta" and muse.controlnet.dtype == torch.float16


def test_speed_tiny(tmp_path, shared_data, capsys):
    out = tmp_path / "speed"
    code = main(
        [
            "benchmark",
            "speed",
            "--tiny",
            "--ref",
            str(shared_data / "musepose_ref.png"),
            "--driving",
            str(shared_data / "musepose_dance.mp4"),
            "--frames",
            "2",
            "--resolution",
            "128",
            "--steps",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report, text = _outputs(out, "speed")
    assert "Table 7 layout" in text and "MimicMotion+Ours" in text and "1.610" in text  # paper beside ours
    assert text in capsys.readouterr().out
    summary = report["summary"]
    for variant in ("base", "dispose"):
        assert summary[variant]["frames"] == 2 and summary[variant]["s_per_frame"] > 0
        assert summary[variant]["per_step"]["unet"] > 0
    assert summary["dispose"]["per_step"]["controlnet"] > 0
    assert summary["base"]["per_step"]["controlnet"] is None
    paired = summary["dispose"]["controlnet_unet_ratio"]
    assert paired["steps"] == 1 and paired["median_per_step"] > 0  # one step, one timed run
    assert summary["dispose"]["stages"]["dift"] > 0 and summary["base"]["stages"]["dift"] is None
    assert report["trainable_parameters"]["dispose"] > 0 and report["denoiser"] == "unet"
    assert report["environment"]["torch"] == torch.__version__
    assert report["settings"]["job"]["num_inference_steps"] == 1 and report["settings"]["runtime"]["cfg_mode"]


def test_train_tiny(tmp_path):
    out = tmp_path / "train"
    assert (
        main(
            [
                "benchmark",
                "train",
                "--tiny",
                "--steps",
                "1",
                "--warmup",
                "1",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report, text = _outputs(out, "train")
    assert "predicted (bench/train_memory.py)" in text and "samples/s" in text
    assert report["step_seconds"]["median"] > 0 and report["samples_per_second"] > 0
    predicted = report["predicted_memory"]
    assert predicted["total"] == sum(v for k, v in predicted.items() if k != "total") > 0
    assert report["settings"]["config"]["train"]["gradient_checkpointing"] is True
    assert all(math.isfinite(loss) for loss in report["losses"])


def _mini_tiktok(root, shared_data):
    """Two sequences in the TikTok layout (NNNNN/images/0001.png ...) from the example clips."""
    from dispose.evaluation.videos import read_frames

    for name, clip in (("00335", "musepose_dance.mp4"), ("00336", "animatex_ubc_fashion.mp4")):
        folder = root / name / "images"
        folder.mkdir(parents=True)
        for index, frame in enumerate(
            read_frames(shared_data / clip, size=(144, 256), stride=4, max_frames=3)
        ):
            Image.fromarray(frame).save(folder / f"{index + 1:04d}.png")


def test_quality_tiny_sharded_then_resumed(tmp_path, shared_data, capsys):
    """Two CPU processes (torchrun, gloo) share the animations; a rerun in one process reuses every video."""
    data, out = tmp_path / "tiktok", tmp_path / "quality"
    _mini_tiktok(data, shared_data)
    args = ["benchmark", "quality", "--tiny", "--data", str(data), "--sequences", "00335", "00336",
            "--resolution", "128", "--steps", "1", "--no-progress", "--out", str(out)]
    done = torchrun(2, "-m", "dispose.cli", *args, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "process 1/2: wrote" in done.stderr and "process 2/2: wrote" in done.stderr  # world size 2
    report, text = _outputs(out, "quality")
    assert report["processes"] == 2
    assert "Table 1 layout" in text and "Table 6 layout" in text and "MimicMotion+Ours (paper)" in text
    for variant in ("base", "dispose"):
        aggregate = report["evaluation"][variant]["aggregate"]
        assert -1 <= aggregate["ssim"] <= 1 and aggregate["psnr"] > 0
        for name in ("00335", "00336"):
            assert (out / "videos" / variant / f"{name}.mp4").is_file()
            assert (out / "side_by_side" / variant / f"{name}.mp4").is_file()
    video = out / "videos" / "dispose" / "00335.mp4"
    before = video.stat().st_mtime_ns
    assert main(args) == 0  # resumed: every video is reused, only the evaluation runs again
    assert video.stat().st_mtime_ns == before and capsys.readouterr().err.count("reuse (exists)") == 4
    assert main([*args[:-2], "--steps", "2", "--out", str(out)]) == 2  # other settings: refused, not reused
    assert "was made with other settings (num_inference_steps)" in capsys.readouterr().err
    assert video.stat().st_mtime_ns == before


def test_bad_out_is_one_line(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("mine")
    assert main(["benchmark", "train", "--tiny", "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--out" in err and target.read_text() == "mine"


@pytest.mark.parametrize("argv", ["speed --frames 0", "speed --controlnet-interval 0",
                                  "speed --resolution 100", "train --size 64 65",
                                  "quality --data x --folder-fps nan"])
def test_bad_numbers_are_refused_by_the_shared_rules(argv, tmp_path, capsys):
    """Every number goes through dispose.validation's rules: one line naming the option, before any work."""
    option = [word for word in argv.split() if word.startswith("--")][-1]
    assert main(["benchmark", *argv.split(), "--tiny", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {option}: " in err, err
    assert not (tmp_path / "out").exists()
