"""Every registered base through the same front doors: each front door's defaults are the base's, --compile
runs, options a base has no use for are refused in one line before any model loads."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from dispose.app.state import FormSettings
from dispose.app.ui import base_defaults
from dispose.bases import BASE_SETTINGS, BASES
from dispose.bases.musepose.tiny import build_tiny_musepose_weights
from dispose.bases.pipeline import COMPILE_BACKEND_ENV
from dispose.cli import main
from dispose.commands import animate
from dispose.engine import Animator, Runtime
from dispose.integrations.comfyui import nodes
from dispose.jobs import build_jobs
from dispose.training.config import TrainConfig

#: Tiny runs: 128 x 192 frames, 3 driving frames, 2 steps, tiles / windows of 4 frames.
FAST = ["--resolution", "128", "--max-frames", "3", "--steps", "2", "--num-frames", "4",
        "--frames-overlap", "1", "--detector", "mediapipe", "--dense", "propagate", "--no-progress"]

pytestmark = pytest.mark.usefixtures("offline_hub")


@pytest.fixture(scope="module")
def musepose_weights(tmp_path_factory) -> Path:
    return build_tiny_musepose_weights(tmp_path_factory.mktemp("musepose-weights"))


def _inputs(shared_data: Path) -> list[str]:
    return ["--ref", str(shared_data / "musepose_ref.png"),
            "--driving", str(shared_data / "musepose_dance.mp4")]


@pytest.mark.parametrize("base", sorted(BASES))
def test_compile_runs_on_tiny_weights(base, shared_data, tiny_weights, musepose_weights, tmp_path,
                                      monkeypatch, capfd):
    """--compile on the CPU with dynamo's "eager" backend (graph capture without code generation), without
    graph-break warnings (the point features' slot count is a plain int, not a tensor read in forward)."""
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "eager")
    weights = {"mimicmotion": tiny_weights, "musepose": musepose_weights}[base]
    out = tmp_path / "out.mp4"
    assert main(["animate", *_inputs(shared_data), "--weights", str(weights), "--base", base, *FAST,
                 "--compile", "--out", str(out)]) == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["runtime"]["compile"] is True and sidecar["result"]["frames"] == 3
    assert "Graph break" not in capfd.readouterr().err


@pytest.mark.parametrize("option", [["--match-release"], ["--min-guidance-scale", "1.5"],
                                    ["--noise-aug-strength", "0.02"]])
def test_musepose_refuses_what_it_does_not_use(option, shared_data, tmp_path, capsys):
    """Refused before any weight is looked at (the weights folder does not even exist)."""
    code = main(["animate", *_inputs(shared_data), "--weights", str(tmp_path / "none"), "--base", "musepose",
                 *FAST, *option, "--out", str(tmp_path / "out.mp4")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"--base musepose does not use {option[0].lstrip('-').replace('-', '_')} ({option[0]})" in err
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("name", sorted(BASES))
def test_every_front_door_takes_the_base_defaults(name, shared_data, tmp_path):
    """The command line (and its help), the page after picking the base, the ComfyUI nodes left at their
    defaults and the training config all give Base.defaults."""
    base = BASES[name]
    inputs = {"ref": shared_data / "musepose_ref.png", "driving": shared_data / "musepose_dance.mp4"}

    parser = argparse.ArgumentParser()
    animate.add_arguments(parser)
    args = parser.parse_args(["--base", name])
    overrides = {field: getattr(args, dest) for dest, field in animate._JOB_OPTIONS.items()}
    job = build_jobs(None, {**overrides, **inputs}, tmp_path / "out.mp4")[0][0]
    assert {key: getattr(job, key) for key in BASE_SETTINGS} == base.defaults
    helps = {action.dest: action.help for action in parser._actions}
    for dest, field in animate._JOB_OPTIONS.items():
        if field in BASE_SETTINGS:
            shown = "all" if base.defaults[field] is None else base.defaults[field]
            assert f"{name}: {shown}" in helps[dest], dest

    names = ["resolution", "max_frames", "sample_stride", "num_inference_steps", "guidance_scale", "seed",
             "num_frames", "frames_overlap"]
    page = dict(zip(names, base_defaults(name), strict=True))
    assert {**page, "max_frames": page["max_frames"] or None} == base.defaults
    values = FormSettings(base=name).job_values(inputs["ref"], inputs["driving"])
    assert {key: values[key] for key in BASE_SETTINGS} == base.defaults

    model = Animator(base, None, Runtime())
    widgets = {node: {key: options.get("default") for key, (_, *rest) in declared(node).items()
                      for options in (rest[0] if rest else {},)}
               for node in (nodes.DisPoseComputeGuidance, nodes.DisPoseAnimate)}
    guide = widgets[nodes.DisPoseComputeGuidance]
    guidance = nodes.guidance_settings(model, guide["resolution"], guide["sample_stride"],
                                       guide["max_frames"], guide["seed"])
    animation = widgets[nodes.DisPoseAnimate]
    settings = nodes.animate_settings(model, guidance["resolution"], animation["steps"], animation["cfg"],
                                      animation["seed"], animation["frames_per_tile"],
                                      animation["tile_overlap"],
                                      animation["controlnet_scale"], animation["baseline"],
                                      animation["controlnet_interval"])
    assert {**{key: getattr(settings, key) for key in BASE_SETTINGS}, **guidance} == base.defaults

    config = TrainConfig.load(Path(__file__).parents[1] / "configs" / "train" / f"{name}.yaml")
    assert (config.validation.guidance_scale, config.validation.seed) == (base.defaults["guidance_scale"],
                                                                          base.defaults["seed"])
    assert TrainConfig(base=name).validation.seed == base.defaults["seed"]
    # `dispose train --base NAME` over another base's file: the validation defaults follow --base
    other = next(other for other in BASES if other != name)
    given = TrainConfig.load(Path(__file__).parents[1] / "configs" / "train" / f"{other}.yaml", base=name)
    assert (given.validation.guidance_scale, given.validation.seed) == (base.defaults["guidance_scale"],
                                                                        base.defaults["seed"])


def declared(node) -> dict[str, tuple]:
    spec = node.INPUT_TYPES()
    return {**spec["required"], **spec.get("optional", {})}


@pytest.mark.parametrize("name", sorted(BASES))
def test_guidance_and_pose_take_the_base_defaults(name, shared_data, tmp_path):
    """`dispose guidance --base NAME` and `dispose pose --base NAME` work at that base's resolution, stride
    and seed unless given (the guidance then matches `dispose animate --base NAME`)."""
    import json

    from dispose.cli import main

    defaults = BASES[name].defaults
    assert main(["guidance", *_inputs(shared_data), "--base", name, "--max-frames", "2", "--no-pictures",
                 "--no-progress", "--out", str(tmp_path / "g")]) == 0
    saved = json.loads((tmp_path / "g" / "guidance.json").read_text())["settings"]
    assert {key: saved[key] for key in ("resolution", "sample_stride", "seed")} == {
        key: defaults[key] for key in ("resolution", "sample_stride", "seed")}
    assert main(["pose", "--image", str(shared_data / "musepose_ref.png"), "--base", name, "--no-progress",
                 "--out", str(tmp_path / "p")]) == 0
    poses = json.loads((tmp_path / "p" / "poses.json").read_text())
    assert min(poses["width"], poses["height"]) == defaults["resolution"]
