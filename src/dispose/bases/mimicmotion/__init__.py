"""MimicMotion (Stable Video Diffusion) as a DisPose base: its weights, loader, sampling call and tables.

Sampling (:func:`sample`) hands the pipeline
(:class:`~dispose.bases.mimicmotion.pipeline.DisPoseMimicMotionPipeline`) the reference and skeletons with the
release script's pixel arithmetic: it runs with torch's default dtype set to fp16 (float32 with
``--no_use_float16``), so the skeletons become ``uint8 / 127.5 - 1`` computed in that dtype, and the reference
reaches the pipeline after a round trip ``((uint8 / 127.5 - 1) + 1) * 127.5`` truncated back to uint8, which
lowers some dark grey levels by one (in fp16: 1-8, 18-21 and 36-43; in float32: 63 of the 256 levels).  Both
the CLIP embedding and the VAE latent see that reference; DIFT, the pose detector and the side-by-side video
see the original.  We do this arithmetic in fp16 when the models run in fp16, else in float32.  fp16 on CUDA
samples and decodes under ``torch.autocast("cuda")``, as the release's script does (norms and a few other ops
then run in float32).

``match_release`` also turns on the temporal cross-attention context order of diffusers 0.27, which the
release pins (:mod:`dispose.models.release_compat`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from dispose.bases.mimicmotion import random_weights, tiny, weights
from dispose.bases.mimicmotion.training import MimicMotionBase
from dispose.bases.registry import Base, SamplingRequest
from dispose.pipelines.weights import Component, model_files

COMPONENTS = (
    Component("svd", "--svd", ("stable-video-diffusion-img2vid-xt-1-1",),
              "stabilityai/stable-video-diffusion-img2vid-xt-1-1", None,
              (("vae/config.json",), model_files("vae", ("diffusion_pytorch_model",)),
               ("image_encoder/config.json",), model_files("image_encoder", ("model", "pytorch_model")),
               ("scheduler/scheduler_config.json",), ("feature_extractor/preprocessor_config.json",),
               ("unet/config.json",)),
              "Stable Video Diffusion img2vid-xt 1.1 (VAE, CLIP image encoder, scheduler, UNet config)"),
    Component("mimicmotion", "--mimicmotion", ("MimicMotion_1-1.pth",), "tencent/MimicMotion",
              "MimicMotion_1-1.pth", what="MimicMotion 1.1 UNet + PoseNet"),
    Component("dispose", "--dispose-ckpt", ("DisPose.pth",), "lihxxx/DisPose", "DisPose.pth",
              what="DisPose hybrid ControlNet"),
)


def load(paths, dispose: bool, dtype: torch.dtype, device):
    return weights.load_pipeline(paths, dispose=dispose, dtype=dtype, device=device)


def release_autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """``torch.autocast("cuda")`` for fp16 models on CUDA (the release's script); no change elsewhere."""
    if device.type == "cuda" and dtype == torch.float16:
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def release_reference(reference: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """The reference (H, W, 3) uint8 as the release's script hands it to its pipeline, for models running in
    ``dtype`` (module docstring; the skeletons' conversion is the pipeline's, per tile)."""
    arithmetic = torch.float16 if dtype == torch.float16 else torch.float32
    ref = torch.from_numpy(reference).to(arithmetic) / 127.5 - 1.0
    return ((ref + 1.0) * 127.5).to(torch.uint8).numpy()


def sample(pipeline, request: SamplingRequest) -> Iterator[np.ndarray]:
    """Sample the latents, then decode and yield them as uint8 a decoding chunk at a time."""
    from dispose.models.release_compat import release_temporal_context

    job, runtime = request.settings, request.runtime
    device, dtype = pipeline._execution_device, pipeline.unet.dtype
    low, high = job.guidance_range
    models = [pipeline.unet, pipeline.controlnet]
    with release_autocast(device, dtype), release_temporal_context(models, enabled=job.match_release):
        latents = pipeline(
            release_reference(request.reference, dtype), request.skeletons, request.guidance,
            tile_size=job.num_frames, tile_overlap=job.frames_overlap,
            num_inference_steps=job.num_inference_steps, min_guidance_scale=low, max_guidance_scale=high,
            fps=job.conditioning_fps, motion_bucket_id=job.motion_bucket_id,
            noise_aug_strength=job.noise_aug_strength, controlnet_conditioning_scale=job.controlnet_scale,
            controlnet_interval=job.controlnet_interval, decode_chunk_size=job.decode_chunk_size,
            cfg_mode=runtime.cfg_mode,
            cache_guidance=runtime.cache_guidance, guidance_cache_mb=runtime.guidance_cache_mb,
            generator=request.generator, output_type="latent", keep_reference=True,
            progress_bar=request.progress_bar, callback_on_step_end=request.callback_on_step_end).frames
        # the reference frame is decoded with the first chunk (the VAE decodes chunks), then dropped
        yield from pipeline.iter_frames(latents, job.decode_chunk_size, request.progress_bar, skip=1)


def tiles(num_frames: int, settings) -> list[list[int]]:
    from dispose.pipelines.tiling import tile_indices

    return tile_indices(num_frames, settings.num_frames, settings.frames_overlap)


def sampling_steps(num_frames: int, settings) -> int:
    """One unit per tile and step."""
    return settings.num_inference_steps * len(tiles(num_frames, settings))


def steps_per_video(num_frames: int, settings) -> int:
    """One unit per tile and step, one per decoded chunk."""
    return sampling_steps(num_frames, settings) + -(-num_frames // settings.decode_chunk_size)


#: Top-level parts of the hybrid ControlNet, with what they are.
CONTROLNET_PARTS = (
    ("conv_in", "input conv (copied from the UNet)"),
    ("time_embedding", "timestep embedding (copied)"),
    ("add_embedding", "added-time-ids embedding"),
    ("down_blocks", "encoder down blocks (copied)"),
    ("mid_block", "mid block (copied)"),
    ("controlnet_down_blocks", "zero 1x1 convs, skips"),
    ("controlnet_mid_block", "zero 1x1 conv, mid"),
    ("controlnet_cond_embedding", "motion encoder (Eq. 5)"),
    ("point_adapter", "point encoder (Eq. 7)"),
)


def _count(module) -> tuple[int, int]:
    state = module.state_dict()
    return len(state), sum(tensor.numel() for tensor in state.values())


def parameter_counts(config: str | Path | None = None) -> list:
    """Tensor and parameter counts of the full-size networks, built empty: the hybrid ControlNet (total and
    per part), MimicMotion's UNet and PoseNet, for SVD-xt-1.1's UNet config or the one at ``config``."""
    from accelerate import init_empty_weights

    from dispose.bases.mimicmotion.weights import read_unet_config
    from dispose.models.controlnet_svd import HybridControlNetSVD
    from dispose.models.pose_net import PoseNet
    from dispose.models.unet_mimicmotion import MimicMotionUNet

    with init_empty_weights():
        unet = MimicMotionUNet.from_config(read_unet_config(config))
        controlnet = HybridControlNetSVD.from_unet(unet, load_weights_from_unet=False)
        pose_net = PoseNet(noise_latent_channels=unet.config.block_out_channels[0])
    return [
        ("DisPose hybrid ControlNet (DisPose.pth, trainable)",
         [("total", *_count(controlnet), "")] + [(name, *_count(getattr(controlnet, name)), note)
                                                 for name, note in CONTROLNET_PARTS]),
        ("MimicMotion (MimicMotion_1-1.pth, frozen in DisPose)",
         [("unet", *_count(unet), "SVD UNet"), ("pose_net", *_count(pose_net), "PoseNet")]),
    ]


def verify_checkpoint(kind: str, path: Path, config: str | Path | None = None) -> None:
    """Load a checkpoint file of ``kind`` ("mimicmotion" or "dispose") strictly into its network."""
    from accelerate import init_empty_weights

    from dispose.bases.mimicmotion.weights import load_controlnet, load_mimicmotion, read_unet_config
    from dispose.models.unet_mimicmotion import MimicMotionUNet

    unet_config = read_unet_config(config)
    if kind == "mimicmotion":
        load_mimicmotion(path, unet_config=unet_config)
        return
    with init_empty_weights():
        unet = MimicMotionUNet.from_config(unet_config)
    load_controlnet(path, unet)


MIMICMOTION = Base(
    name="mimicmotion", title="MimicMotion 1.1 on Stable Video Diffusion img2vid-xt 1.1",
    components=COMPONENTS, required_components=weights.required_components, load_pipeline=load, sample=sample,
    tiles=tiles, sampling_steps=sampling_steps, steps_per_video=steps_per_video,
    parameter_counts=parameter_counts,
    # the SD1.5 ControlNet has no add_embedding
    checkpoint_kinds={"dispose": "add_embedding.", "mimicmotion": "unet."},
    verify_checkpoint=verify_checkpoint, training=MimicMotionBase,
    random_pipeline=random_weights.random_pipeline, tiny_weights=tiny.build_tiny_weights,
)
