"""The command line's failure modes: one line on standard error, the documented exit code, nothing left
behind."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dispose.commands.pose
from dispose.cli import main
from dispose.media.files import MANIFEST, atomic_folder, atomic_write_text


def _one_line_error(capsys, command: str = "pose") -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"dispose {command}: ") and err.count("\n") == 1 and "Traceback" not in err
    return err.strip()


def _earlier_result(out: Path) -> None:
    with atomic_folder(out) as tmp:
        (tmp / "poses.json").write_text("earlier")


@pytest.mark.parametrize(("moment", "signum", "said"), [("starting", signal.SIGINT, "interrupted"),
                                                        ("detecting", signal.SIGTERM, "terminated")])
def test_ctrl_c_or_kill_leaves_the_earlier_result_and_says_nothing_was_written(shared_data, tmp_path, moment,
                                                                              signum, said):
    out = tmp_path / "out"
    _earlier_result(out)
    run = subprocess.Popen([sys.executable, "-m", "dispose.cli", "pose", "--video",
                            str(shared_data / "musepose_dance.mp4"), "--max-frames", "60", "--resolution",
                            "128", "--no-progress", "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if moment == "starting":  # as soon as the output is locked (imports, detector start-up)
        lock = tmp_path / ".out.lock"
        while not lock.exists() and run.poll() is None:
            time.sleep(0.01)
    else:  # the detector is loaded: decoding and detecting
        assert run.stdout.readline().startswith("detector: MediaPipe")
    assert run.poll() is None, "the run ended before it could be interrupted"
    run.send_signal(signum)
    _, err = run.communicate(timeout=120)
    assert (run.returncode, err) == (128 + signum, f"dispose pose: {said}; nothing was written\n")
    assert (sorted(p.name for p in tmp_path.iterdir()) == ["out"]
            and (out / "poses.json").read_text() == "earlier")


def test_ctrl_c_names_the_outputs_already_finished(tmp_path, monkeypatch, capsys):
    def run(args):
        atomic_write_text(tmp_path / "job1.json", "{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(dispose.commands.pose, "run", run)
    assert main(["pose", "--image", "x.png", "--out", str(tmp_path / "out")]) == 130
    assert _one_line_error(capsys) == (f"dispose pose: interrupted; kept the 1 finished output(s) "
                                       f"({tmp_path / 'job1.json'}), nothing else was written")


@pytest.mark.parametrize(("code", "expected"), [(errno.ENOSPC, "no space left on the disk"),
                                                (errno.EROFS, "the file system is read-only"),
                                                (errno.EACCES, "permission denied")])
def test_os_errors_about_files_are_one_line(tmp_path, monkeypatch, capsys, code, expected):
    def run(args):
        raise OSError(code, os.strerror(code), str(tmp_path / "out.mp4"))

    monkeypatch.setattr(dispose.commands.pose, "run", run)
    assert main(["pose", "--image", "x.png", "--out", str(tmp_path / "out")]) == 2
    assert _one_line_error(capsys).startswith(f"dispose pose: error: {tmp_path / 'out.mp4'}: {expected}")


def test_other_os_errors_keep_their_traceback(monkeypatch):
    def run(args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(dispose.commands.pose, "run", run)
    with pytest.raises(OSError, match="Input/output error"):
        main(["pose", "--image", "x.png", "--out", "out"])


def test_output_folder_on_a_read_only_disk(shared_data, tmp_path, monkeypatch, capsys):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    out = tmp_path / "mnt" / "out"
    assert main(["pose", "--image", str(shared_data / "musepose_ref.png"), "--out", str(out)]) == 2
    assert _one_line_error(capsys) == (f"dispose pose: error: --out {out}: cannot create the folder "
                                       f"{out.parent} (the file system is read-only; write to a folder on a "
                                       "writable disk)")


@pytest.mark.parametrize(("value", "message"), [("100000", "from 64 to 2048"), ("577", "nearest: 576 or 640"),
                                                ("65", "nearest: 64 or 128"), ("32", "from 64 to 2048")])
def test_bad_resolution_is_refused_before_any_work(shared_data, tmp_path, capsys, value, message):
    out = tmp_path / "out"
    assert main(["pose", "--image", str(shared_data / "musepose_ref.png"), "--resolution", value,
                 "--out", str(out)]) == 2
    assert message in _one_line_error(capsys) and list(tmp_path.iterdir()) == []


def test_second_writer_of_the_same_folder_is_refused(shared_data, tmp_path, capsys):
    out = tmp_path / "out"
    with atomic_folder(out):
        assert main(["pose", "--image", str(shared_data / "musepose_ref.png"), "--out", str(out)]) == 2
    assert f"--out {out} is being written by another dispose run" in _one_line_error(capsys)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in out.iterdir()] == [MANIFEST]


def test_video_cut_short_with_strict(shared_data, tmp_path, capsys):
    data = (shared_data / "animatex_ubc_fashion.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert main(["pose", "--video", str(tmp_path / "half.mp4"), "--strict", "--out", str(out)]) == 2
    assert ("half.mp4 is cut short or damaged: its container declares 380 frames but only"
            in _one_line_error(capsys))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half.mp4"]


def test_weight_file_holding_code(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return os.system, ("echo ran",)

    torch.save({"unet.conv.weight": torch.zeros(1), "x": Payload()}, tmp_path / "MimicMotion_1-1.pth")
    assert main(["convert", str(tmp_path / "MimicMotion_1-1.pth"), "--no-progress"]) == 2
    error = _one_line_error(capsys, "convert")
    assert "holds Python objects beside its tensors (posix.system) whose loading would run code" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MimicMotion_1-1.pth"]


@pytest.fixture(scope="module")
def saved_guidance(shared_data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("saved") / "g"
    assert main(["guidance", "--ref", str(shared_data / "musepose_ref.png"), "--driving",
                 str(shared_data / "musepose_dance.mp4"), "--resolution", "128", "--max-frames", "2",
                 "--no-pictures", "--no-progress", "--out", str(folder)]) == 0
    return folder


def test_animate_writes_its_files_as_one_unit_and_resume_checks_the_unit(saved_guidance, tiny_weights,
                                                                         tmp_path, capsys, monkeypatch):
    import dispose.media.video

    out, side = tmp_path / "o" / "x.mp4", tmp_path / "o" / "s.mp4"
    # No --detector / --dense: a saved guidance needs neither a detector nor CMP / DWPose weights.
    argv = ["animate", "--guidance", str(saved_guidance), "--weights", str(tiny_weights), "--steps", "1",
            "--no-progress", "--side-by-side", str(side), "--out", str(out)]
    write_video, calls = dispose.media.video.write_video, []

    def disk_full_at_the_side_by_side(path, frames, fps, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return write_video(path, frames, fps, **kwargs)

    monkeypatch.setattr(dispose.media.video, "write_video", disk_full_at_the_side_by_side)
    assert main(argv) == 2 and "no space left on the disk" in _one_line_error(capsys, "animate")
    assert list(tmp_path.iterdir()) == [], "a video without its side-by-side and sidecar was left"
    monkeypatch.setattr(dispose.media.video, "write_video", write_video)

    assert main(argv) == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert (sidecar["runtime"]["detector"], sidecar["runtime"]["dense"]) == ("saved", "saved")
    assert sidecar["inputs"]["guidance_settings"]["dense"] == "propagate"
    side.unlink()  # as if the side-by-side had never been written
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    assert f"redo {out}: {side} missing" in capsys.readouterr().err and side.is_file()
    kept = {path: path.stat().st_mtime_ns for path in (out, side, out.with_suffix(".json"))}
    assert main([*argv, "--resume"]) == 0
    assert f"skip (finished: {out}, {side}, {out.with_suffix('.json')})" in capsys.readouterr().err
    assert {path: path.stat().st_mtime_ns for path in kept} == kept
    assert main([*argv, "--resume", "--seed", "7"]) == 0  # other settings: made again
    assert "its sidecar describes other settings" in capsys.readouterr().err
    assert json.loads(out.with_suffix(".json").read_text())["seed"] == 7


def test_training_values_take_scientific_notation(tmp_path):
    from dispose.training.config import TrainConfig

    config = TrainConfig.load(None, ["train.learning_rate=1e-3", "train.use_ema=true"])
    assert config.train.learning_rate == pytest.approx(1e-3) and isinstance(config.train.learning_rate, float)
    assert config.train.use_ema is True


def test_help_lists_each_command_with_its_whole_first_sentence(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = " ".join(capsys.readouterr().out.split())
    assert "guidance Compute DisPose's guidance of a reference image and a driving video, save it for " \
           "`dispose animate --guidance`, with pictures. models" in listing
    assert "(built empty: no weights needed, no memory). pose" in listing


def test_bad_options_of_a_subcommand_are_one_line_with_a_pointer_to_help(capsys):
    assert main(["eval", "--pred", "a.mp4", "--gt", "b.mp4", "--out", "r.json", "--size", "abc", "64"]) == 2
    assert _one_line_error(capsys, "eval") == ("dispose eval: error: argument --size: abc is not allowed: "
                                               "expected a whole number from 16 to 8192 (see 'dispose "
                                               "eval --help')")
