"""Full-size networks with random weights, built directly on the target device in the run's dtype.

Speed and memory do not depend on the weights' values, so ``dispose benchmark speed`` and ``train`` run the
real architectures without any download: every network is constructed under ``torch.device(device)`` with
torch's default dtype set to the run's dtype, so each parameter is allocated and initialised (the modules'
own initialisers) on the device in that dtype; no float32 copy is ever made on the host.  On ``device="meta"``
nothing is allocated (parameter counts).  The configurations are those of the released weights:

* MimicMotion: SVD-xt-1.1's UNet (``SVD_XT_UNET_CONFIG``) + PoseNet, temporal VAE and CLIP ViT-H/14 image
  encoder (:data:`SVD_VAE`, :data:`SVD_CLIP`, SVD-xt-1.1's ``vae/`` and ``image_encoder/config.json``),
  the EDM Euler scheduler; DisPose's hybrid ControlNet shaped after the UNet.
* MusePose: the sd-image-variations UNet config inflated with the motion modules, the reference UNet, the
  pose guider, sd-vae-ft-mse (:data:`SD_VAE`), the CLIP ViT-L/14 image encoder of sd-image-variations
  (:data:`SD_IMAGE_CLIP`); the SD1.5 hybrid ControlNet.
* The guidance stage: CMP (``resnet50_vip+mpii_liteflow``) and Stable Diffusion 1.5 for DIFT (UNet, VAE,
  CLIP ViT-L/14 text encoder :data:`SD15_TEXT`; a letters-only tokenizer, since the prompt's cost is nil).

Zero-initialised layers (the ControlNet's output convolutions) stay zero, as after ``from_unet``: that changes
no FLOP and no byte.  A base without a builder here cannot be benchmarked with random weights (``--weights``
still works); the builders are keyed by the registry's base names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

#: SVD-xt-1.1's ``vae/config.json`` and ``image_encoder/config.json`` (the parts the sizes depend on).
SVD_VAE = {"block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
           "layers_per_block": 2, "latent_channels": 4}
SVD_CLIP = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
            "patch_size": 14, "image_size": 224, "projection_dim": 1024, "hidden_act": "gelu"}
#: stabilityai/sd-vae-ft-mse (also SD1.5's ``vae/``).
SD_VAE = {"block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
          "up_block_types": ("UpDecoderBlock2D",) * 4, "layers_per_block": 2, "latent_channels": 4,
          "sample_size": 512}
#: lambdalabs/sd-image-variations-diffusers ``image_encoder/config.json`` (CLIP ViT-L/14).
SD_IMAGE_CLIP = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                 "num_attention_heads": 16, "patch_size": 14, "image_size": 224, "projection_dim": 768,
                 "hidden_act": "quick_gelu"}
#: SD1.5's ``text_encoder/config.json`` (CLIP ViT-L/14 text model).
SD15_TEXT = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
             "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
             "projection_dim": 768}
#: Pipeline components that are frozen pretrained encoders in every base (not counted as the base's
#: trainable parameters; the paper's Table 7 counts the rest, and DisPose's ControlNet on its own row).
FROZEN_ENCODERS = ("vae", "image_encoder")


@contextlib.contextmanager
def on_device(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Modules constructed inside get their parameters on ``device`` in ``dtype`` (initialised there)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _finish(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    """Eval mode, no gradients; the few tensors a library creates on the CPU in float32 regardless move over
    (small: positional tables, norms' buffers)."""
    torch.nn.Module.to(module, device=device, dtype=dtype)  # ModelMixin.to warns on dtype casts
    return module.eval().requires_grad_(False)


def mimicmotion_pipeline(dispose: bool, dtype: torch.dtype, device):
    """DisPoseMimicMotionPipeline at full size with random weights (module docstring)."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from dispose.bases.mimicmotion.pipeline import DisPoseMimicMotionPipeline
    from dispose.bases.mimicmotion.tiny import SVD_SCHEDULER
    from dispose.bases.mimicmotion.weights import image_processor_class
    from dispose.models.controlnet_svd import HybridControlNetSVD
    from dispose.models.pose_net import PoseNet
    from dispose.models.unet_mimicmotion import SVD_XT_UNET_CONFIG, MimicMotionUNet

    with on_device(device, dtype):
        unet = MimicMotionUNet.from_config(SVD_XT_UNET_CONFIG)
        pose_net = PoseNet(noise_latent_channels=unet.config.block_out_channels[0])
        controlnet = HybridControlNetSVD.from_unet(unet, load_weights_from_unet=False) if dispose else None
        vae = AutoencoderKLTemporalDecoder(**SVD_VAE)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**SVD_CLIP))
    modules = [m for m in (unet, pose_net, controlnet, vae, image_encoder) if m is not None]
    for module in modules:
        _finish(module, device, dtype)
    return DisPoseMimicMotionPipeline(vae=vae, image_encoder=image_encoder, unet=unet, pose_net=pose_net,
                                      scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER), controlnet=controlnet,
                                      feature_extractor=image_processor_class()())


def musepose_pipeline(dispose: bool, dtype: torch.dtype, device):
    """DisPoseMusePosePipeline at full size with random weights (module docstring)."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from dispose.bases.musepose.pipeline import MUSEPOSE_SCHEDULER, DisPoseMusePosePipeline
    from dispose.bases.musepose.weights import SD_IMAGE_VARIATIONS_UNET_CONFIG
    from dispose.models.controlnet_sd import HybridControlNetSD
    from dispose.models.musepose.denoising_unet import MusePoseDenoisingUNet, motion_config_from_sd
    from dispose.models.musepose.reference import MusePoseReferenceUNet
    from dispose.models.musepose.release_files import build_pose_guider

    config = dict(SD_IMAGE_VARIATIONS_UNET_CONFIG)
    with on_device(device, dtype):
        denoising = MusePoseDenoisingUNet.from_config(motion_config_from_sd(config))
        reference = MusePoseReferenceUNet.from_config(config)
        pose_guider = build_pose_guider(denoising.config.block_out_channels[0])
        controlnet = HybridControlNetSD.from_unet(denoising, load_weights_from_unet=False) if dispose else None
        vae = AutoencoderKL(**SD_VAE)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**SD_IMAGE_CLIP))
    for module in (denoising, reference, pose_guider, controlnet, vae, image_encoder):
        if module is not None:
            _finish(module, device, dtype)
    return DisPoseMusePosePipeline(vae=vae, image_encoder=image_encoder, reference_unet=reference,
                                   denoising_unet=denoising, pose_guider=pose_guider,
                                   scheduler=DDIMScheduler(**MUSEPOSE_SCHEDULER), controlnet=controlnet)


#: Registry base name -> ``f(dispose, dtype, device) -> pipeline`` at full size with random weights.
RANDOM_PIPELINES: dict[str, Callable] = {"mimicmotion": mimicmotion_pipeline, "musepose": musepose_pipeline}


def random_pipeline(base: str, dispose: bool, dtype: torch.dtype, device):
    """The base's pipeline at full size with random weights on ``device`` in ``dtype``."""
    from dispose.errors import UserError

    if base not in RANDOM_PIPELINES:
        raise UserError(f"base {base!r} has no full-size random networks; known: {', '.join(RANDOM_PIPELINES)} "
                        "(pass --weights to time its real weights)")
    return RANDOM_PIPELINES[base](dispose, dtype, device)


def random_cmp(dtype: torch.dtype, device):
    """CMP at full size with random weights (run in float32 like the loaded one; ``dtype`` unused on purpose:
    :func:`dispose.guidance.cmp.load_cmp` keeps CMP in float32 whatever the run's dtype)."""
    del dtype
    from dispose.guidance.cmp import CMP

    with on_device(device, torch.float32):
        return CMP().eval().requires_grad_(False)


def random_dift(dtype: torch.dtype, device):
    """A DIFT featurizer on Stable Diffusion 1.5 at full size with random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dispose.guidance.dift import DiftFeaturizer
    from dispose.guidance.tiny import letters_tokenizer

    with on_device(device, dtype):
        unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64)
        vae = AutoencoderKL(**SD_VAE)
        vae.decoder = None  # only the encoder is used (as DiftFeaturizer.from_pretrained)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT))
    for module in (unet, vae, text_encoder):
        _finish(module, device, dtype)
    return DiftFeaturizer(unet, vae, text_encoder, letters_tokenizer())


def parameters(module: torch.nn.Module | None) -> int:
    """Parameter count of ``module`` (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def trainable_counts(pipeline) -> dict[str, int]:
    """Table 7's "trainable parameters": the base's networks (every component but the frozen encoders and
    the ControlNet) and DisPose's ControlNet, counted on the pipeline's own modules."""
    modules = {name: value for name, value in pipeline.components.items() if isinstance(value, torch.nn.Module)}
    base = sum(parameters(m) for name, m in modules.items() if name not in (*FROZEN_ENCODERS, "controlnet"))
    return {"base": base, "dispose": parameters(modules.get("controlnet"))}


def tiny_weights(base: str, folder) -> None:
    """Write the base's tiny random test weights (release layout) into ``folder``, for ``--tiny`` runs."""
    from dispose.errors import UserError

    if base == "mimicmotion":
        from dispose.bases.mimicmotion.tiny import build_tiny_weights

        build_tiny_weights(folder)
    elif base == "musepose":
        from dispose.bases.musepose.tiny import build_tiny_musepose_weights

        build_tiny_musepose_weights(folder)
    else:
        raise UserError(f"base {base!r} has no tiny test weights; known: mimicmotion, musepose")
