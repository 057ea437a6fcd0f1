"""MusePose's networks: the published files' key sets at full size, strict loading of files in the release
layout, the per-frame motion modules, the reference attention and the SD1.5 hybrid ControlNet."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import init_empty_weights

from dispose.bases.musepose.tiny import tiny_musepose_models, tiny_unet_config
from dispose.bases.musepose.weights import (
    SD_IMAGE_VARIATIONS_UNET_CONFIG,
    load_musepose,
    parameter_table,
    verify_checkpoint,
)
from dispose.errors import UserError
from dispose.models.controlnet_sd import HybridControlNetSD
from dispose.models.musepose.denoising_unet import MusePoseDenoisingUNet, motion_config_from_sd
from dispose.models.musepose.reference import (
    MusePoseReferenceUNet,
    ReferenceBank,
    connect_reference_attention,
)
from dispose.models.musepose.release_files import build_pose_guider, release_states

# Written down from the release's code (musepose/models/unet_3d.py, motion_module.py, unet_2d_condition.py,
# pose_guider.py, configs/inference_v2.yaml, train_stage_*.py save_checkpoint): each published file's keys.
MOTION_MODULE_SUFFIXES = {
    "norm.weight", "norm.bias", "proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias",
    *(f"transformer_blocks.0.attention_blocks.{a}.{p}" for a in (0, 1) for p in (
        "to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias", "pos_encoder.pe")),
    *(f"transformer_blocks.0.norms.{a}.{p}" for a in (0, 1) for p in ("weight", "bias")),
    "transformer_blocks.0.ff_norm.weight", "transformer_blocks.0.ff_norm.bias",
    "transformer_blocks.0.ff.net.0.proj.weight", "transformer_blocks.0.ff.net.0.proj.bias",
    "transformer_blocks.0.ff.net.2.weight", "transformer_blocks.0.ff.net.2.bias",
}
MOTION_MODULES = ([f"down_blocks.{b}.motion_modules.{m}" for b in range(4) for m in range(2)]
                  + ["mid_block.motion_modules.0"]
                  + [f"up_blocks.{b}.motion_modules.{m}" for b in range(4) for m in range(3)])
DENOISING_SAMPLE = ("conv_in.weight", "time_embedding.linear_1.weight",
                    "down_blocks.0.attentions.1.proj_in.weight",
                    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                    "down_blocks.2.downsamplers.0.conv.weight",
                    "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                    "up_blocks.0.upsamplers.0.conv.weight", "up_blocks.3.resnets.2.conv_shortcut.weight",
                    "conv_norm_out.weight", "conv_out.bias")
OUTPUT_LAYERS = {"conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias"}


@pytest.fixture(scope="module")
def full_size_files():
    with init_empty_weights():
        denoising = MusePoseDenoisingUNet.from_config(motion_config_from_sd(SD_IMAGE_VARIATIONS_UNET_CONFIG))
        reference = MusePoseReferenceUNet.from_config(SD_IMAGE_VARIATIONS_UNET_CONFIG)
        pose_guider = build_pose_guider()
    return release_states(denoising, reference, pose_guider)


def test_full_size_key_sets_equal_the_published_files(full_size_files):
    denoising = full_size_files["denoising_unet.pth"]
    assert len(denoising) == 686
    assert set(DENOISING_SAMPLE) <= set(denoising)
    assert not any("motion_modules" in key for key in denoising)

    motion = full_size_files["motion_module.pth"]
    assert len(motion) == 21 * 28 == 588
    assert set(motion) == {f"{module}.temporal_transformer.{suffix}" for module in MOTION_MODULES
                           for suffix in MOTION_MODULE_SUFFIXES}
    assert motion["down_blocks.0.motion_modules.0.temporal_transformer."
                  "transformer_blocks.0.ff.net.0.proj.weight"].shape == (2560, 320)
    assert motion["mid_block.motion_modules.0.temporal_transformer.proj_in.weight"].shape == (1280, 1280)

    reference = full_size_files["reference_unet.pth"]
    assert set(reference) == set(denoising) - OUTPUT_LAYERS
    assert {key: tuple(reference[key].shape) for key in reference} == {
        key: tuple(denoising[key].shape) for key in reference}

    pose_guider = full_size_files["pose_guider.pth"]
    assert list(pose_guider) == ["conv_in.weight", "conv_in.bias",
                                 *(f"blocks.{i}.{p}" for i in range(6) for p in ("weight", "bias")),
                                 "conv_out.weight", "conv_out.bias"]
    assert pose_guider["conv_in.weight"].shape == (16, 3, 3, 3)
    assert pose_guider["conv_out.weight"].shape == (320, 256, 3, 3)


def test_parameter_table_matches_the_papers_musepose_figure():
    sections = dict(parameter_table())
    base = {label: counts
            for label, counts, _ in sections["MusePose (frozen in DisPose; all four trained by MusePose):"]}
    assert base["denoising_unet"]["parameters"] == 859_520_964  # SD1.5's UNet
    # AnimateDiff v2, without tables
    assert base["motion_modules"] == {"tensors": 546, "parameters": 453_209_280}
    assert base["total"]["parameters"] == 2_173_325_524
    assert round(base["total"]["parameters"] / 2**20, 2) == 2072.64  # Table 7's "MB"
    controlnet = sections["DisPose hybrid ControlNet for MusePose (SD1.5 encoder, trainable):"][0][1]
    assert controlnet == {"tensors": 374, "parameters": 364_397_184}


def test_release_layout_files_load_back_strictly(tmp_path):
    denoising, reference, pose_guider, _ = tiny_musepose_models(seed=3)
    folder = tmp_path / "MusePose"
    folder.mkdir()
    for name, state in release_states(denoising, reference, pose_guider).items():
        torch.save(state, folder / name)
    loaded = load_musepose(folder, tiny_unet_config())
    for ours, theirs in zip(loaded, (denoising, reference, pose_guider)):
        expected = theirs.state_dict()
        got = ours.state_dict()
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[key], expected[key]) for key in expected)

    state = torch.load(folder / "reference_unet.pth")
    state.pop("mid_block.attentions.0.proj_in.weight")
    torch.save(state, folder / "reference_unet.pth")
    with pytest.raises(UserError,
                       match=r"reference_unet\.pth.*1 missing keys \(mid_block\.attentions\.0\.proj_in"):
        load_musepose(folder, tiny_unet_config())
    torch.save(torch.load(folder / "motion_module.pth"), folder / "denoising_unet.pth")
    with pytest.raises(UserError, match=r"denoising_unet\.pth holds motion-module weights"):
        load_musepose(folder, tiny_unet_config())


def test_motion_modules_normalise_each_frame_on_its_own():
    denoising, *_ = tiny_musepose_models(seed=1)
    module = denoising.down_blocks[0].motion_modules[0]
    frames = 5
    x = torch.randn(2 * frames, 32, 4, 4)
    scale = torch.rand(2 * frames, 1, 1, 1) + 0.5
    shift = torch.randn(2 * frames, 1, 1, 1)
    with torch.no_grad():
        branch = module(x, num_frames=frames) - x
        y = x * scale + shift  # a per-frame affine change, invisible after a per-frame GroupNorm
        branch_affine = module(y, num_frames=frames) - y
    torch.testing.assert_close(branch_affine, branch, atol=1e-4, rtol=1e-4)
    assert not any(key.endswith(".pe") for key in module.state_dict())  # the fixed tables are not weights


def test_reference_attention_reaches_the_conditional_half_only():
    denoising, reference, _, _ = tiny_musepose_models(seed=2)
    bank = connect_reference_attention(reference, denoising)
    assert isinstance(bank, ReferenceBank) and len(bank.states) == 0
    frames = 3
    sample = torch.randn(1, 4, frames, 8, 8).expand(2, -1, -1, -1, -1)
    context = torch.randn(1, 1, 16).expand(2, -1, -1)

    def predict(reference_latent):
        bank.clear()
        if reference_latent is not None:
            reference(reference_latent, 0, encoder_hidden_states=context[:1])
            bank.reads = [None, 0]
        return denoising(sample, 10, context, return_dict=False)[0]

    with torch.no_grad():
        plain = predict(None)
        first = predict(torch.randn(1, 4, 8, 8))
        second = predict(torch.randn(1, 4, 8, 8))
    assert len(bank.states) == 3 + 1 + 6  # spatial self-attentions of the tiny UNet: down, mid, up
    # Unconditional half: plain self-attention, the same maths in another batch layout, so only float32
    # rounding differs: about sqrt(n) * 2^-24 relative per reduction of n terms and sqrt(L) over L layers
    # (rounding errors add like a random walk); the tiny UNet makes L = 611 module calls with n <= 576.
    rounding = (611 * 576) ** 0.5 * 2.0**-24
    assert (first[0] - plain[0]).abs().max() <= rounding * plain[0].abs().max()
    assert not torch.allclose(first[1], plain[1], atol=1e-4)
    assert not torch.allclose(first[1], second[1], atol=1e-4)


def test_controlnet_copies_the_encoder_and_feeds_every_skip_connection():
    denoising, reference, *_ = tiny_musepose_models(seed=4)
    from_sd = HybridControlNetSD.from_unet(reference, point_channels=32)  # an SD1.5 UNet (the paper's init)
    assert torch.equal(from_sd.mid_block.resnets[1].conv1.weight, reference.mid_block.resnets[1].conv1.weight)
    controlnet = HybridControlNetSD.from_unet(denoising, point_channels=32)
    for name in ("conv_in", "time_embedding"):
        assert all(torch.equal(a, b) for a, b in zip(getattr(controlnet, name).state_dict().values(),
                                                     getattr(denoising, name).state_dict().values()))
    assert torch.equal(controlnet.down_blocks[1].attentions[0].proj_in.weight,
                       denoising.down_blocks[1].attentions[0].proj_in.weight)
    frames = 2
    sample = torch.randn(2, frames, 4, 8, 8)
    guidance = controlnet.encode_guidance(torch.randn(frames, 2, 64, 64), None, torch.randn(frames, 32, 4, 4),
                                          torch.ones(frames, 4, 4, dtype=torch.bool))
    with torch.no_grad():
        down, mid = controlnet(sample, 10, torch.randn(2, 1, 16), guidance=guidance)
        # Fresh zero convolutions: zero residuals, so the UNet's prediction is unchanged.
        base = denoising(sample.transpose(1, 2), 10, torch.zeros(2, 1, 16), return_dict=False)[0]
        with_residuals = denoising(sample.transpose(1, 2), 10, torch.zeros(2, 1, 16),
                                   down_block_additional_residuals=down, mid_block_additional_residual=mid,
                                   return_dict=False)[0]
    assert len(down) == 1 + 3 * (1 + 1) + 1 == 8  # conv_in + (layer + downsampler) x 3 + last block's layer
    assert all(r.shape[0] == 2 * frames and not r.abs().sum() for r in down) and not mid.abs().sum()
    torch.testing.assert_close(with_residuals, base)


def test_dispose_checkpoint_for_musepose_is_verified_strictly(tmp_path):
    *_, controlnet = tiny_musepose_models(seed=5)
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps(tiny_unet_config()))
    torch.save(controlnet.state_dict(), tmp_path / "DisPose_MusePose.pth")
    verify_checkpoint("dispose_musepose", tmp_path / "DisPose_MusePose.pth", tmp_path)
    state = controlnet.state_dict()
    state["add_embedding.linear_1.weight"] = torch.zeros(1)  # an SVD ControlNet's key
    torch.save(state, tmp_path / "DisPose_MusePose.pth")
    with pytest.raises(UserError, match=r"1 unexpected keys \(add_embedding"):
        verify_checkpoint("dispose_musepose", tmp_path / "DisPose_MusePose.pth", tmp_path)
