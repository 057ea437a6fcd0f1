"""Bad input through the command line, one row per situation: exit 2, one line naming the input, no input
changed, nothing written (no file, partial or empty folder, anywhere).

Each :class:`Case` runs ``dispose`` in-process in a fresh folder that holds ``in/r.png`` (a reference),
``in/d.mp4`` (a short driving clip), optionally ``in/G`` (a guidance folder written by ``dispose guidance``)
and ``in/P`` (a ``dispose pose`` result), plus whatever its ``files`` and ``setup`` add.  The command line is
formatted with ``{w}`` (tiny weights, shared by the session) and ``{fast}`` (animate's small settings); paths
are relative to the case's folder, which is the working directory.  To add a situation, append a Case to
:data:`CASES`: most fail before any model loads, which keeps the table fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dispose.cli import main

#: animate's settings for tiny weights (the case adds --weights {w}).
FAST = "--detector mediapipe --dense propagate --no-progress --resolution 128 --steps 1 --max-frames 2"
ANIMATE = "animate --ref in/r.png --driving in/d.mp4 --weights {w} {fast}"
GUIDED = "animate --guidance in/G --weights {w} --no-progress --steps 1"
EVAL = "eval --pred in/d.mp4 --gt in/gt.mp4 --metrics l1 --no-progress"


@dataclass
class Case:
    """One bad situation: ``argv`` (after ``dispose``), substrings the error line must hold (the input it
    names), files to create (``files``: name -> text or bytes), what to copy in (``needs``: "G", "P") and a
    ``setup`` run last (to damage a copied folder, make links...)."""

    name: str
    argv: str
    expect: tuple[str, ...]
    files: dict[str, str | bytes] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    setup: Callable[[Path], None] | None = None
    leaves: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name


def _poses(frames, width=100, height=100) -> str:
    return json.dumps(
        {"format": "dispose-poses/1", "width": width, "height": height, "fps": 10, "frames": frames}
    )


def _openpose(people, **extra) -> str:
    return json.dumps({"people": people, "canvas_width": 100, "canvas_height": 100, **extra})


_BODY = [50.0, 50.0, 1.0] * 18


def _job(settings: str) -> str:
    return f"jobs:\n  - {{ref: r.png, driving: d.mp4, {settings}}}\n"


def _cut(path: str, keep: int | None = None) -> Callable[[Path], None]:
    def cut(folder: Path) -> None:
        target = folder / path
        data = target.read_bytes()
        target.write_bytes(data[: len(data) - 100] if keep is None else data[:keep])

    return cut


def _nan_fields(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "in/G/fields.safetensors"
    tensors = load_file(path)
    tensors["dense_flow"][0, 0, 0, 0] = float("nan")  # same size: the fingerprint check alone passes
    save_file(tensors, path)


def _edit_json(path: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        data = json.loads((folder / path).read_text())
        edit(data)
        (folder / path).write_text(json.dumps(data))

    return apply


def _symlink(link: str, target: str) -> Callable[[Path], None]:
    return lambda folder: (folder / link).symlink_to(target)


def _hardlink(link: str, target: str) -> Callable[[Path], None]:
    return lambda folder: os.link(folder / target, folder / link)


def _checkpoint(folder: Path) -> None:
    import torch

    torch.save({"weight": torch.zeros(2)}, folder / "in/x.pth")


CASES = [
    # --- the command line itself (argparse): one line and a pointer to --help, no usage block
    Case("no-command", "", ("required: COMMAND", "--help")),
    Case("unknown-command", "animat", ("invalid choice: 'animat'",)),
    Case("unknown-option", f"{ANIMATE} --out out/x.mp4 --colour red", ("unrecognized arguments: --colour",)),
    Case("steps-0", f"{ANIMATE} --steps 0 --out out/x.mp4", ("--steps: 0 is not allowed",)),
    Case("guidance-scale-nan", f"{ANIMATE} --guidance-scale nan --out out/x.mp4", ("--guidance-scale: nan",)),
    Case("guidance-scale-inf", f"{ANIMATE} --guidance-scale inf --out out/x.mp4", ("--guidance-scale: inf",)),
    Case(
        "noise-aug-negative",
        f"{ANIMATE} --noise-aug-strength -1 --out out/x.mp4",
        ("--noise-aug-strength: -1",),
    ),
    Case("resolution-word", f"{ANIMATE} --resolution high --out out/x.mp4", ("--resolution: high",)),
    Case(
        "resolution-65", f"{ANIMATE} --resolution 65 --out out/x.mp4", ("--resolution", "nearest: 64 or 128")
    ),
    Case("seed-word", f"{ANIMATE} --seed forty-two --out out/x.mp4", ("--seed: forty-two",)),
    Case("seed-negative", f"{ANIMATE} --seed -1 --out out/x.mp4", ("--seed: -1",)),
    Case("base-bogus", f"{ANIMATE} --base bogus --out out/x.mp4", ("--base", "'bogus'")),
    Case("fps-float", f"{ANIMATE} --fps 2.5 --out out/x.mp4", ("--fps: 2.5",)),
    Case("eval-size-word", f"{EVAL} --size abc 64 --out out/r.json", ("--size: abc",)),
    Case("eval-size-small", f"{EVAL} --size 8 8 --out out/r.json", ("--size: 8",)),
    Case("eval-clip-frames", f"{EVAL} --clip-frames 4 --out out/r.json", ("--clip-frames: 4",)),
    Case("pose-max-frames-0", "pose --video in/d.mp4 --max-frames 0 --out out", ("--max-frames: 0",)),
    Case(
        "guidance-stride-0",
        "guidance --ref in/r.png --driving in/d.mp4 --sample-stride 0 --out out",
        ("--sample-stride: 0",),
    ),
    Case(
        "guidance-seed-word", "guidance --ref in/r.png --driving in/d.mp4 --seed x --out out", ("--seed: x",)
    ),
    # --- dispose train: --set and the YAML file typed by the config's annotations
    Case(
        "train-set-batch-word",
        "train --set train.batch_size=abc --out out",
        ("--set train.batch_size", "'abc'"),
    ),
    Case(
        "train-set-use-ema",
        "train --set train.use_ema=maybe --out out",
        ("--set train.use_ema", "true or false"),
    ),
    Case("train-set-no-equals", "train --set train.batch_size --out out", ("--set 'train.batch_size'",)),
    Case("train-set-unknown", "train --set train.colour=red --out out", ("unknown key", "colour")),
    Case("train-learning-rate", "train --set train.learning_rate=-1 --out out", ("train.learning_rate",)),
    Case(
        "train-yaml-syntax",
        "train --config in/t.yaml --out out",
        ("in/t.yaml", "line 3"),
        files={"in/t.yaml": "train:\n  batch_size: [1,\n"},
    ),
    Case(
        "train-yaml-type",
        "train --config in/t.yaml --out out",
        ("in/t.yaml: train: max_steps", "'many'"),
        files={"in/t.yaml": "train:\n  max_steps: many\n"},
    ),
    # --- job files: every value typed where it enters, named by file, job and key
    Case(
        "job-baseline-no",
        "animate --config in/j.yaml --weights {w} {fast} --out out",
        ("in/j.yaml: job 1: baseline", "'no'", "true or false"),
        files={"in/j.yaml": _job('baseline: "no"')},
    ),
    Case(
        "job-seed-word",
        "animate --config in/j.yaml --weights {w} {fast} --out out",
        ("in/j.yaml: job 1: seed", "'forty-two'"),
        files={"in/j.yaml": _job('seed: "forty-two"')},
    ),
    Case(
        "job-resolution-word",
        "animate --config in/j.yaml --weights {w} {fast} --out out",
        ("in/j.yaml: job 1: resolution", "'high'"),
        files={"in/j.yaml": _job('resolution: "high"')},
    ),
    Case(
        "job-guidance-nan",
        "animate --config in/j.yaml --weights {w} {fast} --out out",
        ("in/j.yaml: job 1: guidance_scale", "nan"),
        files={"in/j.yaml": _job("guidance_scale: .nan")},
    ),
    Case(
        "job-noise-negative",
        "animate --config in/j.yaml --weights {w} {fast} --out out",
        ("in/j.yaml: job 1: noise_aug_strength", "-1"),
        files={"in/j.yaml": _job("noise_aug_strength: -1")},
    ),
    Case(
        "job-overlap",
        "animate --config in/j.yaml --weights {w} --no-progress --out out",
        ("in/j.yaml: job 1", "frames_overlap"),
        files={"in/j.yaml": _job("num_frames: 4, frames_overlap: 4")},
    ),
    Case(
        "job-defaults-list",
        "animate --config in/j.yaml --weights {w} {fast} --out out",
        ("in/j.yaml: defaults",),
        files={"in/j.yaml": "defaults: [1, 2]\n" + _job("seed: 1")},
    ),
    Case(
        "job-jobs-not-list",
        "animate --config in/j.yaml --weights {w} {fast} --out out",
        ("in/j.yaml",),
        files={"in/j.yaml": "jobs: 5\n"},
    ),
    Case(
        "job-unknown-key",
        "animate --config in/j.yaml --weights {w} {fast} --out out",
        ("'colour'",),
        files={"in/j.yaml": _job("colour: red")},
    ),
    Case(
        "job-yaml-syntax",
        "animate --config in/j.yaml --weights {w} {fast} --out out",
        ("in/j.yaml", "line"),
        files={"in/j.yaml": "jobs: [\n  {ref: r.png\n"},
    ),
    Case(
        "job-same-out",
        "animate --config in/j.yaml --weights {w} {fast} --out out",
        ("same output",),
        files={"in/j.yaml": _job("out: a.mp4") + "  - {ref: r.png, driving: d.mp4, out: a.mp4}\n"},
    ),
    Case(
        "job-out-is-driving",
        "animate --config in/j.yaml --weights {w} {fast}",
        ("is the input --driving",),
        files={"in/j.yaml": _job("out: d.mp4")},
    ),
    Case(
        "job-file-missing", "animate --config in/nope.yaml --weights {w} {fast} --out out", ("in/nope.yaml",)
    ),
    # --- outputs never replace inputs (symlinks and hard links included), nor each other
    Case("out-is-driving", f"{ANIMATE} --out in/d.mp4", ("--out in/d.mp4 is the input --driving in/d.mp4",)),
    Case(
        "out-symlink-to-driving",
        f"{ANIMATE} --out in/link.mp4",
        ("--out in/link.mp4 is the input --driving",),
        setup=_symlink("in/link.mp4", "d.mp4"),
    ),
    Case(
        "out-hardlink-to-driving",
        f"{ANIMATE} --out in/hard.mp4",
        ("--out in/hard.mp4 is the input --driving",),
        setup=_hardlink("in/hard.mp4", "in/d.mp4"),
    ),
    Case(
        "side-by-side-is-out",
        f"{ANIMATE} --side-by-side out/x.mp4 --out out/x.mp4",
        ("--side-by-side out/x.mp4 is also --out out/x.mp4",),
    ),
    Case(
        "side-by-side-is-ref",
        f"{ANIMATE} --side-by-side in/d.mp4 --out out/x.mp4",
        ("--side-by-side in/d.mp4",),
    ),
    Case(
        "sidecar-is-poses",
        f"{ANIMATE} --poses in/x.json --out in/x.mp4",
        ("sidecar of --out", "--poses in/x.json"),
        files={"in/x.json": _openpose([])},
    ),
    Case(
        "eval-out-is-gt",
        f"{EVAL} --out in/gt.mp4",
        ("--out in/gt.mp4 is the input --gt in/gt.mp4",),
        setup=lambda folder: shutil.copy(folder / "in/d.mp4", folder / "in/gt.mp4"),
    ),
    Case(
        "eval-out-hardlink-pred",
        f"{EVAL} --out in/r.json",
        ("--out in/r.json is the input --pred in/d.mp4",),
        setup=lambda folder: (
            shutil.copy(folder / "in/d.mp4", folder / "in/gt.mp4"),
            os.link(folder / "in/d.mp4", folder / "in/r.json"),
        ),
    ),
    Case(
        "pose-out-is-guidance-result",
        "pose --image in/r.png --resolution 128 --out in/G",
        ("holds a result of `dispose guidance`",),
        needs=("G",),
    ),
    Case(
        "guidance-out-is-pose-result",
        "guidance --ref in/r.png --driving in/d.mp4 --resolution 128 --out in/P",
        ("holds a result of `dispose pose`",),
        needs=("P",),
    ),
    Case(
        "pose-out-holds-input",
        "pose --image in/r.png --resolution 128 --out in",
        ("--out in holds the input",),
    ),
    Case(
        "guidance-out-holds-input",
        "guidance --ref in/r.png --driving in/d.mp4 --out in",
        ("--out in holds the input --ref in/r.png",),
    ),
    Case(
        "pose-out-hardlink-image",
        "pose --image in/r.png --out in/r2.png",
        ("--out in/r2.png is the input",),
        setup=_hardlink("in/r2.png", "in/r.png"),
    ),
    Case(
        "convert-out-is-input",
        "convert in/x.pth --out in/x.pth --no-progress",
        ("--out in/x.pth is the input",),
        setup=_checkpoint,
    ),
    Case(
        "convert-out-symlink",
        "convert in/x.pth --out in/l.safetensors --force --no-progress",
        ("--out in/l.safetensors is the input",),
        setup=lambda f: (_checkpoint(f), _symlink("in/l.safetensors", "x.pth")(f)),
    ),
    # --- pose files: structure and finite numbers
    Case(
        "poses-people-int",
        "pose --poses in/p.json --out out",
        ("pose file in/p.json", "'people' is 5"),
        files={"in/p.json": _openpose(5)},
    ),
    Case(
        "poses-people-number-list",
        "pose --poses in/p.json --out out",
        ("pose file in/p.json", "holds 1"),
        files={"in/p.json": _openpose([1])},
    ),
    Case(
        "poses-infinity",
        "pose --poses in/p.json --out out",
        ("pose file in/p.json", "not a finite number"),
        files={"in/p.json": _openpose([{"pose_keypoints_2d": [float("inf"), 1.0, 1.0] + _BODY[3:]}])},
    ),
    Case(
        "poses-nan-score",
        "pose --poses in/p.json --out out",
        ("pose file in/p.json", "not a finite number"),
        files={"in/p.json": _openpose([{"pose_keypoints_2d": [1.0, 1.0, float("nan")] + _BODY[3:]}])},
    ),
    Case(
        "poses-canvas-word",
        "pose --poses in/p.json --out out",
        ("in/p.json: canvas_width", "'abc'"),
        files={"in/p.json": _openpose([], canvas_width="abc")},
    ),
    Case(
        "poses-no-frames",
        "pose --poses in/p.json --out out",
        ("pose file in/p.json", "no frames"),
        files={"in/p.json": _poses([])},
    ),
    Case(
        "poses-negative-width",
        "pose --poses in/p.json --out out",
        ("in/p.json: width", "-646"),
        files={
            "in/p.json": _poses(
                [{"body": [[0.5, 0.5]] * 18, "body_score": [1] * 18, "body_visible": [True] * 18}], width=-646
            )
        },
    ),
    Case(
        "poses-not-json",
        "pose --poses in/p.json --out out",
        ("pose file in/p.json is not readable JSON",),
        files={"in/p.json": "{people: "},
    ),
    Case(
        "guidance-poses-people-int",
        "guidance --ref in/r.png --poses in/p.json --no-progress --out out",
        ("pose file in/p.json", "'people' is 5"),
        files={"in/p.json": _openpose(5)},
    ),
    # --- saved guidance folders: every file checked when loaded
    Case(
        "saved-fields-cut",
        f"{GUIDED} --out out/x.mp4",
        ("guidance folder in/G", "fields.safetensors"),
        needs=("G",),
        setup=_cut("in/G/fields.safetensors"),
    ),
    Case(
        "saved-fields-header-cut",
        f"{GUIDED} --out out/x.mp4",
        ("guidance folder in/G", "fields.safetensors"),
        needs=("G",),
        setup=_cut("in/G/fields.safetensors", keep=20),
    ),
    Case(
        "saved-fields-nan",
        f"{GUIDED} --out out/x.mp4",
        ("guidance folder in/G", "NaN"),
        needs=("G",),
        setup=_nan_fields,
    ),
    Case(
        "saved-fps-nan",
        f"{GUIDED} --out out/x.mp4",
        ("in/G/guidance.json: fps",),
        needs=("G",),
        setup=_edit_json("in/G/guidance.json", lambda data: data.update(fps=float("nan"))),
    ),
    Case(
        "saved-poses-fewer",
        f"{GUIDED} --out out/x.mp4",
        ("guidance folder in/G",),
        needs=("G",),
        setup=_edit_json("in/G/poses.json", lambda data: data["frames"].pop()),
    ),
    Case(
        "saved-no-info",
        f"{GUIDED} --out out/x.mp4",
        ("in/G holds no guidance.json",),
        needs=("G",),
        setup=lambda folder: (folder / "in/G/guidance.json").unlink(),
    ),
    Case(
        "saved-dense-none",
        f"{GUIDED} --dense none --out out/x.mp4",
        ("--dense none does not apply", "in/G"),
        needs=("G",),
    ),
    Case(
        "saved-out-inside-is-input",
        f"{GUIDED} --out in/G/reference.png",
        ("--out in/G/reference.png",),
        needs=("G",),
    ),
    # --- unreadable inputs
    Case(
        "ref-not-image",
        "animate --ref in/t.png --driving in/d.mp4 --weights {w} {fast} --out out/x.mp4",
        ("in/t.png",),
        files={"in/t.png": "not an image"},
    ),
    Case(
        "ref-missing",
        "animate --ref in/none.png --driving in/d.mp4 --weights {w} {fast} --out out/x.mp4",
        ("in/none.png does not exist",),
    ),
    Case(
        "driving-not-video",
        "animate --ref in/r.png --driving in/t.mp4 --weights {w} {fast} --out out/x.mp4",
        ("in/t.mp4",),
        files={"in/t.mp4": "not a video"},
    ),
    Case(
        "pose-image-tiny",
        "pose --image in/s.png --out out",
        ("in/s.png",),
        setup=lambda folder: __import__("PIL.Image").Image.new("RGB", (16, 16)).save(folder / "in/s.png"),
    ),
    Case("out-under-a-file", f"{ANIMATE} --out in/r.png/x.mp4", ("--out", "in/r.png")),
    Case(
        "eval-out-folder",
        f"{EVAL} --out in",
        ("--out in is a folder",),
        setup=lambda folder: shutil.copy(folder / "in/d.mp4", folder / "in/gt.mp4"),
    ),
    Case("convert-missing", "convert in/none.pth --no-progress", ("in/none.pth does not exist",)),
    Case(
        "convert-not-checkpoint", "convert in/t.pth --no-progress", ("in/t.pth",), files={"in/t.pth": "text"}
    ),
    # --- dispose prepare: ids from a list stay inside --out; DWPose by default; every clip failed is an error
    Case(
        "prepare-id-escapes",
        "prepare in/list.jsonl --out out --detector mediapipe --no-dift --no-progress",
        ("in/list.jsonl line 1", "'../../escape'", "one safe folder name"),
        files={"in/list.jsonl": '{"path": "d.mp4", "id": "../../escape"}\n'},
    ),
    Case(
        "prepare-without-dwpose",
        "prepare in/list.jsonl --out out --no-dift --no-progress",
        ("DWPose", "--detector mediapipe"),
        files={"in/list.jsonl": '{"path": "d.mp4", "id": "dance"}\n'},
    ),
    Case(
        "prepare-every-clip-failed",
        "prepare in/bad --out out --detector mediapipe --no-dift --no-progress",
        ("in/bad: every clip failed", "in/bad/a.mp4", "out/manifest.jsonl"),
        files={"in/bad/a.mp4": "not a video"},
        leaves=("out", "out/manifest.jsonl", "out/clips", "out/clips/a", "out/clips/a/clip.json",
                "out/clips/a/.dispose-output"),
    ),
    # --- dispose train: --resume never silently starts over; messages name real options
    Case(
        "train-resume-nothing",
        "train --data in --resume latest --out runs --set data.detector=mediapipe",
        ("--resume latest", "runs/checkpoints holds no complete checkpoint"),
    ),
    Case(
        "train-resume-incomplete",
        "train --data in --resume latest --out runs --set data.detector=mediapipe",
        ("--resume latest", "checkpoint-5: no trainer_state.json"),
        setup=lambda folder: (folder / "runs/checkpoints/checkpoint-5").mkdir(parents=True),
    ),
    Case("prepare-out-is-input", "prepare in --out in --detector mediapipe --no-dift --no-progress",
         ("--out in is the input videos in",)),
    Case("train-out-is-data", "train --data in --out in --set data.detector=mediapipe",
         ("--out in is the input --data in",)),
    Case("train-base-bogus", "train --base foo --data in --out runs", ("'foo'", "mimicmotion, musepose")),
    # --- options a base does not use are refused, not ignored
    Case(
        "musepose-match-release",
        f"{ANIMATE} --base musepose --match-release --out out/x.mp4",
        ("--base musepose does not use", "--match-release"),
    ),
]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file (sha256) and folder under ``folder``, symlinks as their target."""
    state = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            state[name] = "link -> " + os.readlink(path)
        elif path.is_dir():
            state[name] = "folder"
        else:
            state[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.fixture(scope="session")
def failure_inputs(tmp_path_factory, shared_data) -> Path:
    """in/r.png, in/d.mp4 (8 frames of the dancer at 256 px), in/G (its guidance) and in/P (a pose result)."""
    from dispose.media.video import read_video, write_video

    folder = tmp_path_factory.mktemp("failure-inputs")
    (folder / "in").mkdir()
    shutil.copy(shared_data / "musepose_ref.png", folder / "in/r.png")
    clip = read_video(shared_data / "musepose_dance.mp4", sample_stride=4, max_frames=8)
    write_video(folder / "in/d.mp4", clip.frames[:, ::4, ::4], clip.fps)
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        assert (
            main(
                [
                    "guidance",
                    "--ref",
                    "in/r.png",
                    "--driving",
                    "in/d.mp4",
                    "--resolution",
                    "128",
                    "--max-frames",
                    "2",
                    "--no-pictures",
                    "--no-progress",
                    "--out",
                    "G",
                ]
            )
            == 0
        )
        assert (
            main(["pose", "--image", "in/r.png", "--resolution", "128", "--no-progress", "--out", "P"]) == 0
        )
    finally:
        os.chdir(cwd)
    return folder


def test_the_table_covers_enough_situations():
    assert len(CASES) >= 60 and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.usefixtures("offline_hub")
@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_one_line_and_changes_nothing(
    case, failure_inputs, tiny_weights, tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "case"
    (folder / "in").mkdir(parents=True)
    for name in ("r.png", "d.mp4"):
        shutil.copy(failure_inputs / "in" / name, folder / "in" / name)
    for name in case.needs:
        shutil.copytree(failure_inputs / name, folder / "in" / name)
    for name, content in case.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        getattr(folder / name, "write_bytes" if isinstance(content, bytes) else "write_text")(content)
    if case.setup is not None:
        case.setup(folder)
    monkeypatch.chdir(folder)
    before, weights_before = _snapshot(folder), _snapshot(tiny_weights)
    argv = shlex.split(case.argv.format(w=tiny_weights, fast=FAST))
    capsys.readouterr()

    code = main(argv)

    err = capsys.readouterr().err
    command = (
        argv[0]
        if argv and (Path(__file__).parents[1] / "src/dispose/commands" / f"{argv[0]}.py").is_file()
        else None
    )
    prefix = f"dispose {command}: error: " if command else "dispose: error: "
    assert code == 2, err
    assert err.startswith(prefix) and err.count("\n") == 1 and "Traceback" not in err, err
    for expected in case.expect:
        assert expected in err, err
    after = _snapshot(folder)
    for name in case.leaves:
        after.pop(name, None)
    assert after == before, "an input changed, or something was written"
    assert _snapshot(tiny_weights) == weights_before
