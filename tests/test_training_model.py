"""The training model: frozen base, trainable hybrid ControlNet, one forward = one sampling step on one tile;
the exported checkpoint loads strictly where ``dispose animate`` loads DisPose.pth."""

from __future__ import annotations

import pytest
import torch

from dispose.bases import training_base
from dispose.bases.mimicmotion.training import NoiseDraw
from dispose.bases.training import model_inputs, random_sample
from dispose.guidance.stage import GuidanceTensors
from dispose.guidance.tiny import DIFT_CHANNELS
from dispose.training.config import TrainConfig

FRAMES, SIZE = 2, 64


@pytest.fixture(scope="module")
def weights(tiny_weights):
    return tiny_weights


pytestmark = pytest.mark.usefixtures("one_thread")


def _config(weights, **train) -> TrainConfig:
    return TrainConfig.from_dict({"weights": {"dir": str(weights), "point_channels": DIFT_CHANNELS},
                                  "data": {"num_frames": FRAMES, "width": SIZE, "height": SIZE,
                                           "dense_field": "flow"},
                                  "train": {"mixed_precision": "no", **train}})


def _batch(count: int = 1, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    samples = [random_sample(FRAMES, SIZE, SIZE, point_channels=DIFT_CHANNELS, generator=generator)
               for _ in range(count)]
    return torch.utils.data.default_collate(samples)


def test_only_the_controlnet_learns_and_the_base_stays_bit_identical(weights):
    model = training_base("mimicmotion").build(_config(weights))
    frozen = {name: p.detach().clone() for module in model.frozen_modules()
              for name, p in module.named_parameters()}
    start = {name: p.detach().clone() for name, p in model.controlnet.named_parameters()}
    trainable = [p for module in model.trainable_modules() for p in module.parameters()]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for step in range(2):
        batch = _batch(2, seed=step)
        loss = model(batch, model.draw(batch, generator)).mean()
        loss.backward()
        if step == 0:
            assert all(p.grad is not None for p in model.controlnet.parameters())
            for module in model.frozen_modules():
                assert not any(p.requires_grad or p.grad is not None for p in module.parameters())
                assert not module.training
        optimizer.step()
        optimizer.zero_grad()
    for module in model.frozen_modules():
        for name, param in module.named_parameters():
            assert torch.equal(param, frozen[name]), name
    # the zero-initialised output convolutions have left zero: the ControlNet now acts on the UNet
    assert not torch.equal(model.controlnet.controlnet_mid_block.weight, start["controlnet_mid_block.weight"])
    assert not start["controlnet_mid_block.weight"].any()


def test_training_forward_is_one_sampling_step_on_one_tile(weights):
    base = training_base("mimicmotion")
    model = base.build(_config(weights, mixed_precision="no"))
    model.eval()
    batch = model_inputs(_batch(1, seed=4), None)  # as the forward reads it
    pipeline = base.pipeline(model)
    pipeline.scheduler.set_timesteps(1)
    sigma = pipeline.scheduler.sigmas[:1].float()
    noise = torch.randn(model.latent_shape(batch), generator=torch.Generator().manual_seed(1))
    sample = {key: value[0] for key, value in batch.items()}
    guidance = GuidanceTensors(trajectories=sample["trajectories"], visible=sample["visible"],
                               points=sample["points"], dense_flow=sample["dense_flow"],
                               point_embeddings=sample["point_embeddings"], width=SIZE, height=SIZE)
    with torch.no_grad():
        sampled = pipeline((sample["pixels"][:1] + 1) / 2, sample["pose_images"], guidance, tile_size=FRAMES,
                           tile_overlap=1, num_inference_steps=1, min_guidance_scale=1.0,
                           max_guidance_scale=1.0, latents=noise, keep_reference=True,
                           output_type="latent").frames
        draw = NoiseDraw(sigma, noise, torch.zeros_like(batch["pixels"][:, 0]),
                         torch.ones(1, dtype=torch.bool))
        cond = model.encode(batch, draw.reference_noise)
        control = model.controlnet.encode_guidance(**model.guidance_window(batch, torch.float32))
        # the sampler starts from noise * init_noise_sigma; one Euler step to sigma 0 returns D(x; sigma)
        trained = model.denoise(noise * pipeline.scheduler.init_noise_sigma, sigma, cond, control, draw.keep)
    # the Euler step forms x + (D - x) at |x| ~ sigma = 700: float32 rounding of a few sigma * eps
    assert torch.allclose(trained, sampled, rtol=1e-4, atol=4 * float(sigma) * torch.finfo(torch.float32).eps)


def test_exported_checkpoint_loads_strictly_as_dispose_pth(weights, tmp_path):
    from dispose.bases.mimicmotion.weights import load_controlnet
    from dispose.bases.training import export_controlnet

    model = training_base("mimicmotion").build(_config(weights))
    with torch.no_grad():
        model.controlnet.controlnet_mid_block.weight.add_(0.5)  # a trained-looking change
    pth, safetensors = export_controlnet(model.controlnet, tmp_path)
    expected = model.controlnet.state_dict()
    for path in (pth, safetensors):
        loaded = load_controlnet(path, model.unet).state_dict()
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[key], expected[key]) for key in expected)
    assert pth.name == "DisPose.pth" and safetensors.name == "DisPose.safetensors"


def test_gradient_checkpointing_gives_the_same_gradients(weights):
    model = training_base("mimicmotion").build(_config(weights))
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
    for name, grad in grads[0].items():
        assert torch.allclose(grads[1][name], grad, rtol=1e-4, atol=1e-6), name
