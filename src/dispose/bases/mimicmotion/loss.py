"""SVD's EDM training objective for the v-prediction parameterisation (the MimicMotion / DisPose base).

Stable Video Diffusion is an EDM model (Karras et al. 2022) in the v-parameterisation: the network ``F`` sees
``c_in * x`` and ``c_noise`` and the denoiser is ``D(x; sigma) = c_skip * x + c_out * F(c_in * x, c_noise)``
with, for ``sigma_data = 1``::

    c_skip = 1 / (sigma^2 + 1)      c_out = -sigma / sqrt(sigma^2 + 1)
    c_in   = 1 / sqrt(sigma^2 + 1)  c_noise = 0.25 * log(sigma)

(Stability's ``generative-models``: ``VScalingWithEDMcNoise`` in ``sgm/modules/diffusionmodules/
denoiser_scaling.py``.)  These are exactly the formulas of diffusers' ``EulerDiscreteScheduler`` configured
as SVD's (``prediction_type="v_prediction"``, ``timestep_type="continuous"``): ``scale_model_input`` divides
by ``sqrt(sigma^2 + 1)``, the timestep is ``0.25 * log(sigma)`` and ``step`` forms ``pred_original_sample``
as above (tested in ``tests/test_training_loss.py``).

Training (``generative-models``' ``StandardDiffusionLoss`` + ``EDMSampling`` + ``VWeighting``):

* ``x0`` are the VAE latents of the clip times the VAE scaling factor; ``x = x0 + sigma * n``,
  ``n ~ N(0, I)``;
* ``log sigma ~ N(P_mean, P_std^2)``, one sigma per clip, shared by its frames.  ``P_mean = 0.7``,
  ``P_std = 1.6``, the values of the public SVD fine-tuning script we followed (pixeli99/SVD_Xtend,
  ``train_svd.py``), which shifts generative-models' image defaults (-1.2, 1.2) towards the higher noise
  levels SVD's high-resolution video fine-tuning uses; configurable (``loss.p_mean``, ``loss.p_std``);
* loss ``w(sigma) * ||D(x; sigma) - x0||^2`` averaged per clip, with ``w = (sigma^2 + 1) / sigma^2`` (EDM's
  weight for ``sigma_data = 1``; it makes ``w * c_out^2 = 1``, i.e. an unweighted MSE on the v target).

Neither DisPose nor MimicMotion publishes training code; this is SVD's own objective, which is what a
frozen SVD-based UNet was trained with.  MusePose's base (SD1.5) trains with epsilon prediction: it plugs
in as another objective beside this one (:mod:`dispose.bases.mimicmotion.training`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) broadcasting against ``like``."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


@dataclass(frozen=True)
class Preconditioning:
    """EDM coefficients of one batch of sigmas, shaped to broadcast against the latents (c_noise: (B,))."""

    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


@dataclass(frozen=True)
class EDMVObjective:
    """SVD's EDM v-prediction objective (module docstring); ``p_mean``/``p_std``: log-normal sigma
    sampling."""

    p_mean: float = 0.7
    p_std: float = 1.6

    def sample_sigmas(self, batch: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
        """(B,) float32 sigmas with ``log sigma ~ N(p_mean, p_std^2)``, drawn on the generator's device."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        normal = torch.randn(batch, generator=generator, device=gen_device)
        return (self.p_mean + self.p_std * normal).exp().to(device)

    @staticmethod
    def preconditioning(sigmas: torch.Tensor, like: torch.Tensor) -> Preconditioning:
        """c_skip, c_out, c_in (broadcasting against ``like``) and c_noise (B,) for sigmas (B,)."""
        sigmas = sigmas.float()
        norm = (sigmas ** 2 + 1.0).sqrt()
        return Preconditioning(c_skip=_per_sample(1.0 / norm ** 2, like),
                               c_out=_per_sample(-sigmas / norm, like), c_in=_per_sample(1.0 / norm, like),
                               c_noise=0.25 * sigmas.log())

    @staticmethod
    def weight(sigmas: torch.Tensor) -> torch.Tensor:
        """EDM loss weight ``(sigma^2 + 1) / sigma^2`` (B,)."""
        sigmas = sigmas.float()
        return (sigmas ** 2 + 1.0) / sigmas ** 2

    @staticmethod
    def noisy(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        """``x = x0 + sigma * n`` (float32)."""
        return latents.float() + noise.float() * _per_sample(sigmas.float(), latents)

    @staticmethod
    def denoised(noisy: torch.Tensor, model_output: torch.Tensor, pre: Preconditioning) -> torch.Tensor:
        """``D(x; sigma) = c_skip * x + c_out * F`` from the network's output ``F`` (float32)."""
        return pre.c_skip * noisy.float() + pre.c_out * model_output.float()

    def loss(self, denoised: torch.Tensor, latents: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        """Per-clip weighted MSE (B,) between ``D(x; sigma)`` and ``x0``."""
        error = (denoised.float() - latents.float()) ** 2
        return self.weight(sigmas) * error.flatten(1).mean(dim=1)
