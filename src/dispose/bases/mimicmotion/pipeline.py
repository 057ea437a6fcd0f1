"""DisPose on MimicMotion / Stable Video Diffusion: the sampling pipeline (paper Sec. 4.3, Fig. 2).

Components: SVD's VAE (``AutoencoderKLTemporalDecoder``), CLIP image encoder, EDM Euler scheduler; the
MimicMotion UNet with its PoseNet; DisPose's hybrid ControlNet (motion + point encoders), which adds
residuals to the UNet's skip connections (Eq. 8).  ``controlnet`` is optional: without it, or with
``guidance=None``, the same code samples plain MimicMotion (the baseline for identical-seed comparisons).

Sampling, as the release (``inference_ctrl.py`` + ``pipeline_ctrl.py``) does it, with its numbers:

* Frame 0 of the video is the reference frame (the reference image with its own pose); it is
  generated along and dropped from the output.
* Conditioning: the CLIP image embedding of the reference; its VAE latent (posterior mode, unscaled,
  after adding ``noise_aug_strength`` x noise to the pixels) concatenated to the noisy latents of every
  frame; PoseNet latents of the pose images added after the UNet's ``conv_in``; added time ids
  ``[fps - 1, motion_bucket_id, noise_aug_strength]`` with ``fps = 7`` whatever the output fps (the
  release passes 7), motion bucket 127, noise aug 0.
* Classifier-free guidance: the unconditional half gets a zeroed CLIP embedding, reference latent and
  pose latents, while the motion fields and point features are the same as in the conditional half.
  The guidance scale is per frame, ``linspace(min, max, frames)``; the release uses 2.0 for both.
* Tiles of ``tile_size`` (16) frames overlapping by ``tile_overlap`` (6), each including frame 0, fused
  with triangular weights (:mod:`dispose.pipelines.tiling`); the ControlNet sees the tile's slice of
  ``F_s``, ``F_d`` and ``F_p`` (:meth:`dispose.guidance.stage.GuidanceTensors.window`).
* Initial noise: one tile-length block drawn with the generator (after a pixel-noise draw for the noise
  augmentation, drawn even at strength 0), repeated along the video.
* VAE decoding in chunks of ``decode_chunk_size`` frames, starting at frame 0.

Deliberate differences:

* The fused noise prediction and the latents between steps are kept in float32 (the release keeps them
  in the model dtype, fp16).
* A video shorter than one tile works (the release raises IndexError).
* PoseNet runs on the sampling device, per tile, on the tile's skeletons (converted from uint8 there);
  the release's pipeline runs it on the CPU (it moves PoseNet to the GPU only afterwards), in fp16, on the
  whole video at once and keeps the result.  Here a tile's pose latents are kept across steps within the
  conditioning cache's budget (below) and recomputed otherwise, so nothing per-video is held.
* CFG can run as one batch of two (release) or two passes (``cfg_mode="sequential"``, half the UNet and
  ControlNet activation memory).
* The ControlNet's guidance encoders (motion encoder, point MLPs) see only the tile's guidance, not the
  noisy latent, the timestep or the CFG half.  The release reruns them at every step for both halves;
  here they run once per tile for both halves (``controlnet.encode_guidance``), and with
  ``cache_guidance=True`` (default) their output is kept for all steps, with the tile's pose latents, for
  as many tiles as fit ``guidance_cache_mb`` (:class:`~dispose.pipelines.tile_cache.TileCache`; the other
  tiles are encoded again at each step).  Same maths: cached and per-step encodings are bit-identical;
  against the release's doubled batch, a convolution or matrix product over fewer rows may round
  differently (last-bit differences, as measured on CPU).  ``cache_guidance=False`` encodes at every step.
* ``controlnet_interval=k`` (default 1, the release) runs the ControlNet at every k-th step only and adds
  its last residuals at the steps between: fewer ControlNet passes, different frames (an option for speed,
  with its measured effect in the README; the residuals of every tile are kept between steps).
* Decoded frames can be streamed (``iter_decoded``, ``iter_frames`` of
  :class:`~dispose.bases.pipeline.AnimationPipeline`), a chunk at a time, instead of returned whole.
* The CLIP preprocessing is done here (antialiased resize to 224 as SVD, then CLIP's mean/std from the
  feature extractor), equal to the release's ``CLIPImageProcessor`` call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPVisionModelWithProjection
from transformers.utils import logging as transformers_logging

from dispose.bases.pipeline import CLIP_MEAN, CLIP_STD, AnimationOutput, AnimationPipeline, format_frames
from dispose.pipelines.tile_cache import GUIDANCE_CACHE_MB, TileCache
from dispose.pipelines.tiling import fusion_normaliser, fusion_weights, repeat_tile_noise, tile_indices

if TYPE_CHECKING:  # importing it at run time makes transformers warn that torchvision is missing
    from transformers import CLIPImageProcessor

    from dispose.guidance.stage import Guidance, GuidanceTensors

# SVD's antialiased resize (the CLIP input of the release).  Its module imports CLIPImageProcessor, whose
# torchvision warning means nothing here: we never use that class.
_verbosity = transformers_logging.get_verbosity()
transformers_logging.set_verbosity_error()
try:
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
        _resize_with_antialiasing,
    )
finally:
    transformers_logging.set_verbosity(_verbosity)

CfgMode = Literal["batch", "sequential"]


class DisPoseMimicMotionPipeline(AnimationPipeline):
    """MimicMotion sampling with optional DisPose ControlNet guidance (see module docstring).

    Register the components by name; ``controlnet`` and ``feature_extractor`` may be None.
    """

    # Model CPU offload: each model of the chain moves to the accelerator when it runs and sends the previous
    # one back.  The ControlNet alternates with the UNet at every tile, so it is kept out of the chain
    # (diffusers then gives it a hook of its own): it moves in once and stays until the end, like the UNet
    # during sampling.  The VAE comes last so that the UNet leaves before decoding.
    model_cpu_offload_seq = "image_encoder->pose_net->unet->vae"
    _optional_components: ClassVar[list[str]] = ["controlnet", "feature_extractor"]

    def __init__(self, vae: AutoencoderKLTemporalDecoder, image_encoder: CLIPVisionModelWithProjection,
                 unet: torch.nn.Module, pose_net: torch.nn.Module, scheduler: EulerDiscreteScheduler,
                 controlnet: torch.nn.Module | None = None,
                 feature_extractor: CLIPImageProcessor | None = None) -> None:
        super().__init__()
        self.register_modules(vae=vae, image_encoder=image_encoder, unet=unet, pose_net=pose_net,
                              scheduler=scheduler, controlnet=controlnet, feature_extractor=feature_extractor)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    frame_axis = 1  # latents (B, F, C, h, w)
    compiled_modules = ("unet", "controlnet")

    @property
    def size_multiple(self) -> int:
        return self.vae_scale_factor

    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents, num_frames=latents.shape[0]).sample

    # ------------------------------------------------------------------ conditioning
    def _reference_latent(self, image01: torch.Tensor, noise_aug_strength: float, generator,
                          device) -> torch.Tensor:
        pixels = image01.to(device) * 2.0 - 1.0
        # Drawn even at strength 0: the release does, and the initial noise comes after it in the stream.
        noise = randn_tensor(pixels.shape, generator=generator, device=device, dtype=pixels.dtype)
        pixels = pixels + noise_aug_strength * noise
        return self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.mode()

    def _tile_pose_images(self, pose_images, tile: list[int]) -> torch.Tensor:
        """(T, 3, H, W) pose images in [-1, 1] of a tile: float input as given; uint8 skeletons (F, H, W, 3)
        as the release's script converts them, ``uint8 / 127.5 - 1`` in fp16 when the UNet runs in fp16, else
        in float32."""
        if isinstance(pose_images, torch.Tensor) and pose_images.is_floating_point():
            return pose_images[tile]
        pixels = torch.as_tensor(np.asarray(pose_images[tile]))
        arithmetic = torch.float16 if self.unet.dtype == torch.float16 else torch.float32
        return pixels.permute(0, 3, 1, 2).to(arithmetic) / 127.5 - 1.0

    @torch.no_grad()
    def __call__(
        self,
        image: PIL.Image.Image | np.ndarray | torch.Tensor,
        pose_images,
        guidance: Guidance | GuidanceTensors | None = None,
        *,
        tile_size: int = 16,
        tile_overlap: int = 6,
        num_inference_steps: int = 25,
        min_guidance_scale: float = 2.0,
        max_guidance_scale: float = 2.0,
        fps: int = 7,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.0,
        controlnet_conditioning_scale: float = 1.0,
        controlnet_interval: int = 1,
        decode_chunk_size: int = 8,
        cfg_mode: CfgMode = "batch",
        cache_guidance: bool = True,
        guidance_cache_mb: float | None = GUIDANCE_CACHE_MB,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        keep_reference: bool = False,
        output_type: Literal["np", "pt", "pil", "latent"] = "np",
        progress_bar=None,
        callback_on_step_end=None,
        return_dict: bool = True,
    ) -> AnimationOutput | tuple:
        """Animate ``image`` following ``pose_images``.

        Args:
            image: reference at the generation size (uint8 / float [0, 1] (H, W, 3), PIL, or (1, 3, H, W)).
            pose_images: (F, 3, H, W) float skeleton images in [-1, 1], or (F, H, W, 3) uint8 skeletons (an
                array, tensor or :class:`~dispose.media.frame_store.FrameStore`, read a tile at a time);
                frame 0 is the reference pose.
            guidance: DisPose guidance of the same F frames, or None for plain MimicMotion.
            fps: conditioning fps (the UNet sees ``fps - 1``); the release passes 7.
            controlnet_interval: run the ControlNet at every k-th step, reuse its residuals in between.
            cfg_mode: "batch" (both CFG halves in one batch, release) or "sequential" (two passes).
            cache_guidance: encode each tile's DisPose guidance and pose latents once and keep them for every
                step, for as many tiles as fit ``guidance_cache_mb`` MiB (None: all), not once per step.
            latents: optional initial noise block (B, tile_size, 4, h, w) replacing the generator's draw.
            keep_reference: return frame 0 too (the release drops it).
            progress_bar: a tqdm-like object to ``update()`` once per tile and step and once per decoded chunk
                (default: own bar).
            callback_on_step_end: diffusers' ``f(pipeline, step_index, timestep, {"latents": ...}) -> dict``,
                called after every denoising step; a returned ``latents`` replaces the latents.  An exception
                it raises (e.g. a cancellation) ends sampling.
        """
        frames = len(pose_images)
        ref01, height, width = self.check_inputs(image, pose_images, guidance, controlnet_interval)
        if cfg_mode not in ("batch", "sequential"):
            raise ValueError(f"cfg_mode must be 'batch' or 'sequential', got {cfg_mode!r}")
        tiles = tile_indices(frames, tile_size, tile_overlap)
        device = self._execution_device
        dtype = self.unet.dtype
        do_cfg = max_guidance_scale > 1.0

        embeds = clip_embedding(self.image_encoder, self.feature_extractor, ref01, device).to(dtype)
        ref_latent = self._reference_latent(ref01, noise_aug_strength, generator, device).to(dtype)
        ids = time_ids(self.unet, fps, motion_bucket_id, noise_aug_strength, device).to(dtype)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        shape = (1, tile_size, self.unet.config.out_channels, height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents: expected a noise block of shape {shape}, got {tuple(latents.shape)}")
        latents = repeat_tile_noise(latents.to(device), frames).float() * self.scheduler.init_noise_sigma

        ref_latents = ref_latent.unsqueeze(1).expand(-1, frames, -1, -1, -1)
        halves = self._cfg_halves(do_cfg, cfg_mode, embeds, ref_latents, ids)
        scale = torch.linspace(min_guidance_scale, max_guidance_scale, frames,
                               device=device).view(1, frames, 1, 1, 1)
        weights = [fusion_weights(len(tile), device) for tile in tiles]
        norm = fusion_normaliser(tiles, frames, device)

        cache = TileCache(guidance_cache_mb if cache_guidance else 0)  # tile -> (pose latents, guidance)
        # (tile, CFG half) -> residuals, with controlnet_interval
        kept_residuals: dict[tuple[int, int], tuple] = {}
        decode_units = 0 if output_type == "latent" else -(-frames // max(decode_chunk_size, 1))
        bar = progress_bar if progress_bar is not None else self.progress_bar(
            total=len(timesteps) * len(tiles) + decode_units)
        for step, t in enumerate(timesteps):
            scaled = self.scheduler.scale_model_input(latents, t)
            model_ins = [torch.cat([scaled.expand(half["batch"], *scaled.shape[1:]).to(dtype),
                                    half["ref_latents"]], dim=2)
                         for half in halves]
            fused = [torch.zeros(half["batch"], *latents.shape[1:], device=device) for half in halves]
            fresh = step % controlnet_interval == 0
            for index, (tile, weight) in enumerate(zip(tiles, weights)):
                pose, control = (cache.get(index)
                                 or self._tile_conditioning(pose_images, guidance, tile, device))
                for number, (half, model_in, total) in enumerate(zip(halves, model_ins, fused)):
                    residuals = None
                    if control is not None and controlnet_interval > 1:
                        if fresh:
                            kept_residuals[index, number] = controlnet_residuals(
                                self.controlnet, model_in[:, tile], t, half["embeds"], half["time_ids"],
                                control, controlnet_conditioning_scale)
                        residuals = kept_residuals[index, number]
                    pred = denoise_tile(self.unet, self.controlnet, model_in[:, tile], t, half["embeds"],
                                        half["time_ids"], half["pose"](pose), control,
                                        controlnet_conditioning_scale, residuals)
                    total[:, tile] += pred * weight.view(1, -1, 1, 1, 1)
                # complete now: the point features of every level are made
                cache.offer(index, (pose, control))
                bar.update()
            noise_pred = torch.cat([total / norm.view(1, -1, 1, 1, 1) for total in fused])
            if do_cfg:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + scale * (cond - uncond)
            latents = self.scheduler.step(noise_pred, t, latents, generator=generator,
                                          return_dict=False)[0].float()
            if callback_on_step_end is not None:
                latents = callback_on_step_end(self, step, t, {"latents": latents}).get("latents", latents)
        cache.clear()
        kept_residuals.clear()

        if output_type == "latent":
            result = latents if keep_reference else latents[:, 1:]
        else:
            video = self.decode_latents(latents, decode_chunk_size, bar)  # (B, F, 3, H, W) in [0, 1]
            video = video if keep_reference else video[:, 1:]
            result = format_frames(video, output_type)
        if progress_bar is None:
            bar.close()
        self.maybe_free_model_hooks()
        return AnimationOutput(frames=result) if return_dict else (result,)

    def _tile_conditioning(self, pose_images, guidance, tile: list[int], device) -> tuple[torch.Tensor, Any]:
        """(pose latents (1, T, C, h, w), encoded DisPose guidance or None) of one tile."""
        pose = pose_latents(self.pose_net, self._tile_pose_images(pose_images, tile), device,
                            chunk=len(tile)).unsqueeze(0)
        control = None
        if guidance is not None:
            control = self.controlnet.encode_guidance(**guidance.window(tile, device=device,
                                                                        dtype=self.unet.dtype))
        return pose, control

    @staticmethod
    def _cfg_halves(do_cfg: bool, cfg_mode: CfgMode, embeds, ref_latents, time_ids) -> list[dict]:
        """The model calls of one tile: batch size, CLIP context, reference latents, added time ids, and
        ``pose``, which makes the half's pose latents from the conditional ones (zeros when unconditional)."""
        cond = {"batch": 1, "embeds": embeds, "ref_latents": ref_latents, "time_ids": time_ids,
                "pose": lambda p: p}
        if not do_cfg:
            return [cond]
        uncond = {"batch": 1, "embeds": torch.zeros_like(embeds),
                  "ref_latents": torch.zeros_like(ref_latents), "time_ids": time_ids,
                  "pose": torch.zeros_like}
        if cfg_mode == "sequential":
            return [uncond, cond]
        both = {key: torch.cat([uncond[key], cond[key]]) for key in ("embeds", "ref_latents", "time_ids")}
        return [{"batch": 2, **both, "pose": lambda p: torch.cat([torch.zeros_like(p), p])}]


# ---------------------------------------------------------------------- conditioning and denoiser
# One sampling step on one tile, in parts that the training model (dispose.bases.mimicmotion.training) calls
# too, with its own networks, so that training cannot drift from sampling.

def clip_embedding(image_encoder, feature_extractor, image01: torch.Tensor, device: torch.device
                   ) -> torch.Tensor:
    """(B, 1, D) CLIP image embedding of (B, 3, H, W) images in [0, 1]: SVD's antialiased resize to 224, then
    CLIP's mean and std (the feature extractor's, else :data:`CLIP_MEAN` / :data:`CLIP_STD`)."""
    pixels = _resize_with_antialiasing(image01.to(device) * 2.0 - 1.0, (224, 224))
    pixels = (pixels + 1.0) / 2.0
    mean = getattr(feature_extractor, "image_mean", None) or CLIP_MEAN
    std = getattr(feature_extractor, "image_std", None) or CLIP_STD
    pixels = (pixels - torch.tensor(mean, device=device).view(1, 3, 1, 1)) / torch.tensor(
        std, device=device).view(1, 3, 1, 1)
    return image_encoder(pixels.to(image_encoder.dtype)).image_embeds.unsqueeze(1)


def pose_latents(pose_net, pose_images: torch.Tensor, device: torch.device, chunk: int) -> torch.Tensor:
    """PoseNet latents (N, C, h, w) of (N, 3, H, W) pose images in [-1, 1], ``chunk`` images at a time."""
    dtype = next(pose_net.parameters()).dtype
    parts = [pose_net(pose_images[i:i + chunk].to(device, dtype)) for i in range(0, len(pose_images), chunk)]
    return torch.cat(parts)


def time_ids(unet, fps: int, motion_bucket_id: int, noise_aug_strength: float, device) -> torch.Tensor:
    """SVD's added time ids ``[[fps - 1, motion_bucket_id, noise_aug_strength]]`` (float32), checked against
    the UNet's added embedding."""
    ids = [fps - 1, motion_bucket_id, noise_aug_strength]
    expected = unet.add_embedding.linear_1.in_features
    given = unet.config.addition_time_embed_dim * len(ids)
    if expected != given:
        raise ValueError(f"the UNet expects {expected} added-time-id features, its config gives {given}")
    return torch.tensor([ids], dtype=torch.float32, device=device)


def controlnet_residuals(controlnet, latents_in: torch.Tensor, t, embeds: torch.Tensor,
                         time_ids: torch.Tensor, control, scale: float) -> tuple:
    """The hybrid ControlNet's (down, mid) residuals for a batch (B, T, C, h, w) of model inputs (Eq. 8)."""
    return controlnet(latents_in, t, encoder_hidden_states=embeds, added_time_ids=time_ids, guidance=control,
                      conditioning_scale=scale)


def denoise_tile(unet, controlnet, latents_in: torch.Tensor, t, embeds: torch.Tensor, time_ids: torch.Tensor,
                 pose_latents: torch.Tensor, control, scale: float, residuals: tuple | None = None
                 ) -> torch.Tensor:
    """Noise prediction (float32) of one tile for a batch (B, T, C, h, w) of model inputs; ``control`` is the
    tile's encoded DisPose guidance (the same for both CFG halves) or None; ``residuals``: the ControlNet's
    output to use instead of running it."""
    down = mid = None
    if residuals is not None:
        down, mid = residuals
    elif control is not None:
        down, mid = controlnet_residuals(controlnet, latents_in, t, embeds, time_ids, control, scale)
    return unet(latents_in, t, encoder_hidden_states=embeds, added_time_ids=time_ids,
                pose_latents=pose_latents.flatten(0, 1).to(unet.dtype), down_block_additional_residuals=down,
                mid_block_additional_residual=mid, return_dict=False)[0].float()
