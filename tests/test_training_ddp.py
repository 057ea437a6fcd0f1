"""Three CPU processes (gloo, launched by torchrun; accelerate picks up its environment) train through the
real ``TrainingDataset`` on clips prepared by ``dispose prepare``: every epoch draws new references, windows
and flips, the processes' samples within an epoch are disjoint and cover the dataset, the ranks keep identical
weights, and a run stopped mid-epoch (accumulation 2 over an epoch of 3 micro-batches per process, so each
epoch ends with a partial accumulation) and resumed consumes exactly the samples of an uninterrupted run and
ends with its weights. What each process consumed comes from the trainer's ``logging.samples`` record."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from launch import torchrun
from safetensors.torch import load_file

from dispose.bases.mimicmotion.tiny import build_tiny_weights
from dispose.cli import main

PROCESSES, SAMPLES_PER_CLIP, CLIPS = 3, 3, ("musepose_dance.mp4", "animatex_ubc_fashion.mp4",
                                            "animatex_dance2_generated.mp4")
#: 2 steps per epoch (3 micro-batches per process, accumulation 2): 3 epochs, stopped mid-epoch 1
STEPS, STOP = 6, 3

RANK_SCRIPT = textwrap.dedent("""
    import json
    import os
    import sys
    from pathlib import Path

    import torch

    from dispose.guidance.tiny import DIFT_CHANNELS
    from dispose.training.config import TrainConfig
    from dispose.training.trainer import train

    weights, data, out = sys.argv[1:4]

    def config(name, steps):
        return TrainConfig.from_dict({
            "output_dir": str(Path(out) / name), "weights": {"dir": weights, "point_channels": DIFT_CHANNELS},
            "data": {"root": data, "num_frames": 3, "width": 64, "height": 64, "num_workers": 0,
                     "samples_per_clip": %(samples)d, "detector": "mediapipe", "dense_field": "flow"},
            "train": {"max_steps": steps, "batch_size": 6, "mixed_precision": "no", "learning_rate": 1e-3,
                      "gradient_checkpointing": False},
            "checkpoints": {"every": %(stop)d}, "logging": {"samples": True}})

    straight = train(config("straight", %(steps)d), cpu=True)
    train(config("split", %(stop)d), cpu=True)
    resumed = train(config("split", %(steps)d), cpu=True, resume="latest")
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else int(os.environ["RANK"])
    torch.save(straight.controlnet.state_dict(), Path(out) / f"rank{rank}.pt")
    world = {"processes": [straight.processes, resumed.processes], "steps": [straight.step, resumed.step]}
    (Path(out) / f"world{rank}.json").write_text(json.dumps(world))
""") % {"samples": SAMPLES_PER_CLIP, "stop": STOP, "steps": STEPS}


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """Tiny weights, and the shared clips prepared at 64x64 (6 frames each, 2 reference candidates)."""
    work = tmp_path_factory.mktemp("ddp")
    weights = build_tiny_weights(work / "weights")
    clips = work / "clips"
    clips.mkdir()
    for name in CLIPS:
        (clips / name).symlink_to(shared_data / name)
    data = work / "dataset"
    code = main(["prepare", str(clips), "--out", str(data), "--size", "64x64", "--max-frames", "6",
                 "--min-frames", "4", "--references", "2", "--flow-downscale", "1",
                 "--sd15", str(weights / "stable-diffusion-v1-5"), "--detector", "mediapipe",
                 "--no-progress"])
    assert code == 0
    return weights, data


def _consumed(run: Path, rank: int) -> list[dict]:
    lines = (run / "logs" / f"samples-rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_three_processes_sample_every_epoch_afresh_and_resume_exactly(prepared, tmp_path):
    weights, data = prepared
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    out = tmp_path / "runs"
    done = torchrun(PROCESSES, str(script), str(weights), str(data), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in range(PROCESSES):
        assert json.loads((out / f"world{rank}.json").read_text()) == {"processes": [PROCESSES] * 2,
                                                                       "steps": [STEPS, STEPS]}

    size = len(CLIPS) * SAMPLES_PER_CLIP
    straight = {rank: _consumed(out / "straight", rank) for rank in range(PROCESSES)}
    draws: dict[int, dict[int, tuple]] = {}
    for epoch in range(3):
        per_rank = [[sample for line in straight[rank] if line["epoch"] == epoch
                     for sample in line["samples"]] for rank in range(PROCESSES)]
        indices = [sorted(sample["index"] for sample in samples) for samples in per_rank]
        # within an epoch: every process its own samples, together the whole dataset
        assert sorted(i for rank in indices for i in rank) == list(range(size)), (epoch, indices)
        draws[epoch] = {s["index"]: (s["clip"], s["reference"], s["start"], s["flip"])
                        for samples in per_rank for s in samples}
        assert {clip for clip, *_ in draws[epoch].values()} == set(range(len(CLIPS)))
    # every epoch draws other references / windows / flips for the same indices
    assert draws[0] != draws[1] and draws[1] != draws[2] and draws[0] != draws[2]

    # stopped at step 3 (mid-epoch 1) and resumed: the same micro-batches in the same order on every process
    # ...
    for rank in range(PROCESSES):
        assert _consumed(out / "split", rank) == straight[rank]
        assert {line["step"] for line in straight[rank]} == set(range(1, STEPS + 1))
    # ... and the same weights, bit for bit
    a = load_file(out / "straight" / "export" / "DisPose.safetensors")
    b = load_file(out / "split" / "export" / "DisPose.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    # DDP: the ranks hold identical trained weights
    ranks = [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(PROCESSES)]
    assert all(torch.equal(ranks[0][key], other[key]) for other in ranks[1:] for key in ranks[0])
    assert ranks[0]["controlnet_mid_block.weight"].any()  # trained away from its zero initialisation
