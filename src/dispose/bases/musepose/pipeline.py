"""DisPose on MusePose (SD1.5 + reference UNet + motion modules): the sampling pipeline (paper sec. 5.1).

Components: the sd-vae-ft-mse VAE, the sd-image-variations CLIP image encoder, MusePose's reference UNet,
denoising UNet (with motion modules) and pose guider (:mod:`dispose.models.musepose`), a DDIM scheduler, and
optionally DisPose's SD1.5 hybrid ControlNet (:mod:`dispose.models.controlnet_sd`), whose per-frame residuals
are added to the denoising UNet's skip connections and mid block.  ``guidance=None`` (or no ControlNet)
samples plain MusePose, the baseline for identical-seed comparisons.

Sampling, as the release (``test_stage_2.py`` + ``musepose/pipelines/pipeline_pose2vid_long.py``) does it:

* Scheduler: DDIM, v-prediction, betas rescaled to zero terminal SNR, "trailing" timesteps, eta 0
  (:data:`MUSEPOSE_SCHEDULER`, from ``configs/inference_v2.yaml``).  Defaults of ``test_stage_2.py``: 20
  steps, guidance scale 3.5, 768x768, windows of 48 frames overlapping by 4 (:data:`DEFAULTS`).
* Conditioning: the CLIP image embedding of the reference (resized to 224x224 with PIL's bicubic filter,
  CLIP's normalisation; zeros for the unconditional half); the reference latent (posterior mean x 0.18215)
  through the reference UNet once, at timestep 0, read by the denoising UNet's self-attentions (only in the
  conditional half: :mod:`dispose.models.musepose.reference`); the pose guider's features of the skeleton
  images in [0, 1], added after ``conv_in``.
* Long videos: the video is padded by repeating its last pose until the windows tile it exactly
  (``(L - S) % (S - O)`` rule of ``test_stage_2.py``; a video shorter than a window is padded to a
  window), the windows of the release's "uniform" context scheduler at ``context_stride=1`` start every
  ``S - O`` frames, each step averages the windows' noise predictions per frame (plain mean), and the
  padding is dropped after decoding.
* Initial noise: one draw of the whole padded video, (1, 4, F, h, w), in the model dtype.
* VAE decoding frame by frame (here in chunks of ``decode_chunk_size`` frames; the VAE has no temporal
  layers, so the chunking does not change the result).

Against the release's ``Pose2VideoPipeline`` on identical tiny random weights, inputs and seed (7 frames, two
windows, 3 steps, guidance 3.5), the frames agree to float32 rounding (``bench/bench_musepose_vs_release.py``;
the figures are in the README's MusePose section).

Input convention (shared with the MimicMotion pipeline, so both bases take the same inputs): the pose
images and the DisPose guidance cover ``F`` frames whose frame 0 is the reference pose.  MusePose has no
reference frame in its video: it generates frames ``1..F-1`` (the driving frames) and the window of video
frames ``j`` reads the guidance of frames ``j + 1``.

Deliberate differences:

* Latents between steps and the fused noise prediction are float32 (the release keeps the model dtype).
* The reference UNet runs on the conditional embedding only (the release also runs the unconditional
  half, whose states are never read).
* The CLIP input is the reference at the generation size resized to 224x224 (the release resizes the
  original image file).  The release scales its output back to the input video's size; here the frames
  stay at the generation size (the caller resizes).
* The pose guider runs per window, when the window is denoised, on that window's skeletons; the release
  runs it once on the whole padded video and keeps the features of every frame (320 channels at 1/8 size).
  uint8 skeletons are converted per window through the [-1, 1] convention shared with the MimicMotion
  pipeline (``/ 127.5 - 1``, then ``(x + 1) / 2``, float32); the release divides by 255 (last-bit rounding).
* A window's pose features and DisPose guidance encodings (motion encoder, point MLPs) are computed at its
  first denoising and, with ``cache_guidance``, kept for all steps for as many windows as fit
  ``guidance_cache_mb`` (:class:`~dispose.pipelines.tile_cache.TileCache`); the other windows compute them
  again at each step (the same numbers).  So nothing per-video and large is held while sampling, and the
  decoded frames can be streamed a chunk at a time (``iter_decoded``, ``iter_frames``:
  :class:`~dispose.bases.pipeline.AnimationPipeline`).
* ``controlnet_interval=k`` (default 1): the ControlNet runs at every k-th step and its residuals are reused
  in between, as in the MimicMotion pipeline (faster, changes the frames).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor

from dispose.bases.pipeline import CLIP_MEAN, CLIP_STD, AnimationOutput, AnimationPipeline, format_frames
from dispose.models.musepose.reference import ReferenceBank, connect_reference_attention
from dispose.pipelines.tile_cache import GUIDANCE_CACHE_MB, TileCache

if TYPE_CHECKING:
    from dispose.guidance.stage import Guidance, GuidanceTensors
    from dispose.models.hybrid_controlnet import EncodedGuidance

#: DDIM settings of MusePose's ``configs/inference_v2.yaml`` (``noise_scheduler_kwargs``).
MUSEPOSE_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                      "clip_sample": False, "steps_offset": 1, "prediction_type": "v_prediction",
                      "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
#: Defaults of MusePose's ``test_stage_2.py`` (``-W -H -S -O --cfg --steps --seed --skip``; ``-L 300`` frames
#: of the pose video, i.e. 150 after the stride).
DEFAULTS = {"width": 768, "height": 768, "context_frames": 48, "context_overlap": 4, "guidance_scale": 3.5,
            "num_inference_steps": 20, "seed": 99, "sample_stride": 2, "max_frames": 150}
#: The SD1.5 latent scaling factor the release hard-codes.
LATENT_SCALE = 0.18215


def padded_length(frames: int, context_frames: int, context_overlap: int) -> int:
    """Frames after the release's padding (``test_stage_2.py``), so that the windows tile the video."""
    if not 0 <= context_overlap < context_frames:
        raise ValueError(f"context overlap must be in [0, {context_frames - 1}], got {context_overlap}")
    stride = context_frames - context_overlap
    short = (frames - context_frames) % stride
    return frames + (stride - short) % stride


def context_windows(frames: int, context_frames: int, context_overlap: int) -> list[list[int]]:
    """Frame indices of each window: the release's "uniform" context scheduler at step 0 and stride 1
    (windows every ``S - O`` frames while they start before ``frames - O``, indices modulo ``frames``)."""
    if frames <= context_frames:
        return [list(range(frames))]
    stride = context_frames - context_overlap
    return [[index % frames for index in range(start, start + context_frames)]
            for start in range(0, frames - context_overlap, stride)]


class DisPoseMusePosePipeline(AnimationPipeline):
    """MusePose sampling with optional DisPose ControlNet guidance (see module docstring)."""

    frame_axis = 2  # latents (B, C, F, h, w)
    size_multiple = 64  # the SD1.5 UNet's three downsamplings of the 1/8 latents
    compiled_modules = ("denoising_unet", "controlnet")

    model_cpu_offload_seq = "image_encoder->reference_unet->pose_guider->denoising_unet->vae"
    _optional_components: ClassVar[list[str]] = ["controlnet"]

    def __init__(self, vae: AutoencoderKL, image_encoder: torch.nn.Module, reference_unet: torch.nn.Module,
                 denoising_unet: torch.nn.Module, pose_guider: torch.nn.Module, scheduler: DDIMScheduler,
                 controlnet: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.register_modules(vae=vae, image_encoder=image_encoder, reference_unet=reference_unet,
                              denoising_unet=denoising_unet, pose_guider=pose_guider, scheduler=scheduler,
                              controlnet=controlnet)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.reference_bank = connect_reference_attention(reference_unet, denoising_unet)

    def latent_scale(self) -> float:
        return LATENT_SCALE

    # ------------------------------------------------------------------ conditioning
    @staticmethod
    def _pose01(pose_images, indices: list[int]) -> torch.Tensor:
        """(T, 3, H, W) skeleton images in [0, 1] of frames ``indices``: float input in [-1, 1] as given,
        uint8 (F, H, W, 3) skeletons read for these frames only and put in [-1, 1] (``/ 127.5 - 1`` in
        float32); then ``(x + 1) / 2``."""
        if isinstance(pose_images, torch.Tensor) and pose_images.is_floating_point():
            signed = pose_images[indices]
        else:
            pixels = torch.as_tensor(pose_images[indices])
            signed = pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return (signed + 1.0) / 2.0

    def _window_conditioning(self, pose_images, guidance, window: list[int], driving: int, device, dtype
                             ) -> tuple[torch.Tensor, EncodedGuidance | None]:
        """(pose features (1, C, T, h, w), encoded DisPose guidance or None) of the video frames ``window``
        (padding frames repeat the last driving frame)."""
        indices = [min(frame, driving - 1) + 1 for frame in window]
        pose = pose_features(self.pose_guider, self._pose01(pose_images, indices), device,
                             chunk=len(window)).to(dtype)
        control = None
        if guidance is not None:
            window_guidance = guidance_window(guidance, window, driving, device, dtype)
            control = self.controlnet.encode_guidance(**window_guidance)
        return pose, control

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        image: PIL.Image.Image | np.ndarray | torch.Tensor,
        pose_images,
        guidance: Guidance | GuidanceTensors | None = None,
        *,
        num_inference_steps: int = DEFAULTS["num_inference_steps"],
        guidance_scale: float = DEFAULTS["guidance_scale"],
        context_frames: int = DEFAULTS["context_frames"],
        context_overlap: int = DEFAULTS["context_overlap"],
        controlnet_conditioning_scale: float = 1.0,
        controlnet_interval: int = 1,
        decode_chunk_size: int = 8,
        cache_guidance: bool = True,
        guidance_cache_mb: float | None = GUIDANCE_CACHE_MB,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: Literal["np", "pt", "pil", "latent"] = "np",
        progress_bar=None,
        callback_on_step_end=None,
        return_dict: bool = True,
    ) -> AnimationOutput | tuple:
        """Animate ``image`` following ``pose_images[1:]``.

        Args:
            image, pose_images, guidance: as every base's pipeline takes them
                (:mod:`dispose.bases.pipeline`; the pose images are read a window at a time); frame 0, the
                reference pose, is not generated; ``guidance=None`` samples plain MusePose.
            controlnet_interval: run the ControlNet at every k-th step, reuse its residuals in between.
            cache_guidance: compute each window's pose features and encoded DisPose guidance once and keep
                them for every step, for as many windows as fit ``guidance_cache_mb`` MiB (None: all), instead
                of at every step.
            latents: optional initial noise (1, 4, F_padded, h, w) replacing the generator's draw.
            progress_bar: a tqdm-like object to ``update()`` once per window and step and once per decoded
                chunk (default: own bar).
            callback_on_step_end: diffusers' ``f(pipeline, step_index, timestep, {"latents": ...}) -> dict``,
                called after every denoising step; a returned ``latents`` replaces the latents.  An exception
                it raises (e.g. a cancellation) ends sampling.

        Returns:
            :class:`AnimationOutput` with ``frames`` of the F - 1 driving frames.
        """
        driving = len(pose_images) - 1
        if driving < 1:
            raise ValueError("pose_images: need the reference pose and at least one driving frame")
        ref01, height, width = self.check_inputs(image, pose_images, guidance, controlnet_interval)
        frames = padded_length(driving, context_frames, context_overlap)
        windows = context_windows(frames, context_frames, context_overlap)
        device = self._execution_device
        dtype = self.denoising_unet.dtype
        do_cfg = guidance_scale > 1.0

        embeds = clip_embedding(self.image_encoder, ref01, device).to(dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        shape = (1, self.denoising_unet.config.in_channels, frames, height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents: expected initial noise of shape {shape}, got {tuple(latents.shape)}")
        latents = latents.to(device).float() * self.scheduler.init_noise_sigma

        ref_latent = reference_latent(self.vae, ref01, device).to(dtype)
        reads = [None, 0] if do_cfg else [0]  # the unconditional half reads no reference
        write_reference(self.reference_bank, self.reference_unet, ref_latent, embeds, reads)
        context = torch.cat([torch.zeros_like(embeds), embeds]) if do_cfg else embeds
        halves = 2 if do_cfg else 1

        cache = TileCache(guidance_cache_mb if cache_guidance else 0)  # window -> (pose, guidance)
        kept_residuals: dict[int, tuple] = {}  # window -> ControlNet residuals, with controlnet_interval > 1
        decode_units = 0 if output_type == "latent" else -(-driving // max(decode_chunk_size, 1))
        bar = progress_bar if progress_bar is not None else self.progress_bar(
            total=len(timesteps) * len(windows) + decode_units)
        try:
            for step, t in enumerate(timesteps):
                fused = torch.zeros(halves, *latents.shape[1:], device=device)
                counts = torch.zeros(frames, device=device)
                for index, window in enumerate(windows):
                    where = torch.as_tensor(window, device=device)
                    model_in = self.scheduler.scale_model_input(latents[:, :, where], t).to(dtype)
                    model_in = model_in.expand(halves, -1, -1, -1, -1)
                    pose, control = cache.get(index) or self._window_conditioning(
                        pose_images, guidance, window, driving, device, dtype)
                    residuals = None
                    if control is not None and (step % controlnet_interval == 0
                                                or index not in kept_residuals):
                        residuals = window_residuals(self.controlnet, model_in, t, context, control,
                                                     controlnet_conditioning_scale)
                        if controlnet_interval > 1:
                            kept_residuals[index] = residuals
                    elif control is not None:
                        residuals = kept_residuals[index]
                    pred = denoise_window(self.denoising_unet, model_in, t, context,
                                          pose.expand(halves, -1, -1, -1, -1), residuals)
                    # complete now: the point features of every level are made
                    cache.offer(index, (pose, control))
                    fused.index_add_(2, where, pred.float())
                    counts.index_add_(0, where, torch.ones(len(window), device=device))
                    bar.update()
                noise_pred = fused / counts.view(1, 1, -1, 1, 1)
                if do_cfg:
                    uncond, cond = noise_pred.chunk(2)
                    noise_pred = uncond + guidance_scale * (cond - uncond)
                latents = self.scheduler.step(noise_pred, t, latents, eta=0.0, generator=generator,
                                              return_dict=False)[0].float()
                if callback_on_step_end is not None:
                    latents = callback_on_step_end(self, step, t,
                                                   {"latents": latents}).get("latents", latents)
        finally:
            self.reference_bank.clear()
            cache.clear()
            kept_residuals.clear()

        latents = latents[:, :, :driving]
        if output_type == "latent":
            result = latents
        else:
            video = self.decode_latents(latents, decode_chunk_size, bar)
            result = format_frames(video, output_type)
        if progress_bar is None:
            bar.close()
        self.maybe_free_model_hooks()
        return AnimationOutput(frames=result) if return_dict else (result,)


# ---------------------------------------------------------------------- conditioning and denoiser
# One sampling step on one window, in parts that the training model (dispose.bases.musepose.training) calls
# too, with its own networks, so that training cannot drift from sampling.

def clip_embedding(image_encoder, image01: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(1, 1, D) CLIP image embedding of a (1, 3, H, W) image in [0, 1]: PIL's bicubic resize to 224x224 of
    the uint8 picture, then CLIP's mean and std."""
    pixels = (image01[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()
    small = np.asarray(PIL.Image.fromarray(pixels).resize((224, 224), PIL.Image.BICUBIC), np.float32) / 255.0
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    clip_in = ((torch.from_numpy(small).permute(2, 0, 1) - mean) / std)[None]
    return image_encoder(clip_in.to(device, image_encoder.dtype)).image_embeds.unsqueeze(1)


def reference_latent(vae, image01: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, 4, h, w) latents of (B, 3, H, W) references in [0, 1]: the VAE posterior mean x 0.18215."""
    pixels = (image01.to(device) * 2.0 - 1.0).to(vae.dtype)
    return vae.encode(pixels).latent_dist.mean * LATENT_SCALE


def pose_features(pose_guider, pose01: torch.Tensor, device: torch.device, chunk: int) -> torch.Tensor:
    """(F, 3, H, W) skeleton images in [0, 1] -> (1, C, F, h, w) pose-guider features, ``chunk`` at a time."""
    dtype = next(pose_guider.parameters()).dtype
    parts = [pose_guider(pose01[i:i + chunk].to(device, dtype)) for i in range(0, len(pose01), chunk)]
    return torch.cat(parts).transpose(0, 1).unsqueeze(0)


def write_reference(bank: ReferenceBank, reference_unet, ref_latent: torch.Tensor, embeds: torch.Tensor,
                    reads: list[int | None]) -> None:
    """Run the reference UNet once at timestep 0 on the references (B, 4, h, w), filling ``bank``; batch row
    ``i`` of the denoising UNet then reads reference ``reads[i]`` (None: plain self-attention)."""
    bank.clear()
    reference_unet(ref_latent, torch.zeros((), device=ref_latent.device), encoder_hidden_states=embeds,
                   return_dict=False)
    bank.reads = reads


def guidance_window(guidance: Guidance | GuidanceTensors, window: list[int], driving: int, device, dtype
                    ) -> dict:
    """ControlNet inputs of the video frames ``window`` (padding frames repeat the last driving frame):
    driving frame ``j`` reads guidance frame ``j + 1``."""
    indices = [0] + [min(frame, driving - 1) + 1 for frame in window]
    return {key: value[1:] for key, value in guidance.window(indices, device=device, dtype=dtype).items()}


def window_residuals(controlnet, model_in: torch.Tensor, t, context: torch.Tensor, control,
                     scale: float = 1.0) -> tuple:
    """The ControlNet's (down, mid) residuals for model inputs (B, 4, F, h, w) and their context (B, L, D)."""
    return controlnet(model_in.transpose(1, 2), t, encoder_hidden_states=context, guidance=control,
                      conditioning_scale=scale)


def denoise_window(denoising_unet, model_in: torch.Tensor, t, context: torch.Tensor, pose: torch.Tensor,
                   residuals: tuple | None) -> torch.Tensor:
    """The denoising UNet's output (B, 4, F, h, w) for one window (the reference bank must be written)."""
    down, mid = residuals if residuals is not None else (None, None)
    return denoising_unet(model_in, t, encoder_hidden_states=context, pose_features=pose,
                          down_block_additional_residuals=down, mid_block_additional_residual=mid,
                          return_dict=False)[0]
