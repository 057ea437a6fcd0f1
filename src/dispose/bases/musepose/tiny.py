"""Tiny random MusePose-shaped weights in the release's layout (:mod:`dispose.bases.musepose.weights`), for
tests and benchmarks.

The networks have the SD1.5 layout at small widths (UNet blocks of 32 channels, latents of 8x8 for 64x64
frames) and are written as the real files are: ``MusePose/`` with the four release files in the release's key
names (motion modules in AnimateDiff's names, with their position tables), ``sd-image-variations-diffusers/
unet/config.json``, ``image_encoder/``, ``sd-vae-ft-mse/``, ``DisPose_MusePose.pth`` and an SD1.5 folder for
DIFT.  Loading them runs exactly the code that loads the real weights.  Every parameter is random, the
zero-initialised output layers included, so that every input matters.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dispose.guidance.tiny import DIFT_CHANNELS, build_tiny_sd15

WIDTH = 32  # UNet block width (the motion modules' GroupNorm has 32 groups, as the release's)
EMBED = 16  # CLIP projection = cross-attention width


def tiny_unet_config() -> dict:
    """An sd-image-variations-style ``unet/config.json`` at tiny size (16 norm groups: the lowest level is 1x1
    and the reference UNet runs on one image, so 32 groups of one channel would leave one value per group)."""
    return {"_class_name": "UNet2DConditionModel", "sample_size": 8, "in_channels": 4, "out_channels": 4,
            "layers_per_block": 1, "block_out_channels": [WIDTH] * 4, "attention_head_dim": 2,
            "cross_attention_dim": EMBED, "norm_num_groups": 16,
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3}


def _randomise(module: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    with torch.no_grad():
        for param in module.parameters():
            if not param.abs().sum():
                param.normal_(0, std)
    return module


def tiny_musepose_models(seed: int = 0):
    """(denoising UNet, reference UNet, pose guider, ControlNet) at tiny size, every parameter random."""
    from dispose.models.controlnet_sd import HybridControlNetSD
    from dispose.models.musepose.denoising_unet import MusePoseDenoisingUNet, motion_config_from_sd
    from dispose.models.musepose.reference import MusePoseReferenceUNet
    from dispose.models.musepose.release_files import build_pose_guider

    torch.manual_seed(seed)
    config = tiny_unet_config()
    denoising = _randomise(MusePoseDenoisingUNet.from_config(motion_config_from_sd(config)))
    reference = MusePoseReferenceUNet.from_config(config)
    pose_guider = _randomise(build_pose_guider(WIDTH))
    controlnet = _randomise(HybridControlNetSD.from_unet(denoising, point_channels=DIFT_CHANNELS))
    return denoising, reference, pose_guider, controlnet


def _clip_and_vae(root: Path) -> None:
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                              num_attention_heads=2, image_size=224, patch_size=32, projection_dim=EMBED)
    CLIPVisionModelWithProjection(config).save_pretrained(root / "image_encoder")
    AutoencoderKL(block_out_channels=(32,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1,
                  latent_channels=4).save_pretrained(root / "sd-vae-ft-mse")


def build_tiny_musepose_weights(root: str | Path, *, seed: int = 0, dift: bool = True) -> Path:
    """Write tiny random MusePose weights in the release layout under ``root`` (and, with ``dift``, the tiny
    SD1.5 folder DisPose's DIFT features need); returns ``root``."""
    from dispose.bases.musepose.weights import DISPOSE_MUSEPOSE_FILE
    from dispose.models.musepose.release_files import release_states

    root = Path(root)
    torch.manual_seed(seed)
    _clip_and_vae(root)
    if dift:
        build_tiny_sd15(root / "stable-diffusion-v1-5")
    unet_folder = root / "sd-image-variations-diffusers" / "unet"
    unet_folder.mkdir(parents=True, exist_ok=True)
    (unet_folder / "config.json").write_text(json.dumps(tiny_unet_config(), indent=2))
    denoising, reference, pose_guider, controlnet = tiny_musepose_models(seed)
    (root / "MusePose").mkdir(exist_ok=True)
    for name, state in release_states(denoising, reference, pose_guider).items():
        torch.save(state, root / "MusePose" / name)
    torch.save(controlnet.state_dict(), root / DISPOSE_MUSEPOSE_FILE)
    return root
