"""Two-process DDP on the CPU (gloo, launched by torchrun; accelerate picks up its environment): the ranks end with identical trainable weights,
different from the start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import torch

from dispose.bases.mimicmotion.tiny import build_tiny_weights

RANK_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import torch
    from accelerate import PartialState

    from dispose.guidance.tiny import DIFT_CHANNELS
    from dispose.training.config import TrainConfig
    from dispose.bases.training import random_sample
    from dispose.training.trainer import train

    weights, out = sys.argv[1:3]
    generator = torch.Generator().manual_seed(0)
    samples = [random_sample(2, 64, 64, point_channels=DIFT_CHANNELS, generator=generator) for _ in range(4)]
    config = TrainConfig.from_dict({
        "output_dir": out, "weights": {"dir": weights, "point_channels": DIFT_CHANNELS},
        "data": {"num_frames": 2, "width": 64, "height": 64, "num_workers": 0},
        "train": {"max_steps": 3, "batch_size": 2, "mixed_precision": "no", "learning_rate": 1e-3,
                  "gradient_checkpointing": False},
        "checkpoints": {"every": 100}})
    result = train(config, dataset=samples, cpu=True)
    state = PartialState()
    assert state.num_processes == 2, state
    rank = state.process_index
    torch.save(result.controlnet.state_dict(), Path(out) / f"rank{rank}.pt")
""")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_process_ddp_keeps_the_ranks_identical(tmp_path):
    weights = build_tiny_weights(tmp_path / "weights")
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), str(script), str(weights), str(out)],
                          check=False, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    start = torch.load(weights / "DisPose.pth", weights_only=True)  # for its key list only
    assert ranks[0].keys() == ranks[1].keys() == start.keys()
    assert all(torch.equal(ranks[0][key], ranks[1][key]) for key in ranks[0])
    # the zero-initialised output convolutions were trained on both ranks
    assert ranks[0]["controlnet_mid_block.weight"].any()
