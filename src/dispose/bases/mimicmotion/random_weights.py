"""MimicMotion's networks at full size with random weights, built on the device in the run's dtype.

For ``dispose benchmark`` (speed and memory do not depend on the weights' values) and parameter counts on
the meta device.  The configurations are SVD-xt-1.1's: the UNet (``SVD_XT_UNET_CONFIG``) and PoseNet, the
temporal VAE and the CLIP ViT-H/14 image encoder (:data:`SVD_VAE`, :data:`SVD_CLIP`, from its
``vae/`` and ``image_encoder/config.json``), the EDM Euler scheduler; DisPose's hybrid ControlNet shaped after
the UNet (zero output convolutions, as ``from_unet`` makes them).
"""

from __future__ import annotations

import torch

#: SVD-xt-1.1's ``vae/config.json`` and ``image_encoder/config.json`` (the parts the sizes depend on).
SVD_VAE = {"block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
           "layers_per_block": 2, "latent_channels": 4}
SVD_CLIP = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
            "num_attention_heads": 16, "patch_size": 14, "image_size": 224, "projection_dim": 1024,
            "hidden_act": "gelu"}


def random_pipeline(dispose: bool, dtype: torch.dtype, device):
    """:class:`~dispose.bases.mimicmotion.pipeline.DisPoseMimicMotionPipeline` with random weights, every
    parameter created on ``device`` in ``dtype`` (``dispose=False``: no ControlNet)."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from dispose.bases.mimicmotion.pipeline import DisPoseMimicMotionPipeline
    from dispose.bases.mimicmotion.tiny import SVD_SCHEDULER
    from dispose.bases.mimicmotion.weights import image_processor_class
    from dispose.devices import on_device
    from dispose.models.controlnet_svd import HybridControlNetSVD
    from dispose.models.pose_net import PoseNet
    from dispose.models.unet_mimicmotion import SVD_XT_UNET_CONFIG, MimicMotionUNet

    with on_device(device, dtype):
        unet = MimicMotionUNet.from_config(SVD_XT_UNET_CONFIG)
        pose_net = PoseNet(noise_latent_channels=unet.config.block_out_channels[0])
        controlnet = (HybridControlNetSVD.from_unet(unet, load_weights_from_unet=False) if dispose
                      else None)
        vae = AutoencoderKLTemporalDecoder(**SVD_VAE)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**SVD_CLIP))
    for module in (unet, pose_net, controlnet, vae, image_encoder):
        if module is not None:  # nn.Module.to: a few tensors a library makes on the CPU regardless move over
            torch.nn.Module.to(module, device=device, dtype=dtype).eval().requires_grad_(False)
    return DisPoseMimicMotionPipeline(vae=vae, image_encoder=image_encoder, unet=unet, pose_net=pose_net,
                                      scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER),
                                      controlnet=controlnet, feature_extractor=image_processor_class()())
