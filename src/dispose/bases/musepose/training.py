"""The MusePose training base: frozen MusePose (SD1.5) plus DisPose's trainable SD1.5 hybrid ControlNet.

MusePose's registry entry hands out :class:`MusePoseBase` (``Base.training``) to ``dispose train --base
musepose``.  :class:`MusePoseTrainingModel` holds

* frozen (``requires_grad=False``, eval mode, cast to the mixed-precision dtype): the sd-vae-ft-mse VAE, the
  sd-image-variations CLIP image encoder, MusePose's reference UNet, denoising UNet (with its motion modules)
  and pose guider, loaded strictly from the release's files (:mod:`dispose.bases.musepose.weights`);
* trainable: :class:`~dispose.models.controlnet_sd.HybridControlNetSD` with its motion encoder and point
  encoder, initialised from the 2D encoder of MusePose's denoising UNet (``from_unet``: weights copied, zero
  output convolutions) or from a given ``DisPose_MusePose.pth``.  The paper says "initialised from
  stable-diffusion-v1-5"; MusePose's denoising UNet *is* SD1.5 (image-variation context) fine-tuned by
  MusePose, the network the ControlNet's residuals are added to, as the MimicMotion base copies the
  MimicMotion UNet rather than SVD-xt.  The frozen networks are loaded straight in the mixed-precision dtype
  (no float32 host copy); with bf16/fp16 the ControlNet starts from the UNet's encoder rounded to that dtype.

One training forward on a sample ``[reference, f1 .. f(T-1)]`` is one sampling step of
:class:`~dispose.bases.musepose.pipeline.DisPoseMusePosePipeline` on one window covering ``f1 .. f(T-1)``: the
CLIP embedding of the reference, its latent through the reference UNet at timestep 0 into the reference
attention bank, the pose guider's features of the driving skeletons, the window's guidance (the pipeline's
``guidance_window``: driving frame ``j`` reads guidance frame ``j + 1``) encoded by
``controlnet.encode_guidance``, the ControlNet's residuals into the denoising UNet.  The conditioning is the
functions the pipeline calls (``clip_embedding``, ``reference_latent``, ``pose_features``,
``write_reference``, ``window_residuals``, ``denoise_window`` of :mod:`dispose.bases.musepose.pipeline`),
given this module's networks; a test checks a training forward at ``t = 999`` against a one-step sampling run.
The objective is MusePose's (:mod:`dispose.bases.musepose.loss`: v-prediction on zero-terminal-SNR betas,
offset noise, min-SNR weighting).

Training choices (the paper gives none of these; the release's ``train_stage_2.py`` where noted):

* Target latents are the VAE posterior *mean* x 0.18215, as the pipeline encodes the reference (the release
  draws a posterior sample).
* ``loss.conditioning_dropout``: with this probability a clip is trained as the unconditional half of
  classifier-free guidance sees it at inference (zero CLIP embedding, no reference attention; pose features
  and DisPose guidance unchanged).  The release drops whole batches and feeds a zero *image* to CLIP; here it
  is per clip and exactly what the sampler's unconditional half computes.
* Each clip of a batch reads its own reference (``bank.reads = [0 .. B-1]``, None for a dropped clip).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dispose.bases.musepose.loss import SDNoiseObjective
from dispose.bases.musepose.pipeline import (
    LATENT_SCALE,
    DisPoseMusePosePipeline,
    clip_embedding,
    denoise_window,
    guidance_window,
    pose_features,
    reference_latent,
    window_residuals,
    write_reference,
)
from dispose.bases.musepose.weights import (
    DISPOSE_MUSEPOSE_FILE,
    load_controlnet,
    load_pipeline,
    required_components,
)
from dispose.bases.training import (
    FrozenBaseModel,
    checkpoint_blocks,
    export_controlnet,
    frozen_dtype,
    load_frozen_base,
    load_training_cmp,
    model_inputs,
    sample_guidance,
)
from dispose.models.controlnet_sd import HybridControlNetSD

#: Blocks of MusePose's denoising UNet and the SD ControlNet recomputed in the backward pass: the resnets, the
#: spatial transformers (self-, reference and cross-attention) and the motion modules (temporal attention).
CHECKPOINTED_BLOCKS = ("ResnetBlock2D", "Transformer2DModel", "MusePoseMotionModule")


@dataclass
class SDNoiseDraw:
    """The random inputs of one training forward: timesteps (B,), noise (B, 4, F, h, w) for the F = T - 1
    driving frames, keep (B,) bool (False = the clip is trained as the unconditional half)."""

    timesteps: torch.Tensor
    noise: torch.Tensor
    keep: torch.Tensor

    def to(self, device: torch.device) -> SDNoiseDraw:
        return SDNoiseDraw(self.timesteps.to(device), self.noise.to(device), self.keep.to(device))


class MusePoseTrainingModel(FrozenBaseModel):
    """Frozen MusePose + trainable SD1.5 hybrid ControlNet; ``forward`` gives the per-clip loss."""

    def __init__(self, *, vae: nn.Module, image_encoder: nn.Module, reference_unet: nn.Module,
                 denoising_unet: nn.Module, pose_guider: nn.Module, controlnet: nn.Module, reference_bank,
                 objective: SDNoiseObjective | None = None, conditioning_dropout: float = 0.1,
                 vae_encode_chunk: int = 8, frozen_dtype: torch.dtype = torch.float32,
                 cmp: nn.Module | None = None) -> None:
        super().__init__()
        self.vae, self.image_encoder, self.pose_guider = vae, image_encoder, pose_guider
        self.reference_unet, self.denoising_unet = reference_unet, denoising_unet
        self.controlnet = controlnet
        self.reference_bank = reference_bank  # shared with the attention processors of the two UNets
        self.objective = objective or SDNoiseObjective()
        self.noise_scheduler = self.objective.scheduler()
        self.conditioning_dropout = conditioning_dropout
        self.vae_encode_chunk = vae_encode_chunk
        self.freeze(frozen_dtype)
        self.cmp = cmp  # frozen by load_cmp, kept in float32 as inference runs it (data.dense_field=cmp)

    # ------------------------------------------------------------------ parameter sets
    def frozen_modules(self) -> list[nn.Module]:
        return [self.vae, self.image_encoder, self.reference_unet, self.denoising_unet, self.pose_guider]

    def enable_gradient_checkpointing(self) -> None:
        """Recompute every resnet, spatial transformer and motion module of the denoising UNet and the
        ControlNet in the backward pass (:data:`CHECKPOINTED_BLOCKS`).  diffusers' own block checkpointing of
        these blocks recomputes the resnets only and keeps the attention and motion modules' activations
        (``bench/train_memory_musepose.py`` measures both)."""
        for module in (self.denoising_unet, self.controlnet):
            checkpoint_blocks(module, CHECKPOINTED_BLOCKS)

    # ------------------------------------------------------------------ inputs
    def latent_shape(self, batch: dict) -> tuple[int, ...]:
        """(B, C, F, h, w) latents of the F = T - 1 driving frames (MusePose's layout)."""
        b, t, _, height, width = batch["pixels"].shape
        scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return b, self.vae.config.latent_channels, t - 1, height // scale, width // scale

    def draw(self, batch: dict, generator: torch.Generator) -> SDNoiseDraw:
        """Random timesteps, (offset) noise and CFG-dropout flags for ``batch`` from ``generator``."""
        shape = self.latent_shape(batch)
        timesteps, noise = self.objective.draw(torch.empty(shape, device=generator.device), generator)
        keep = torch.rand(shape[0], generator=generator, device=generator.device) >= self.conditioning_dropout
        return SDNoiseDraw(timesteps, noise, keep)

    @torch.no_grad()
    def encode(self, batch: dict, keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """Target latents and the conditioning as the pipeline computes them (frozen, no gradients); fills the
        reference bank (clip ``i`` reads reference ``i``; a dropped clip none)."""
        pixels = batch["pixels"]
        device, dtype = pixels.device, self.denoising_unet.dtype
        b, t = pixels.shape[:2]
        frames = pixels[:, 1:].flatten(0, 1)
        parts = [self.vae.encode(frames[i:i + self.vae_encode_chunk].to(self.vae.dtype)).latent_dist.mean
                 for i in range(0, len(frames), self.vae_encode_chunk)]
        latents = (torch.cat(parts).float() * LATENT_SCALE).unflatten(0, (b, t - 1)).transpose(1, 2)
        ref01 = (pixels[:, 0].float() + 1.0) / 2.0
        embeds = torch.cat([clip_embedding(self.image_encoder, ref01[i:i + 1], device)
                            for i in range(b)]).to(dtype)
        ref_latents = reference_latent(self.vae, ref01, device).to(dtype)
        pose01 = (batch["pose_images"][:, 1:].float() + 1.0) / 2.0
        pose = torch.cat([pose_features(self.pose_guider, clip, device, chunk=self.vae_encode_chunk)
                          for clip in pose01])
        write_reference(self.reference_bank, self.reference_unet, ref_latents, embeds,
                        [index if kept else None for index, kept in enumerate(keep.tolist())])
        embeds = embeds * keep.view(-1, 1, 1).to(dtype)
        return {"latents": latents, "embeds": embeds, "pose_features": pose.to(dtype)}

    def guidance_window(self, batch: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The ControlNet's guidance inputs of the B * (T - 1) driving frames, each clip as one sampling
        window."""
        driving = batch["pixels"].shape[1] - 1
        windows = [guidance_window(sample_guidance(batch, index), list(range(driving)), driving,
                                   batch["pixels"].device, dtype)
                   for index in range(batch["pixels"].shape[0])]
        return {key: torch.cat([window[key] for window in windows]) for key in windows[0]}

    # ------------------------------------------------------------------ the step
    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, torch.Tensor],
                control) -> torch.Tensor:
        """The denoising UNet's output (B, 4, F, h, w) for noisy latents: the pipeline's window step (the
        reference bank must hold this batch's references: :meth:`encode`)."""
        model_in = self.noise_scheduler.scale_model_input(noisy, timesteps).to(self.denoising_unet.dtype)
        residuals = window_residuals(self.controlnet, model_in, timesteps, cond["embeds"], control)
        return denoise_window(self.denoising_unet, model_in, timesteps, cond["embeds"], cond["pose_features"],
                              residuals)

    def forward(self, batch: dict, draw: SDNoiseDraw) -> torch.Tensor:
        """Per-clip loss (B,) of one training step on a batch of the dataset (module docstring); its mean is
        the objective's batch loss."""
        batch = model_inputs(batch, self.cmp)
        cond = self.encode(batch, draw.keep)
        control = self.controlnet.encode_guidance(**self.guidance_window(batch, self.controlnet.dtype))
        noisy, target = self.objective.noisy_and_target(cond["latents"], draw.noise, draw.timesteps,
                                                        self.noise_scheduler)
        prediction = self.predict(noisy, draw.timesteps, cond, control)
        # the bank keeps this batch's references until the next encode: checkpointed blocks read them again
        return torch.stack([self.objective.loss(prediction[i:i + 1], target[i:i + 1], draw.timesteps[i:i + 1],
                                                self.noise_scheduler) for i in range(len(prediction))])


#: Weight components of the base a training config can point to one by one (``weights.<key>``, ``dispose train
#: --<key>``), as ``dispose animate``'s options do.
MUSEPOSE_COMPONENTS = ("musepose", "sd_image_variations", "clip_image_encoder", "sd_vae")


class MusePoseBase:
    """DisPose on MusePose / SD1.5 (v-prediction, zero terminal SNR, min-SNR weighting)."""

    name = "musepose"

    def build(self, config: Any) -> MusePoseTrainingModel:
        """The training model for a ``dispose.training.config.TrainConfig``: the frozen base read from the
        weights, the ControlNet from ``weights.controlnet`` or initialised from the denoising UNet."""
        base = load_frozen_base(config, MUSEPOSE_COMPONENTS, required_components, load_pipeline)
        controlnet = None
        if config.weights.controlnet is not None:
            controlnet = load_controlnet(Path(config.weights.controlnet), base.denoising_unet)
        return self.assemble(config, base, controlnet)

    def assemble(self, config: Any, base: Any, controlnet: nn.Module | None = None, *,
                 copy_weights: bool = True) -> MusePoseTrainingModel:
        """The training model around ``base`` (:meth:`dispose.bases.training.TrainingBase.assemble`)."""
        if controlnet is None:
            controlnet = HybridControlNetSD.from_unet(
                base.denoising_unet, load_weights_from_unet=copy_weights,
                point_channels=config.weights.point_channels)
        loss = config.loss
        model = MusePoseTrainingModel(
            vae=base.vae, image_encoder=base.image_encoder, reference_unet=base.reference_unet,
            denoising_unet=base.denoising_unet, pose_guider=base.pose_guider, controlnet=controlnet.float(),
            reference_bank=base.reference_bank,
            objective=SDNoiseObjective(noise_offset=loss.noise_offset, snr_gamma=loss.snr_gamma),
            conditioning_dropout=loss.conditioning_dropout, vae_encode_chunk=config.train.vae_encode_chunk,
            frozen_dtype=frozen_dtype(config.train.mixed_precision), cmp=load_training_cmp(config))
        # plain attribute (not a module): the sampler, for validation pipelines
        model.scheduler = base.scheduler
        return model

    def controlnet(self, model: MusePoseTrainingModel) -> nn.Module:
        return model.controlnet

    def pipeline(self, model: MusePoseTrainingModel) -> DisPoseMusePosePipeline:
        """A sampling pipeline on the model's networks; it reconnects the reference attention to a new bank,
        which the model then shares."""
        pipeline = DisPoseMusePosePipeline(vae=model.vae, image_encoder=model.image_encoder,
                                           reference_unet=model.reference_unet,
                                           denoising_unet=model.denoising_unet, pose_guider=model.pose_guider,
                                           scheduler=model.scheduler, controlnet=model.controlnet)
        model.reference_bank = pipeline.reference_bank
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def export(self, controlnet: nn.Module, folder: Path, metadata: dict[str, str]) -> tuple[Path, ...]:
        """``folder/DisPose_MusePose.pth`` + ``.safetensors`` (what ``--dispose-musepose`` loads strictly)."""
        return export_controlnet(controlnet, folder, metadata=metadata, name=Path(DISPOSE_MUSEPOSE_FILE).stem)

