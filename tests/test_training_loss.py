"""The EDM v-prediction objective agrees with the scheduler sampling uses (SVD's EulerDiscreteScheduler)."""

from __future__ import annotations

import torch
from diffusers import EulerDiscreteScheduler

from dispose.bases.mimicmotion.loss import EDMVObjective
from dispose.bases.mimicmotion.tiny import SVD_SCHEDULER


def test_perfect_v_prediction_reconstructs_x0_through_the_sampling_scheduler():
    objective = EDMVObjective()
    scheduler = EulerDiscreteScheduler(**SVD_SCHEDULER)
    scheduler.set_timesteps(10)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 3, 4, 8, 8, generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    sample = x0 + scheduler.sigmas[0] * noise
    for index, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[index].reshape(1)
        pre = objective.preconditioning(sigma, sample)
        # what the network would have to output so that the training denoiser returns x0 exactly
        perfect = (x0 - pre.c_skip * sample) / pre.c_out
        assert torch.allclose(objective.denoised(sample, perfect, pre), x0, atol=1e-5)
        # the sampler feeds the network c_in * x and c_noise, and forms the same x0 from its output
        assert torch.allclose(scheduler.scale_model_input(sample, t), pre.c_in * sample, rtol=1e-5, atol=1e-6)
        assert torch.allclose(t.float(), pre.c_noise[0], rtol=1e-5, atol=1e-6)
        out = scheduler.step(perfect, t, sample)
        assert torch.allclose(out.pred_original_sample, x0, atol=1e-3 * max(1.0, float(sigma)))
        sample = out.prev_sample
        assert torch.allclose(sample, x0 + scheduler.sigmas[index + 1] * noise, atol=1e-3)
    assert torch.allclose(sample, x0, atol=1e-3)  # the last step lands on x0


def test_loss_is_zero_for_the_perfect_prediction_and_grows_with_the_error():
    objective = EDMVObjective()
    x0 = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sigmas = torch.tensor([0.3, 20.0])
    assert torch.equal(objective.loss(x0, x0, sigmas), torch.zeros(2))
    loss = objective.loss(x0 + 0.1, x0, sigmas)
    assert torch.allclose(loss, objective.weight(sigmas) * 0.01)
    # EDM's weight cancels c_out^2: the loss is an unweighted MSE on the network output (v)
    pre = objective.preconditioning(sigmas, x0)
    assert torch.allclose(objective.weight(sigmas) * pre.c_out.flatten() ** 2, torch.ones(2))


def test_sigmas_are_log_normal_with_the_configured_mean_and_spread():
    objective = EDMVObjective(p_mean=0.7, p_std=1.6)
    log_sigma = objective.sample_sigmas(40_000, torch.Generator().manual_seed(0)).log()
    assert abs(log_sigma.mean().item() - 0.7) < 0.03
    assert abs(log_sigma.std().item() - 1.6) < 0.03
