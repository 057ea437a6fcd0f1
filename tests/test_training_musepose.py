"""`dispose train --base musepose` on tiny random MusePose weights: only the SD1.5 hybrid ControlNet learns,
the frozen base stays bit-identical, a training forward is one MusePose sampling step on one window, and the
export (DisPose_MusePose.pth) loads strictly where `dispose animate --base musepose` loads it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file

from dispose.bases import training_base
from dispose.bases.musepose.tiny import build_tiny_musepose_weights
from dispose.bases.musepose.training import SDNoiseDraw
from dispose.bases.musepose.weights import load_controlnet
from dispose.bases.training import model_inputs, random_sample, sample_guidance
from dispose.cli import main
from dispose.guidance.tiny import DIFT_CHANNELS
from dispose.training.config import TrainConfig, ValidationConfig
from dispose.training.trainer import train

REPO = Path(__file__).resolve().parents[1]
FRAMES, SIZE = 4, 64


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return build_tiny_musepose_weights(tmp_path_factory.mktemp("tiny-musepose"))


pytestmark = pytest.mark.usefixtures("one_thread")


def _config(weights, **train) -> TrainConfig:
    return TrainConfig.from_dict({"base": "musepose",
                                  "weights": {"dir": str(weights), "point_channels": DIFT_CHANNELS},
                                  "data": {"num_frames": FRAMES, "width": SIZE, "height": SIZE,
                                           "dense_field": "flow"},
                                  "train": {"mixed_precision": "no", **train}})


def _samples(count: int, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [random_sample(FRAMES, SIZE, SIZE, point_channels=DIFT_CHANNELS, generator=generator)
            for _ in range(count)]


def _batch(count: int, seed: int = 0) -> dict:
    return torch.utils.data.default_collate(_samples(count, seed))


def test_only_the_controlnet_learns_and_the_base_stays_bit_identical(weights):
    model = training_base("musepose").build(_config(weights))
    frozen = {(index, name): p.detach().clone() for index, module in enumerate(model.frozen_modules())
              for name, p in module.named_parameters()}
    start = model.controlnet.controlnet_mid_block.weight.detach().clone()
    optimizer = torch.optim.AdamW([p for m in model.trainable_modules() for p in m.parameters()], lr=1e-3)
    model.train()
    for step in range(2):
        batch = _batch(2, seed=step)
        draw = model.draw(batch, torch.Generator().manual_seed(step))
        draw.keep = torch.tensor([True, step == 0])  # a clip trained as the unconditional half too
        loss = model(batch, draw)
        assert loss.shape == (2,) and torch.isfinite(loss).all()
        loss.mean().backward()
        assert all(p.grad is not None for p in model.controlnet.parameters())
        for module in model.frozen_modules():
            assert not any(p.requires_grad or p.grad is not None for p in module.parameters())
            assert not module.training
        optimizer.step()
        optimizer.zero_grad()
    for index, module in enumerate(model.frozen_modules()):
        for name, param in module.named_parameters():
            assert torch.equal(param, frozen[index, name]), name
    # left its zero initialisation
    assert not start.any() and model.controlnet.controlnet_mid_block.weight.any()


def test_training_forward_is_one_sampling_step_on_one_window(weights):
    base = training_base("musepose")
    model = base.build(_config(weights))
    model.eval()
    batch = model_inputs(_batch(1, seed=3), None)  # as the forward reads it
    pipeline = base.pipeline(model)
    noise = torch.randn(model.latent_shape(batch), generator=torch.Generator().manual_seed(1))
    sample = {key: value[0] for key, value in batch.items()}
    with torch.no_grad():
        # one trailing DDIM step runs t = 999, where the zero-terminal-SNR schedule has abar = 0: x0 = -v
        sampled = pipeline((sample["pixels"][:1] + 1) / 2, sample["pose_images"], sample_guidance(batch, 0),
                           num_inference_steps=1, guidance_scale=1.0, context_frames=FRAMES - 1,
                           context_overlap=0, latents=noise, output_type="latent").frames
        draw = SDNoiseDraw(torch.tensor([999]), noise, torch.ones(1, dtype=torch.bool))
        cond = model.encode(batch, draw.keep)
        noisy, _ = model.objective.noisy_and_target(cond["latents"], noise, draw.timesteps,
                                                    model.noise_scheduler)
        control = model.controlnet.encode_guidance(**model.guidance_window(batch, torch.float32))
        velocity = model.predict(noisy, draw.timesteps, cond, control)
    assert torch.allclose(noisy, noise)
    assert torch.allclose(-velocity, sampled, rtol=1e-4, atol=1e-5)


def test_dispose_train_base_musepose_exports_a_checkpoint_animate_loads(weights, shared_data, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    settings = [f"weights.point_channels={DIFT_CHANNELS}", f"data.num_frames={FRAMES}", f"data.width={SIZE}",
                f"data.height={SIZE}", "data.num_workers=0", "data.dense_field=flow", "train.batch_size=2",
                "train.mixed_precision=no",
                "train.learning_rate=1.0e-3", "train.gradient_checkpointing=true", "checkpoints.every=2"]
    with mock.patch("dispose.training.trainer._open_dataset", return_value=_samples(2)):
        code = main(["train", "--config", str(REPO / "configs" / "train" / "musepose.yaml"), "--weights",
                     str(weights), "--data", str(tmp_path), "--out", str(out), "--max-steps", "2", "--cpu",
                     *(item for setting in settings for item in ("--set", setting))])
    assert code == 0
    export = out / "export"
    assert sorted(path.name for path in export.iterdir()) == ["DisPose_MusePose.pth",
                                                              "DisPose_MusePose.safetensors"]
    stored = load_file(export / "DisPose_MusePose.safetensors")
    assert stored["controlnet_mid_block.weight"].any()  # trained away from its zero initialisation
    denoising = training_base("musepose").build(_config(weights)).denoising_unet
    for path in export.iterdir():
        loaded = load_controlnet(path, denoising).state_dict()
        assert loaded.keys() == stored.keys() and all(torch.equal(loaded[key], stored[key]) for key in stored)
    video = tmp_path / "dance.mp4"
    assert main(["animate", "--ref", str(shared_data / "musepose_ref.png"), "--driving",
                 str(shared_data / "musepose_dance.mp4"), "--weights", str(weights), "--dispose-musepose",
                 str(export / "DisPose_MusePose.pth"), "--base", "musepose", "--resolution", "128",
                 "--max-frames", "2", "--steps", "1", "--num-frames", "3", "--frames-overlap", "1",
                 "--detector", "mediapipe", "--dense", "none", "--no-progress", "--out", str(video)]) == 0
    assert video.stat().st_size > 0
    sidecar = json.loads(video.with_suffix(".json").read_text())
    assert sidecar["runtime"]["base"] == "musepose" and "dispose_musepose" in sidecar["weights"]


def test_validation_samples_with_the_training_networks_and_training_goes_on(weights, shared_data, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = _config(weights, max_steps=2, batch_size=1, learning_rate=1e-3, gradient_checkpointing=False)
    config.output_dir, config.data.num_workers = str(tmp_path / "plain"), 0
    plain = train(config, dataset=_samples(2), cpu=True)
    config.output_dir = str(tmp_path)
    config.validation = ValidationConfig(every=1, ref=str(shared_data / "musepose_ref.png"),
                                         driving=str(shared_data / "musepose_dance.mp4"), resolution=128,
                                         max_frames=2, num_inference_steps=1, dense="none")
    result = train(config, dataset=_samples(2), cpu=True)
    # sampling in between (a pipeline on the training networks reconnects the reference attention) leaves the
    # training steps unchanged
    assert result.step == 2 and result.losses == plain.losses and all(map(math.isfinite, result.losses))
    for step in (1, 2):
        assert (tmp_path / "validation" / f"step-{step}.mp4").stat().st_size > 0
    assert result.exported == (tmp_path / "export" / "DisPose_MusePose.pth",
                               tmp_path / "export" / "DisPose_MusePose.safetensors")


def test_gradient_checkpointing_gives_the_same_gradients(weights):
    model = training_base("musepose").build(_config(weights))
    with torch.no_grad():  # non-zero output convolutions: the gradients reach every layer through the UNet
        for param in model.controlnet.parameters():
            if not param.any():
                param.normal_(0, 0.05)
    model.train()
    batch = _batch(1, seed=5)
    draw = model.draw(batch, torch.Generator().manual_seed(2))
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            model.enable_gradient_checkpointing()
        model.controlnet.zero_grad()
        model(batch, draw).mean().backward()
        grads.append({name: p.grad.clone() for name, p in model.controlnet.named_parameters()})
    assert grads[0]["conv_in.weight"].any()
    for name, grad in grads[0].items():
        assert torch.allclose(grads[1][name], grad, rtol=1e-4, atol=1e-7), name


def test_shipped_musepose_config_holds_the_paper_settings():
    config = TrainConfig.load(REPO / "configs" / "train" / "musepose.yaml")
    assert config.base == "musepose"
    assert (config.data.num_frames, config.data.width, config.data.height) == (17, 512, 512)  # 16 denoised
    assert (config.train.batch_size, config.train.learning_rate, config.train.max_steps) == (32, 1e-5, 20_000)
    assert config.train.mixed_precision == "bf16"
