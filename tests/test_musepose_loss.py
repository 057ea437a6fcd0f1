"""MusePose's training objective: v targets the sampler inverts, offset noise, min-SNR weights."""

from __future__ import annotations

import torch

from dispose.bases.musepose.loss import SDNoiseObjective


def test_v_target_is_what_the_sampler_reads_back_as_the_clean_latents():
    objective = SDNoiseObjective()
    scheduler = objective.scheduler()
    latents = torch.randn(3, 4, 2, 8, 8)
    timesteps, noise = objective.draw(latents, torch.Generator().manual_seed(0))
    noisy, target = objective.noisy_and_target(latents, noise, timesteps, scheduler)
    abar = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(abar.sqrt() * noisy - (1 - abar).sqrt() * target, latents, atol=1e-5,
                               rtol=1e-5)
    assert objective.loss(target, target, timesteps, scheduler) == 0


def test_offset_noise_is_shared_by_frames_and_pixels():
    objective = SDNoiseObjective(noise_offset=100.0)
    _, noise = objective.draw(torch.zeros(2, 4, 3, 8, 8), torch.Generator().manual_seed(1))
    per_channel = noise.mean(dim=(2, 3, 4), keepdim=True)
    assert (per_channel.abs() > 20).float().mean() > 0.5  # dominated by one offset per clip and channel
    assert ((noise - per_channel).std() - 1).abs() < 0.2


def test_min_snr_weights():
    objective = SDNoiseObjective()
    scheduler = objective.scheduler()
    target = torch.zeros(2, 4, 1, 2, 2)
    error = torch.ones_like(target)
    # t = 999 has zero SNR (weight 1 for v); t = 0 has a huge SNR, weight gamma / (snr + 1).
    assert objective.loss(error[:1], target[:1], torch.tensor([999]), scheduler) == 1
    abar = scheduler.alphas_cumprod[0]
    expected = 5.0 / (abar / (1 - abar) + 1)
    torch.testing.assert_close(objective.loss(error[:1], target[:1], torch.tensor([0]), scheduler),
                               expected.float())
    assert SDNoiseObjective(snr_gamma=0).loss(error, target, torch.tensor([0, 999]), scheduler) == 1
