"""FSDP through the real trainer on two CPU processes (gloo, torchrun): the trainable ControlNet is the one
FSDP unit, the frozen base stays outside it, clipping sees the global gradient norm, EMA and the export get
the full weights, and the export loads strictly into ``dispose animate``.

accelerate 1.16 never selects FSDP for CPU processes (``AcceleratorState`` turns ``ACCELERATE_USE_FSDP`` / an
``fsdp_plugin`` into ``DistributedType.FSDP`` only for GPU-like process types; CPU stays ``MULTI_CPU``), while
torch's FSDP1 runs on CPU with gloo.  So the rank script sets accelerate's state to FSDP with the plugin
``configs/accelerate/fsdp.yaml`` describes right after the ``Accelerator`` is built, and its device to ``cpu``
(accelerate's ``cpu:0`` for CPU processes fails FSDP's device check); everything after that is the trainer's
own FSDP path."""

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

RANK_SCRIPT = textwrap.dedent("""
    import json
    import sys
    from pathlib import Path

    import torch
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    from dispose.bases.training import random_sample
    from dispose.guidance.tiny import DIFT_CHANNELS
    from dispose.training.config import TrainConfig
    from dispose.training import trainer

    weights, out = sys.argv[1:3]
    built = Accelerator.__init__
    seen = {}

    def with_fsdp(self, *args, **kwargs):  # accelerate 1.16 selects FSDP for GPU process types only
        built(self, *args, **kwargs)
        self.state.fsdp_plugin = FullyShardedDataParallelPlugin(
            fsdp_version=1, sharding_strategy="FULL_SHARD", auto_wrap_policy="SIZE_BASED_WRAP",
            min_num_params=1000,
            state_dict_type="SHARDED_STATE_DICT", use_orig_params=True, sync_module_states=False)
        for state in (self.state, PartialState()):  # AcceleratorState re-reads PartialState's settings
            state.distributed_type = DistributedType.FSDP
            state.device = torch.device("cpu")  # MULTI_CPU's cpu:0 fails FSDP's device check

    clip = trainer._clip

    def recorded_clip(accelerator, model, parameters, max_norm):
        from torch.distributed.fsdp import FullyShardedDataParallel
        norm = clip(accelerator, model, parameters, max_norm)
        seen.update(wrapped=type(model).__name__, units=len(FullyShardedDataParallel.fsdp_modules(model)),
                    frozen_dtype=str(model.module.unet.dtype), norm=float(norm),
                    local=sum(p.numel() for p in model.module.controlnet.parameters()))
        return norm

    Accelerator.__init__ = with_fsdp
    trainer._clip = recorded_clip
    generator = torch.Generator().manual_seed(0)
    samples = [random_sample(2, 64, 64, point_channels=DIFT_CHANNELS, generator=generator) for _ in range(4)]
    config = TrainConfig.from_dict({
        "output_dir": out, "weights": {"dir": weights, "point_channels": DIFT_CHANNELS},
        "data": {"num_frames": 2, "width": 64, "height": 64, "num_workers": 0},
        "train": {"max_steps": 3, "batch_size": 2, "mixed_precision": "no", "learning_rate": 1e-3,
                  "gradient_checkpointing": False, "use_ema": True, "ema_decay": 0.5, "max_grad_norm": 1e-3},
        "checkpoints": {"every": 2}})
    result = trainer.train(config, dataset=samples, cpu=True)
    rank = torch.distributed.get_rank()
    seen.update(processes=result.processes, exported=[str(path) for path in result.exported])
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(seen))
""")


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("fsdp")
    weights = build_tiny_weights(work / "weights")
    script = work / "rank.py"
    script.write_text(RANK_SCRIPT)
    out = work / "run"
    done = torchrun(2, str(script), str(weights), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return weights, out


def test_fsdp_shards_the_controlnet_only_and_exports_full_weights(fsdp_run):
    weights, out = fsdp_run
    ranks = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    start = torch.load(weights / "DisPose.pth", weights_only=True)  # the tiny ControlNet's keys and shapes
    full = sum(value.numel() for value in start.values())
    for seen in ranks:
        assert seen["processes"] == 2 and seen["wrapped"] == "FullyShardedDataParallel"
        assert seen["units"] == 1  # the ControlNet's parameters form the one unit; the frozen base is ignored
        assert seen["local"] < full  # each process holds a shard of the ControlNet between steps
    assert ranks[0]["norm"] == ranks[1]["norm"] > 1e-3  # one global norm, above the clipping threshold
    exported = load_file(out / "export" / "DisPose.safetensors")
    assert exported.keys() == start.keys()
    assert all(exported[key].shape == start[key].shape for key in start)  # full tensors, not shards
    assert exported["controlnet_mid_block.weight"].any()  # trained away from its zero initialisation
    assert (out / "checkpoints" / "checkpoint-3" / "trainer_state.json").is_file()


def test_fsdp_export_animates(fsdp_run, shared_data, tmp_path, capsys):
    weights, out = fsdp_run
    video = tmp_path / "dance.mp4"
    code = main(["animate", "--ref", str(shared_data / "musepose_ref.png"), "--driving",
                 str(shared_data / "musepose_dance.mp4"), "--weights", str(weights), "--dispose-ckpt",
                 str(out / "export" / "DisPose.safetensors"), "--resolution", "128", "--max-frames", "4",
                 "--steps", "2", "--detector", "mediapipe", "--dense", "propagate", "--no-progress",
                 "--out", str(video)])
    assert code == 0, capsys.readouterr().err
    assert video.stat().st_size > 0
