"""The noise-prediction objective of MusePose's SD1.5 UNet (what a ControlNet on the frozen MusePose
trains with).

MusePose (``train_stage_1.py`` / ``train_stage_2.py`` with ``enable_zero_snr: True``, ``noise_offset: 0.05``,
``snr_gamma: 5.0``) trains the SD1.5 UNet in the *v*-parameterisation on DDPM betas rescaled to zero terminal
SNR, not with SD1.5's original epsilon prediction; its sampler (:data:`~dispose.bases.musepose.pipeline.
MUSEPOSE_SCHEDULER`) reads the output as v.  A ControlNet added to the frozen MusePose UNet must train against
the parameterisation that UNet predicts, so this objective follows the release:

* ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) n`` (diffusers' ``add_noise``) with ``t`` uniform in
  ``[0, 1000)`` (one per clip, shared by its frames) and ``n = N(0, I) + noise_offset * N(0, I)`` per clip and
  channel (the offset noise is constant over frames and pixels);
* target ``v = sqrt(abar_t) n - sqrt(1 - abar_t) x0`` (``prediction_type="v_prediction"``; ``"epsilon"``
  gives ``n``);
* loss: per-clip MSE weighted by min-SNR-gamma, ``min(snr', gamma) / snr'`` with ``snr' = snr + 1`` for v
  (``snr = abar / (1 - abar)``), averaged over the batch; ``snr_gamma=0`` gives the plain MSE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler

from dispose.bases.musepose.pipeline import MUSEPOSE_SCHEDULER


@dataclass(frozen=True)
class SDNoiseObjective:
    """MusePose's training objective (module docstring)."""

    prediction_type: str = "v_prediction"
    noise_offset: float = 0.05
    snr_gamma: float = 5.0

    def scheduler(self) -> DDIMScheduler:
        """The release's training scheduler: its sampler's betas (zero-terminal-SNR rescaled)."""
        return DDIMScheduler(**{**MUSEPOSE_SCHEDULER, "prediction_type": self.prediction_type})

    def draw(self, latents: torch.Tensor, generator: torch.Generator | None = None):
        """(timesteps (B,), noise like ``latents``) for (B, C, F, h, w) latents."""
        batch, channels = latents.shape[:2]
        gen_device = generator.device if generator is not None else torch.device("cpu")
        timesteps = torch.randint(0, 1000, (batch,), generator=generator, device=gen_device)
        noise = torch.randn(latents.shape, generator=generator, device=gen_device)
        if self.noise_offset:
            offset = torch.randn(batch, channels, *([1] * (latents.dim() - 2)), generator=generator,
                                 device=gen_device)
            noise = noise + self.noise_offset * offset
        return timesteps.to(latents.device), noise.to(latents.device, latents.dtype)

    def noisy_and_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                         scheduler: DDIMScheduler) -> tuple[torch.Tensor, torch.Tensor]:
        """The UNet input ``x_t`` and the regression target (v or the noise)."""
        noisy = scheduler.add_noise(latents, noise, timesteps)
        if self.prediction_type == "epsilon":
            return noisy, noise
        if self.prediction_type == "v_prediction":
            return noisy, scheduler.get_velocity(latents, noise, timesteps)
        raise ValueError(f"prediction_type must be 'v_prediction' or 'epsilon', got {self.prediction_type!r}")

    def loss(self, prediction: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor,
             scheduler: DDIMScheduler) -> torch.Tensor:
        """Min-SNR-weighted MSE (scalar)."""
        per_clip = (prediction.float() - target.float()).pow(2).flatten(1).mean(1)
        if not self.snr_gamma:
            return per_clip.mean()
        abar = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
        snr = abar / (1.0 - abar)
        if self.prediction_type == "v_prediction":
            snr = snr + 1.0
        # abar = 0 at t = 999
        weight = torch.where(snr > 0, snr.clamp(max=self.snr_gamma) / snr.clamp(min=1e-20), 1.0)
        return (per_clip * weight).mean()
