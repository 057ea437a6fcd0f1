"""MusePose's networks at full size with random weights, built on the device in the run's dtype.

For ``dispose benchmark`` and parameter counts on the meta device.  The configurations are the release's:
the sd-image-variations UNet config inflated with the motion modules (denoising UNet), the reference UNet,
the pose guider, sd-vae-ft-mse (:data:`SD_VAE`) and the CLIP ViT-L/14 image encoder of sd-image-variations
(:data:`SD_IMAGE_CLIP`); DisPose's SD1.5 hybrid ControlNet shaped after the denoising UNet.
"""

from __future__ import annotations

import torch

#: stabilityai/sd-vae-ft-mse (also SD1.5's ``vae/``).
SD_VAE = {"block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
          "up_block_types": ("UpDecoderBlock2D",) * 4, "layers_per_block": 2, "latent_channels": 4,
          "sample_size": 512}
#: lambdalabs/sd-image-variations-diffusers ``image_encoder/config.json`` (CLIP ViT-L/14).
SD_IMAGE_CLIP = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                 "num_attention_heads": 16, "patch_size": 14, "image_size": 224, "projection_dim": 768,
                 "hidden_act": "quick_gelu"}


def random_pipeline(dispose: bool, dtype: torch.dtype, device):
    """:class:`~dispose.bases.musepose.pipeline.DisPoseMusePosePipeline` with random weights, every parameter
    created on ``device`` in ``dtype`` (``dispose=False``: no ControlNet)."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from dispose.bases.musepose.pipeline import MUSEPOSE_SCHEDULER, DisPoseMusePosePipeline
    from dispose.bases.musepose.weights import SD_IMAGE_VARIATIONS_UNET_CONFIG
    from dispose.devices import on_device
    from dispose.models.controlnet_sd import HybridControlNetSD
    from dispose.models.musepose.denoising_unet import MusePoseDenoisingUNet, motion_config_from_sd
    from dispose.models.musepose.reference import MusePoseReferenceUNet
    from dispose.models.musepose.release_files import build_pose_guider

    config = dict(SD_IMAGE_VARIATIONS_UNET_CONFIG)
    with on_device(device, dtype):
        denoising = MusePoseDenoisingUNet.from_config(motion_config_from_sd(config))
        reference = MusePoseReferenceUNet.from_config(config)
        pose_guider = build_pose_guider(denoising.config.block_out_channels[0])
        controlnet = (HybridControlNetSD.from_unet(denoising, load_weights_from_unet=False) if dispose
                      else None)
        vae = AutoencoderKL(**SD_VAE)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**SD_IMAGE_CLIP))
    for module in (denoising, reference, pose_guider, controlnet, vae, image_encoder):
        if module is not None:  # nn.Module.to: a few tensors a library makes on the CPU regardless move over
            torch.nn.Module.to(module, device=device, dtype=dtype).eval().requires_grad_(False)
    return DisPoseMusePosePipeline(vae=vae, image_encoder=image_encoder, reference_unet=reference,
                                   denoising_unet=denoising, pose_guider=pose_guider,
                                   scheduler=DDIMScheduler(**MUSEPOSE_SCHEDULER), controlnet=controlnet)
