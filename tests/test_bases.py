"""Every registered base through the same front doors: --compile runs, options a base has no use for are
refused in one line before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dispose.bases import BASES
from dispose.bases.musepose.tiny import build_tiny_musepose_weights
from dispose.bases.pipeline import COMPILE_BACKEND_ENV
from dispose.cli import main

#: Tiny runs: 128 x 192 frames, 3 driving frames, 2 steps, tiles / windows of 4 frames.
FAST = ["--resolution", "128", "--max-frames", "3", "--steps", "2", "--num-frames", "4", "--frames-overlap", "1",
        "--detector", "mediapipe", "--dense", "propagate", "--no-progress"]

pytestmark = pytest.mark.usefixtures("offline_hub")


@pytest.fixture(scope="module")
def musepose_weights(tmp_path_factory) -> Path:
    return build_tiny_musepose_weights(tmp_path_factory.mktemp("musepose-weights"))


def _inputs(shared_data: Path) -> list[str]:
    return ["--ref", str(shared_data / "musepose_ref.png"), "--driving", str(shared_data / "musepose_dance.mp4")]


@pytest.mark.parametrize("base", sorted(BASES))
def test_compile_runs_on_tiny_weights(base, shared_data, tiny_weights, musepose_weights, tmp_path, monkeypatch):
    """--compile on the CPU with dynamo's "eager" backend (graph capture without code generation)."""
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "eager")
    weights = {"mimicmotion": tiny_weights, "musepose": musepose_weights}[base]
    out = tmp_path / "out.mp4"
    assert main(["animate", *_inputs(shared_data), "--weights", str(weights), "--base", base, *FAST,
                 "--compile", "--out", str(out)]) == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["runtime"]["compile"] is True and sidecar["result"]["frames"] == 3


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
