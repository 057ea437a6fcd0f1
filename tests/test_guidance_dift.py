"""DIFT featurizer on tiny SD-shaped models built in code (CPU, no weights)."""

from __future__ import annotations

import string

import numpy as np
import pytest
import torch
from precision import HALF_PRECISION_FACTOR, emulated, mean_error

from dispose.errors import UserError
from dispose.guidance.correspondence import correspondence_map, point_embeddings
from dispose.guidance.dift import (
    NULL_PROMPT_SETTING,
    REFERENCE_SETTING,
    DiftFeaturizer,
    DiftSetting,
    module_fingerprint,
)

SMALL = DiftSetting(ensemble_size=4)


def _tokenizer():
    from transformers import CLIPTokenizer

    letters = list(string.ascii_lowercase)
    tokens = ["<|startoftext|>", "<|endoftext|>"] + letters + [c + "</w>" for c in letters]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77)


def _components():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16, 32, 32), norm_num_groups=4, cross_attention_dim=16,
        attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                          "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=2,
        block_out_channels=(4, 4, 4, 4), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text = CLIPTextModel(CLIPTextConfig(vocab_size=54, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2,
                                        max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                        pad_token_id=1))
    return unet, vae, text, _tokenizer()


@pytest.fixture(scope="module")
def components():
    return _components()


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)


def _count_calls(module) -> tuple[list[int], object]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    return calls, module.register_forward_pre_hook(hook)


def test_shapes_match_up_block(components, image):
    featurizer = DiftFeaturizer(*components)
    ref = featurizer(image, SMALL)
    assert ref.shape == (32, 4, 6)  # up block 1: 1/16 of 64x96
    null = featurizer(image, DiftSetting(timestep=0, up_ft_index=2, prompt="", ensemble_size=2))
    assert null.shape == (16, 8, 12)  # up block 2: 1/8
    assert ref.dtype == torch.float32 and torch.isfinite(ref).all()
    assert REFERENCE_SETTING == DiftSetting(261, 1, "photo of a human", 8)
    assert NULL_PROMPT_SETTING == DiftSetting(0, 2, "", 8)


def test_seeded_and_split_invariant(components, image):
    featurizer = DiftFeaturizer(*components)
    a = featurizer(image, SMALL, seed=3)
    assert torch.equal(a, featurizer(image, SMALL, seed=3))
    assert not torch.allclose(a, featurizer(image, SMALL, seed=4))
    split = DiftFeaturizer(*components, batch_size=3)(image, SMALL, seed=3)
    torch.testing.assert_close(split, a, atol=1e-5, rtol=1e-5)


def test_early_stop_equals_full_forward(components, image):
    from diffusers.utils.torch_utils import randn_tensor

    unet, vae, text, tokenizer = components
    featurizer = DiftFeaturizer(unet, vae, text, tokenizer)
    later = [_count_calls(block) for block in unet.up_blocks[2:]] + [_count_calls(unet.conv_out)]
    wanted, wanted_handle = _count_calls(unet.up_blocks[1])
    try:
        ours = featurizer(image, SMALL, seed=7)
    finally:
        for _, handle in later:
            handle.remove()
        wanted_handle.remove()
    assert wanted[0] == 1  # one UNet batch for the whole ensemble
    assert all(calls[0] == 0 for calls, _ in later)

    # Reference: the full UNet forward, recording up block 1's output, same random stream.
    generator = torch.Generator("cpu").manual_seed(7)
    with torch.no_grad():
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
        posterior = vae.encode(pixels).latent_dist
        draws = randn_tensor((4, *posterior.mean.shape[1:]), generator=generator)
        latents = (posterior.mean + posterior.std * draws) * vae.config.scaling_factor
        noise = randn_tensor(latents.shape, generator=generator)
        t = torch.tensor(261)
        noisy = featurizer.scheduler.add_noise(latents, noise, t)
        ids = tokenizer("photo of a human", padding="max_length", max_length=77,
                        return_tensors="pt").input_ids
        embeds = text(ids).last_hidden_state.expand(4, -1, -1)
        recorded = []
        handle = unet.up_blocks[1].register_forward_hook(lambda _m, _a, out: recorded.append(out))
        try:
            unet(noisy, t, encoder_hidden_states=embeds)
        finally:
            handle.remove()
    torch.testing.assert_close(ours, recorded[0].mean(0), atol=1e-5, rtol=1e-5)


def test_cache_hit_skips_unet(components, image, tmp_path):
    unet = components[0]
    first = DiftFeaturizer(*components, cache_dir=tmp_path)(image, SMALL)
    assert len(list(tmp_path.glob("dift-*.safetensors"))) == 1
    calls, handle = _count_calls(unet)
    try:
        again = DiftFeaturizer(*components, cache_dir=tmp_path)(image, SMALL)
        assert calls[0] == 0
        assert torch.equal(first, again)
        DiftFeaturizer(*components, cache_dir=tmp_path)(image, SMALL, seed=1)  # other seed: miss
        assert calls[0] == 1
    finally:
        handle.remove()
    assert len(list(tmp_path.glob("dift-*.safetensors"))) == 2
    assert not list(tmp_path.glob(".*partial*"))


def test_cache_key_tracks_inputs(components, image):
    featurizer = DiftFeaturizer(*components)
    key = featurizer.cache_key(image, SMALL, 0)
    assert key == DiftFeaturizer(*components).cache_key(image.copy(), SMALL, 0)
    other = image.copy()
    other[0, 0, 0] ^= 1
    assert featurizer.cache_key(other, SMALL, 0) != key
    assert featurizer.cache_key(image, DiftSetting(timestep=260, ensemble_size=4), 0) != key
    assert featurizer.cache_key(image, DiftSetting(prompt="photo of a cat", ensemble_size=4), 0) != key


def test_fingerprint_sees_weight_changes():
    unet = _components()[0]
    before = module_fingerprint(unet)
    assert module_fingerprint(unet) == before
    with torch.no_grad():
        unet.conv_in.weight.view(-1)[0] += 1.0
    assert module_fingerprint(unet) != before


def test_from_pretrained_folder(components, image, tmp_path):
    unet, vae, text, tokenizer = components
    for name, part in (("unet", unet), ("vae", vae), ("text_encoder", text), ("tokenizer", tokenizer)):
        part.save_pretrained(tmp_path / name)
    loaded = DiftFeaturizer.from_pretrained(tmp_path)
    expected = DiftFeaturizer(*components)(image, SMALL)
    torch.testing.assert_close(loaded(image, SMALL), expected)
    assert loaded.vae.decoder is None
    assert loaded.model_fingerprint() == DiftFeaturizer(*components).model_fingerprint()  # decoder not hashed

    fp16_only = tmp_path / "fp16_only"  # a snapshot with only the fp16 variant, as the release loads
    for name, part in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        part.save_pretrained(fp16_only / name, variant="fp16")
    tokenizer.save_pretrained(fp16_only / "tokenizer")
    assert not list((fp16_only / "unet").glob("diffusion_pytorch_model.safetensors"))
    torch.testing.assert_close(DiftFeaturizer.from_pretrained(fp16_only)(image, SMALL), expected)


def test_bad_inputs(components, image, tmp_path):
    featurizer = DiftFeaturizer(*components)
    with pytest.raises(UserError, match="stable-diffusion-v1-5"):
        DiftFeaturizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="multiples of 8"):
        featurizer(image[:60], SMALL)
    with pytest.raises(ValueError, match="uint8"):
        featurizer(image.astype(np.float32), SMALL)
    with pytest.raises(ValueError, match="up_ft_index"):
        featurizer(image, DiftSetting(up_ft_index=4))
    with pytest.raises(ValueError, match="timestep"):
        featurizer(image, DiftSetting(timestep=1000))


def test_bfloat16_models(image):
    """Within twice the error of bfloat16 rounding emulated in float32 (the bound of tests/precision.py)."""
    unet, vae, text, tokenizer = _components()
    reference = DiftFeaturizer(unet, vae, text, tokenizer)(image, SMALL)
    emulation = DiftFeaturizer(*(emulated(part, torch.bfloat16) for part in (unet, vae, text)), tokenizer)(
        image, SMALL)
    half = [part.to(torch.bfloat16) for part in (unet, vae, text)]
    features = DiftFeaturizer(*half, tokenizer)(image, SMALL)
    assert features.dtype == torch.bfloat16
    assert mean_error(features, reference) <= HALF_PRECISION_FACTOR * mean_error(emulation, reference)


def test_features_feed_correspondence(components, image):
    features = DiftFeaturizer(*components)(image, SMALL)  # (32, 4, 6) for a 96x64 image
    points = torch.rand(18, 2)
    visible = torch.rand(18) > 0.2
    embeddings = point_embeddings(features, points, visible, (96, 64))
    grid, mask = correspondence_map(embeddings, torch.rand(5, 18, 2), torch.ones(5, 18, dtype=torch.bool),
                                    (96, 64))
    assert embeddings.shape == (18, 32)
    assert grid.shape == (5, 32, 4, 6) and mask.shape == (5, 4, 6)  # same 1/16 grid as the DIFT map
