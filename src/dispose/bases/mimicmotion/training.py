"""The training model: a frozen animation base plus DisPose's trainable hybrid ControlNet (paper sec. 4.3).

Shaped like Champ's ``ChampModel`` (one ``nn.Module`` holding every network, whose ``forward`` is one training
step's computation, so accelerate / DDP / DeepSpeed wrap a single module).  For the MimicMotion base
(:class:`MimicMotionTrainingModel`):

* frozen (``requires_grad=False``, eval mode, cast to the mixed-precision dtype): SVD's VAE and CLIP image
  encoder, MimicMotion's UNet and PoseNet;
* trainable: the hybrid ControlNet with its motion encoder (``controlnet_cond_embedding``) and point encoder
  (``point_adapter``), initialised from the UNet (``HybridControlNetSVD.from_unet``: encoder weights copied,
  zero output convolutions; the paper initialises from SVD-xt, whose encoder MimicMotion's UNet fine-tuned) or
  from a given ``DisPose.pth``.  The frozen base is loaded straight in the mixed-precision dtype (the UNet is
  built on the meta device and takes the checkpoint's tensors), so no float32 copy of it is ever held on the
  host; with bf16/fp16 the ControlNet therefore starts from the UNet's encoder rounded to that dtype.

One training forward on a sample ``[reference, f1 .. f(T-1)]`` is one sampling step of the pipeline on one
tile (:mod:`dispose.bases.mimicmotion.pipeline`): the CLIP embedding of the reference, its VAE latent
(posterior mode, unscaled) concatenated to the noisy latents of every frame, PoseNet latents of the
skeletons added in the UNet, added time ids ``[fps - 1, motion_bucket_id, noise_aug_strength]``, the tile's
guidance built by ``GuidanceTensors.window`` (:mod:`dispose.guidance.stage`) and encoded by
``controlnet.encode_guidance``, the ControlNet's residuals into the UNet.  The conditioning and the denoiser
call are the functions the pipeline calls (``clip_embedding``, ``pose_latents``, ``time_ids``,
``denoise_tile`` of :mod:`dispose.bases.mimicmotion.pipeline`), given this module's networks, so training
cannot drift from sampling; a test checks a training forward at the first sampling sigma against a one-step
sampling run.  The EDM objective is :mod:`dispose.bases.mimicmotion.loss`.

Training choices (not in the paper, which gives none of these):

* Target latents are the VAE posterior *mode* times the scaling factor (SVD fine-tuning scripts draw a
  posterior sample; SVD's posterior std is tiny, and the mode keeps a resumed run bit-identical).
* ``conditioning_dropout``: with this probability a clip is trained as the unconditional half of
  classifier-free guidance sees it at inference (zero CLIP embedding, reference latent and pose latents,
  DisPose guidance unchanged), so the ControlNet also learns what that half gives it.
* ``F_s`` of a sample is generated from its keypoint trajectories on the training device, by the same
  ``GuidanceTensors.window`` sampling uses; its step 0 is reference -> f1, as in the first inference tile
  (later inference tiles see the step from the frame before the tile instead).
* ``F_d`` (:func:`dispose.bases.training.dense_field`): with ``data.dense_field=cmp`` (the default, paper
  sec. 4.1 and App. A) the frozen CMP turns the watershed samples of the real flow (``P_d`` at training) into
  ``F_d`` on the training device through inference's own call
  (:func:`dispose.guidance.motion_fields.cmp_motion_field`: the reference resized to CMP's 384 grid, CMP in
  float32, its flow resized back to W x H as the release does); with ``flow`` the stored optical flow itself
  is ``F_d``.  Either way it then goes through ``GuidanceTensors.window`` and ``encode_guidance`` exactly as
  at inference.
* Samples arrive as uint8 images and float16 fields (:mod:`dispose.training.dataset`) and are converted on
  the device (:func:`dispose.bases.training.model_inputs`).

A second base (MusePose / SD1.5, v-prediction: :mod:`dispose.bases.musepose.training`) has its own model,
objective and export file name; each base's registry entry hands out its recipe (``Base.training``), and the
trainer only uses the :class:`~dispose.bases.training.TrainingBase` interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dispose.bases.mimicmotion.loss import EDMVObjective
from dispose.bases.mimicmotion.pipeline import (
    DisPoseMimicMotionPipeline,
    clip_embedding,
    denoise_tile,
    pose_latents,
    time_ids,
)
from dispose.bases.mimicmotion.weights import load_controlnet, load_pipeline, required_components
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
from dispose.models.controlnet_svd import HybridControlNetSVD

#: Blocks of the SVD UNet / ControlNet recomputed in the backward pass with gradient checkpointing: every
#: spatio-temporal resnet and every spatio-temporal transformer (spatial and temporal attention together).
CHECKPOINTED_BLOCKS = ("SpatioTemporalResBlock", "TransformerSpatioTemporalModel")


@dataclass
class NoiseDraw:
    """The random inputs of one training forward (drawn by the trainer, fixed for evaluation).

    sigmas (B,), noise like the latents (B, T, C, h, w), reference_noise (B, 3, H, W) for the noise
    augmentation of the reference, keep (B,) bool: False = the clip is trained as the unconditional half.
    """

    sigmas: torch.Tensor
    noise: torch.Tensor
    reference_noise: torch.Tensor
    keep: torch.Tensor

    def to(self, device: torch.device) -> NoiseDraw:
        return NoiseDraw(*(tensor.to(device)
                           for tensor in (self.sigmas, self.noise, self.reference_noise, self.keep)))


@dataclass(frozen=True)
class Conditioning:
    """The UNet conditioning of training samples (inference's values by default) and the CFG dropout."""

    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.0
    dropout: float = 0.1


class MimicMotionTrainingModel(FrozenBaseModel):
    """Frozen MimicMotion/SVD base + trainable hybrid ControlNet; ``forward`` gives the per-clip loss."""

    def __init__(self, *, vae: nn.Module, image_encoder: nn.Module, unet: nn.Module, pose_net: nn.Module,
                 controlnet: nn.Module, feature_extractor=None, objective: EDMVObjective | None = None,
                 conditioning: Conditioning | None = None, vae_encode_chunk: int = 8,
                 frozen_dtype: torch.dtype = torch.float32, cmp: nn.Module | None = None) -> None:
        super().__init__()
        self.vae, self.image_encoder, self.unet, self.pose_net = vae, image_encoder, unet, pose_net
        self.controlnet = controlnet
        self.feature_extractor = feature_extractor
        self.objective = objective or EDMVObjective()
        self.conditioning = conditioning or Conditioning()
        self.vae_encode_chunk = vae_encode_chunk
        self.freeze(frozen_dtype)
        self.cmp = cmp  # frozen by load_cmp, kept in float32 as inference runs it (data.dense_field=cmp)

    # ------------------------------------------------------------------ parameter sets
    def frozen_modules(self) -> list[nn.Module]:
        return [self.vae, self.image_encoder, self.unet, self.pose_net]

    def enable_gradient_checkpointing(self) -> None:
        """Recompute every spatio-temporal block of the UNet and the ControlNet in the backward pass.

        diffusers' own ``enable_gradient_checkpointing`` of the SVD UNet recomputes the resnets and the
        spatial transformer blocks only, and keeps the temporal transformer blocks' activations, several times
        the memory of checkpointing both (``bench/train_memory.py``; figures in the README's training
        section)."""
        for module in (self.unet, self.controlnet):
            checkpoint_blocks(module, CHECKPOINTED_BLOCKS)

    # ------------------------------------------------------------------ inputs
    @property
    def latent_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_shape(self, batch: dict) -> tuple[int, ...]:
        b, t, _, height, width = batch["pixels"].shape
        return b, t, self.vae.config.latent_channels, height // self.latent_scale, width // self.latent_scale

    def draw(self, batch: dict, generator: torch.Generator) -> NoiseDraw:
        """Random sigmas, noise and CFG-dropout flags for ``batch`` from ``generator`` (on its device)."""
        shape = self.latent_shape(batch)
        device = generator.device
        sigmas = self.objective.sample_sigmas(shape[0], generator, device)
        noise = torch.randn(shape, generator=generator, device=device)
        reference_noise = torch.randn(batch["pixels"][:, 0].shape, generator=generator, device=device)
        keep = torch.rand(shape[0], generator=generator, device=device) >= self.conditioning.dropout
        return NoiseDraw(sigmas, noise, reference_noise, keep)

    @torch.no_grad()
    def encode(self, batch: dict, reference_noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """Target latents and the conditioning, computed as the pipeline does (frozen, no gradients)."""
        pixels = batch["pixels"]
        device, dtype = pixels.device, self.unet.dtype
        b, t = pixels.shape[:2]
        frames = pixels.flatten(0, 1)
        parts = [self.vae.encode(frames[i:i + self.vae_encode_chunk].to(self.vae.dtype)).latent_dist.mode()
                 for i in range(0, len(frames), self.vae_encode_chunk)]
        latents = torch.cat(parts).float().unflatten(0, (b, t)) * self.vae.config.scaling_factor
        reference = pixels[:, 0]
        strength = self.conditioning.noise_aug_strength
        reference_latent = self.vae.encode((reference + strength * reference_noise).to(self.vae.dtype)
                                           ).latent_dist.mode()
        embeds = clip_embedding(self.image_encoder, self.feature_extractor, (reference.float() + 1.0) / 2.0,
                                device).to(dtype)
        poses = pose_latents(self.pose_net, batch["pose_images"].flatten(0, 1), device,
                             chunk=self.vae_encode_chunk).unflatten(0, (b, t))
        ids = time_ids(self.unet, self.conditioning.fps, self.conditioning.motion_bucket_id, strength,
                       device).to(dtype).expand(b, -1)
        return {"latents": latents, "embeds": embeds, "reference_latents": reference_latent.to(dtype),
                "pose_latents": poses, "time_ids": ids}

    def guidance_window(self, batch: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The ControlNet's guidance inputs for all B*T frames, each sample built as an inference tile."""
        pixels = batch["pixels"]
        windows = [sample_guidance(batch, index).window(range(pixels.shape[1]), device=pixels.device,
                                                        dtype=dtype)
                   for index in range(pixels.shape[0])]
        return {key: torch.cat([window[key] for window in windows]) for key in windows[0]}

    # ------------------------------------------------------------------ the step
    def denoise(self, noisy: torch.Tensor, sigmas: torch.Tensor, cond: dict[str, torch.Tensor],
                control, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``D(x; sigma)`` (float32) of noisy latents (B, T, C, h, w): the pipeline's denoiser call on one
        tile; ``keep`` False zeroes a clip's CLIP embedding, reference latent and pose latents (the CFG
        half)."""
        embeds, reference, pose = cond["embeds"], cond["reference_latents"], cond["pose_latents"]
        if keep is not None:
            embeds = embeds * keep.view(-1, 1, 1).to(embeds.dtype)
            reference = reference * keep.view(-1, 1, 1, 1).to(reference.dtype)
            pose = pose * keep.view(-1, 1, 1, 1, 1).to(pose.dtype)
        pre = self.objective.preconditioning(sigmas, noisy)
        frames = noisy.shape[1]
        model_in = torch.cat([(noisy * pre.c_in).to(self.unet.dtype),
                              reference.unsqueeze(1).expand(-1, frames, -1, -1, -1)], dim=2)
        output = denoise_tile(self.unet, self.controlnet, model_in, pre.c_noise.to(noisy.device), embeds,
                              cond["time_ids"], pose, control, 1.0)
        return self.objective.denoised(noisy, output, pre)

    def forward(self, batch: dict, draw: NoiseDraw) -> torch.Tensor:
        """Per-clip loss (B,) of one training step on a batch of the dataset (module docstring)."""
        batch = model_inputs(batch, self.cmp)
        cond = self.encode(batch, draw.reference_noise)
        control = self.controlnet.encode_guidance(**self.guidance_window(batch, self.controlnet.dtype))
        noisy = self.objective.noisy(cond["latents"], draw.noise, draw.sigmas)
        denoised = self.denoise(noisy, draw.sigmas, cond, control, draw.keep)
        return self.objective.loss(denoised, cond["latents"], draw.sigmas)


class MimicMotionBase:
    """DisPose on MimicMotion / SVD (EDM v-prediction)."""

    name = "mimicmotion"

    def build(self, config: Any) -> MimicMotionTrainingModel:
        """The training model for a ``dispose.training.config.TrainConfig``: the frozen base read from the
        weights, the ControlNet from ``weights.controlnet`` or initialised from the UNet."""
        base = load_frozen_base(config, ("svd", "mimicmotion"), required_components, load_pipeline)
        controlnet = None
        if config.weights.controlnet is not None:
            controlnet = load_controlnet(Path(config.weights.controlnet), base.unet)
        return self.assemble(config, base, controlnet)

    def assemble(self, config: Any, base: Any, controlnet: nn.Module | None = None, *,
                 copy_weights: bool = True) -> MimicMotionTrainingModel:
        """The training model around ``base`` (:meth:`dispose.bases.training.TrainingBase.assemble`)."""
        if controlnet is None:
            controlnet = HybridControlNetSVD.from_unet(base.unet, load_weights_from_unet=copy_weights,
                                                       point_channels=config.weights.point_channels)
        loss = config.loss
        model = MimicMotionTrainingModel(
            vae=base.vae, image_encoder=base.image_encoder, unet=base.unet, pose_net=base.pose_net,
            controlnet=controlnet.float(), feature_extractor=base.feature_extractor,
            objective=EDMVObjective(loss.p_mean, loss.p_std),
            conditioning=Conditioning(loss.fps, loss.motion_bucket_id, loss.noise_aug_strength,
                                      loss.conditioning_dropout),
            vae_encode_chunk=config.train.vae_encode_chunk,
            frozen_dtype=frozen_dtype(config.train.mixed_precision), cmp=load_training_cmp(config))
        model.scheduler = base.scheduler  # plain attribute (not a module): for validation pipelines
        return model

    def controlnet(self, model: MimicMotionTrainingModel) -> nn.Module:
        return model.controlnet

    def pipeline(self, model: MimicMotionTrainingModel) -> DisPoseMimicMotionPipeline:
        pipeline = DisPoseMimicMotionPipeline(vae=model.vae, image_encoder=model.image_encoder,
                                              unet=model.unet, pose_net=model.pose_net,
                                              scheduler=model.scheduler, controlnet=model.controlnet,
                                              feature_extractor=model.feature_extractor)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def export(self, controlnet: nn.Module, folder: Path, metadata: dict[str, str]) -> tuple[Path, ...]:
        """``folder/DisPose.pth`` + ``.safetensors`` (what ``--dispose-ckpt`` loads)."""
        return export_controlnet(controlnet, folder, metadata=metadata)
