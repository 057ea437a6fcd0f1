"""``dispose train``: resuming is exact, validation and exports are written, settings errors are one line, a
non-finite step is skipped, the held-out loss is logged, a resume never silently restarts, an interrupted
checkpoint leaves nothing, and the shipped accelerate configs pass accelerate's own launch-time parsing."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dispose.bases.training import random_sample
from dispose.cli import main
from dispose.errors import UserError
from dispose.guidance.tiny import DIFT_CHANNELS
from dispose.training.config import TrainConfig
from dispose.training.trainer import _deepspeed_clipping, master_weights, train

REPO = Path(__file__).resolve().parents[1]
FRAMES, SIZE = 2, 64


@pytest.fixture(scope="module")
def weights(tiny_weights):
    return tiny_weights


pytestmark = pytest.mark.usefixtures("one_thread")


class Samples(torch.utils.data.Dataset):
    def __init__(self, count: int = 3) -> None:
        generator = torch.Generator().manual_seed(0)
        self.items = [random_sample(FRAMES, SIZE, SIZE, point_channels=DIFT_CHANNELS, generator=generator)
                      for _ in range(count)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def _config(weights, out: Path, steps: int, **sections) -> TrainConfig:
    data = {"output_dir": str(out), "weights": {"dir": str(weights), "point_channels": DIFT_CHANNELS},
            "data": {"num_frames": FRAMES, "width": SIZE, "height": SIZE, "num_workers": 0},
            "train": {"max_steps": steps, "batch_size": 1, "mixed_precision": "no", "learning_rate": 1e-3,
                      "gradient_checkpointing": False, "use_ema": True, "ema_decay": 0.9,
                      "lr_warmup_steps": 2},
            "checkpoints": {"every": 3, "keep": 2}, "logging": {"every": 1}}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return TrainConfig.from_dict(data)


def test_resumed_run_gives_the_weights_of_an_uninterrupted_one(weights, tmp_path):
    calls = []

    def animate(pipeline):
        calls.append(pipeline.controlnet)
        return np.full((3, SIZE, SIZE, 3), 128, np.uint8)

    straight = train(_config(weights, tmp_path / "straight", 12), dataset=Samples(), cpu=True)
    first = train(_config(weights, tmp_path / "split", 6, validation={"every": 6}), dataset=Samples(),
                  cpu=True, animate=animate)
    resumed = train(_config(weights, tmp_path / "split", 12), dataset=Samples(), cpu=True, resume="latest")

    assert (first.step, resumed.step, straight.step) == (6, 12, 12)
    assert resumed.losses == straight.losses[6:]
    a = load_file(tmp_path / "straight" / "export" / "DisPose.safetensors")
    b = load_file(tmp_path / "split" / "export" / "DisPose.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert a["controlnet_mid_block.weight"].any()  # trained away from its zero initialisation
    # the last K states are kept, each with the trainable network only
    kept = sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir())
    assert kept == ["checkpoint-12", "checkpoint-9"]
    assert not list((tmp_path / "split" / "checkpoints" / "checkpoint-12").glob("model*"))
    # validation ran once, on the trained ControlNet, and wrote its video and TensorBoard logs
    assert len(calls) == 1 and calls[0] is first.controlnet
    assert (tmp_path / "split" / "validation" / "step-6.mp4").stat().st_size > 0
    assert list((tmp_path / "split" / "logs").rglob("events.out.tfevents.*"))


def test_settings_errors_are_one_line(weights, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  max_step: 10\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "unknown key(s) ['max_step']" in capsys.readouterr().err
    assert main(["train", "--set", "train.batch_size=0"]) == 2
    assert "train.batch_size must be at least 1" in capsys.readouterr().err
    assert main(["train", "--weights", str(weights)]) == 2
    assert "data.root is not set" in capsys.readouterr().err
    assert main(["train", "--base", "sd3", "--data", str(tmp_path)]) == 2
    assert "unknown base model 'sd3'; choose one of mimicmotion, musepose" in capsys.readouterr().err
    odd = _config(weights, tmp_path / "odd", 1, train={"batch_size": 3, "micro_batch_size": 2})
    with pytest.raises(UserError, match="not a multiple of micro_batch_size"):
        train(odd, dataset=Samples(), cpu=True)
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        train(_config(weights, tmp_path / "adam8", 1, train={"use_8bit_adam": True}), dataset=Samples(),
              cpu=True)
    with pytest.raises(UserError, match="not a complete checkpoint folder"):
        train(_config(weights, tmp_path / "r", 1), dataset=Samples(), cpu=True, resume=str(tmp_path))


def test_shipped_training_config_holds_the_paper_settings():
    config = TrainConfig.load(REPO / "configs" / "train" / "mimicmotion.yaml")
    assert (config.data.num_frames, config.data.width, config.data.height) == (16, 768, 1024)
    assert (config.train.batch_size, config.train.learning_rate, config.train.max_steps) == (8, 2e-5, 10_000)


@pytest.mark.parametrize("name", ["ddp", "deepspeed_zero2", "fsdp"])
def test_accelerate_configs_pass_accelerate_launch_parsing(name):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = REPO / "configs" / "accelerate" / f"{name}.yaml"
    parser = launch_command_parser()
    known = set(vars(parser.parse_args(["train.py"])))
    args, defaults, _ = _validate_launch_command(parser.parse_args(["--config_file", str(path), "-m",
                                                                    "dispose.cli", "train"]))
    # every entry of the nested sections is an option `accelerate launch` knows (a typo would be ignored)
    for key in defaults.deepspeed_config:
        assert key in known, key
    for key in defaults.fsdp_config:
        assert (key if key.startswith("fsdp") else f"fsdp_{key}") in known, key
    assert args.num_processes == 8
    if name == "deepspeed_zero2":
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
        with mock.patch.dict(os.environ, env):
            plugin = DeepSpeedPlugin()
        assert plugin.zero_stage == 2 and plugin.deepspeed_config["zero_optimization"]["stage"] == 2
        # clipping comes from train.max_grad_norm, not from the accelerate config
        assert plugin.deepspeed_config["gradient_clipping"] == "auto"
        _deepspeed_clipping(plugin, 0.3)
        assert plugin.deepspeed_config["gradient_clipping"] == 0.3
        plugin.deepspeed_config["gradient_clipping"] = "auto"
        _deepspeed_clipping(plugin, None)
        assert plugin.deepspeed_config["gradient_clipping"] == 0.0  # DeepSpeed's "off"
    elif name == "fsdp":
        with mock.patch.dict(os.environ, prepare_multi_gpu_env(args)):
            plugin = FullyShardedDataParallelPlugin(sync_module_states=False)  # True needs a GPU to check
        assert plugin.use_orig_params and str(plugin.sharding_strategy).endswith("FULL_SHARD")
        assert plugin.fsdp_version == 1 and plugin.auto_wrap_policy is None  # the trainer forms the one unit
        assert str(plugin.state_dict_type).endswith("SHARDED_STATE_DICT")
    else:
        assert args.multi_gpu and not (args.use_deepspeed or args.use_fsdp)


def _scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for events in (run / "logs").rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            values += [(event.step, event.value) for event in accumulator.Scalars(tag)]
    return sorted(values)


class NanAt(Samples):
    """Samples whose dense field is NaN at the given indices (images are uint8: they cannot hold a NaN)."""

    def __init__(self, bad: set[int], count: int = 3) -> None:
        super().__init__(count)
        for index in bad:
            field = torch.full_like(self.items[index]["dense_flow"], np.nan)
            self.items[index] = {**self.items[index], "dense_flow": field}


def test_a_non_finite_step_is_skipped_and_too_many_in_a_row_stop_the_run(weights, tmp_path):
    result = train(_config(weights, tmp_path / "one", 3, train={"use_ema": False, "max_nonfinite_steps": 2}),
                   dataset=NanAt({1}), cpu=True)
    assert result.step == 3 and len(result.losses) == 2  # the NaN sample's step was skipped, the run went on
    exported = load_file(tmp_path / "one" / "export" / "DisPose.safetensors")
    assert all(torch.isfinite(value).all() for value in exported.values())
    assert [value for _, value in _scalars(tmp_path / "one", "train/nonfinite_steps")] == [1.0]  # logged once
    with pytest.raises(UserError, match="2 optimiser steps in a row had a non-finite loss"):
        train(_config(weights, tmp_path / "all", 3, train={"max_nonfinite_steps": 2}),
              dataset=NanAt({0, 1, 2}), cpu=True)


def test_held_out_loss_is_logged_at_fixed_noise(weights, tmp_path):
    from dispose.bases import training_base
    from dispose.training.heldout import HeldOutLoss

    config = _config(weights, tmp_path / "run", 4, validation={"loss_every": 2, "loss_data": str(tmp_path)})
    with mock.patch("dispose.training.trainer._open_dataset", return_value=Samples(2)) as opened:
        train(config, dataset=Samples(), cpu=True)
    assert opened.call_args.args[0].data.root == str(tmp_path)  # the held-out folder, not data.root
    logged = _scalars(tmp_path / "run", "validation/loss")
    assert [step for step, _ in logged] == [2, 4] and all(np.isfinite(value) for _, value in logged)
    # the same model gives the same held-out loss every time (fixed sigmas and noise)
    model = training_base("mimicmotion").build(config)
    loss = HeldOutLoss(Samples(2), count=5)
    assert loss(model) == loss(model)
    with pytest.raises(UserError, match="validation.loss_data is not"):
        train(_config(weights, tmp_path / "x", 1, validation={"loss_every": 2}), dataset=Samples(), cpu=True)


def test_resume_latest_refuses_when_nothing_is_usable(weights, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--weights", str(weights), "--out", str(out), "--resume", "latest"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no complete checkpoint (none)" in err
    (out / "checkpoints" / "checkpoint-5").mkdir(parents=True)  # interrupted while saving: no state file
    assert main(args) == 2
    assert "only incomplete ones (checkpoint-5" in capsys.readouterr().err
    assert not (out / "export").exists()


def test_an_interrupted_checkpoint_leaves_no_folder(weights, tmp_path):
    from accelerate import Accelerator

    saved = Accelerator.save_state

    def interrupted(self, output_dir, **kwargs):
        saved(self, output_dir, **kwargs)
        raise KeyboardInterrupt

    with mock.patch.object(Accelerator, "save_state", interrupted), pytest.raises(KeyboardInterrupt):
        train(_config(weights, tmp_path / "run", 3), dataset=Samples(), cpu=True)
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []


def test_train_messages_point_to_options_it_takes(tmp_path, capsys):
    import re

    from dispose.bases import get_base
    from dispose.cli import build_parser
    from dispose.pipelines.weights import find_weights

    parser = build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    options = {option for action in train_parser._actions for option in action.option_strings}
    for base in ("mimicmotion", "musepose"):
        _, problems = find_weights(tmp_path, {}, get_base(base).required_components(False))
        named = set(re.findall(r"pass (--[a-z0-9-]+)", "\n".join(problems)))
        assert named and named <= options, (base, named - options)
    assert main(["train", "--base", "foo", "--data", str(tmp_path)]) == 2
    assert "mimicmotion, musepose" in capsys.readouterr().err  # every base that trains is named


def test_deepspeed_clipping_set_elsewhere_is_refused_and_ema_follows_float32_masters(monkeypatch):
    import sys
    import types

    from accelerate.utils import DistributedType

    plugin = types.SimpleNamespace(deepspeed_config={"gradient_clipping": 1.0})
    with pytest.raises(UserError, match="sets gradient_clipping 1.0 but train.max_grad_norm is 0.5"):
        _deepspeed_clipping(plugin, 0.5)
    # under DeepSpeed the module holds bf16 copies; the EMA reads the float32 masters DeepSpeed keeps
    controlnet = torch.nn.Linear(3, 2).to(torch.bfloat16)
    masters = {id(p): torch.randn(p.shape, dtype=torch.float32) for p in controlnet.parameters()}
    fake = types.ModuleType("deepspeed.utils")
    fake.safe_get_full_fp32_param = lambda parameter: masters[id(parameter)]
    monkeypatch.setitem(sys.modules, "deepspeed", types.ModuleType("deepspeed"))
    monkeypatch.setitem(sys.modules, "deepspeed.utils", fake)
    accelerator = types.SimpleNamespace(distributed_type=DistributedType.DEEPSPEED)
    weights = master_weights(accelerator, controlnet)
    assert [w.dtype for w in weights] == [torch.float32] * 2
    assert all(w is masters[id(p)] for w, p in zip(weights, controlnet.parameters()))
