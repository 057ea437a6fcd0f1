"""Tiny random weights in the release layout (:mod:`dispose.pipelines.weights`), for tests and benchmarks.

Everything is built in code with small widths (latents of 8x8 for 64x64 frames) and saved the way the
real files are: SVD folder (VAE, CLIP image encoder, scheduler, feature extractor, UNet config),
``MimicMotion_1-1.pth`` (``unet.*`` + ``pose_net.*``), ``DisPose.pth``, an SD1.5 folder for DIFT, and a
random CMP ``cmp/ckpt_iter_42000.pth.tar`` (the real network's size, about 110 MB: CMP's configuration is
fixed; saved as CMP's trainer saves, ``module.`` keys without BatchNorm counters) so that the ``cmp`` dense
field runs in training and inference.  Loading them goes through exactly the code that loads real weights.
No detector weights: use the MediaPipe detector with them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dispose.guidance.tiny import DIFT_CHANNELS, build_tiny_sd15

#: SVD-xt-1.1's scheduler settings (EDM: Karras sigmas, v-prediction, continuous timesteps).
SVD_SCHEDULER = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "v_prediction",
    "sigma_max": 700.0, "sigma_min": 0.002, "steps_offset": 1, "timestep_spacing": "leading",
    "timestep_type": "continuous", "use_karras_sigmas": True,
}
WIDTH = 32  # UNet block width (GroupNorm needs multiples of 32)
EMBED = 16  # CLIP projection = cross-attention width


def tiny_unet_config() -> dict:
    return {
        "sample_size": 8, "in_channels": 8, "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
        "up_block_types": ("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
        "block_out_channels": (WIDTH,) * 4, "addition_time_embed_dim": 4,
        "projection_class_embeddings_input_dim": 12, "layers_per_block": 1, "cross_attention_dim": EMBED,
        "transformer_layers_per_block": 1, "num_attention_heads": (2, 2, 2, 2), "num_frames": 16,
    }


def _svd(folder: Path) -> None:
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from dispose.bases.mimicmotion.weights import image_processor_class

    AutoencoderKLTemporalDecoder(block_out_channels=(32,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
                                 layers_per_block=1, latent_channels=4).save_pretrained(folder / "vae")
    config = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                              num_attention_heads=2, image_size=224, patch_size=32, projection_dim=EMBED)
    CLIPVisionModelWithProjection(config).save_pretrained(folder / "image_encoder")
    EulerDiscreteScheduler(**SVD_SCHEDULER).save_pretrained(folder / "scheduler")
    image_processor_class()().save_pretrained(folder / "feature_extractor")


def tiny_models(controlnet: str = "random", seed: int = 0):
    """(unet, pose_net, controlnet) of ``dispose.models`` at tiny size; ``controlnet`` "random" (every
    parameter random, so the residuals matter), "fresh" (as constructed: zero output convolutions)."""
    from dispose.models.controlnet_svd import HybridControlNetSVD
    from dispose.models.pose_net import PoseNet
    from dispose.models.unet_mimicmotion import MimicMotionUNet

    torch.manual_seed(seed)
    unet = MimicMotionUNet(**tiny_unet_config())
    pose_net = PoseNet(noise_latent_channels=WIDTH)
    with torch.no_grad():  # PoseNet's projection starts at zero: make the pose matter
        for param in pose_net.parameters():
            if not param.abs().sum():
                param.normal_(0, 0.05)
    control = HybridControlNetSVD.from_unet(unet, point_channels=DIFT_CHANNELS)
    if controlnet == "random":
        with torch.no_grad():
            for param in control.parameters():
                if not param.abs().sum():
                    param.normal_(0, 0.05)
    elif controlnet != "fresh":
        raise ValueError(f"controlnet must be 'random' or 'fresh', got {controlnet!r}")
    return unet, pose_net, control


def _cmp(path: Path) -> None:
    from dispose.guidance.cmp import CMP

    state = {f"module.{key}": value for key, value in CMP().state_dict().items()
             if not key.endswith("num_batches_tracked")}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 0, "state_dict": state}, path)


def build_tiny_weights(root: str | Path, *, controlnet: str = "random", seed: int = 0) -> Path:
    """Write tiny random weights in the release layout under ``root``; returns ``root``."""
    root = Path(root)
    svd = root / "stable-video-diffusion-img2vid-xt-1-1"
    torch.manual_seed(seed)
    _svd(svd)
    build_tiny_sd15(root / "stable-diffusion-v1-5")
    unet, pose_net, control = tiny_models(controlnet, seed)
    unet.save_config(svd / "unet")
    state = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    state.update({f"pose_net.{k}": v for k, v in pose_net.state_dict().items()})
    torch.save(state, root / "MimicMotion_1-1.pth")
    torch.save(control.state_dict(), root / "DisPose.pth")
    _cmp(root / "cmp" / "ckpt_iter_42000.pth.tar")
    return root
