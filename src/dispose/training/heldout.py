"""The loss on held-out samples at fixed noise levels and fixed noise: a learning curve without the randomness
of the training draws.

Each held-out sample ``i`` gets one noise draw fixed for the whole run: the base's own ``draw`` from a
generator seeded with ``seed + i``, every clip conditioned (no CFG dropout), and for an EDM base (MimicMotion)
the sigma replaced by ``EVAL_SIGMAS[i % 5]`` (0.2 .. 20, log-spaced over the range the training distribution
covers), so every evaluation sees the same noise levels.  The samples are read from the dataset once, when the
evaluation is set up, and kept on the host (uint8 images, float16 fields), so they stay the same whatever
epoch the dataset has reached; each evaluation runs one forward per sample, so device memory is that of one
training micro-batch.

Used by the trainer (``validation.loss_every``, :mod:`dispose.training.trainer`) and by
``bench/train_learning.py``.
"""

from __future__ import annotations

import dataclasses

import torch

#: The EDM noise levels of the held-out samples, one per sample in turn.
EVAL_SIGMAS = (0.2, 0.7, 2.0, 6.0, 20.0)


class HeldOutLoss:
    """``loss(model) -> float``: the mean per-clip loss of ``model`` over ``count`` samples of ``dataset``."""

    def __init__(self, dataset, count: int = len(EVAL_SIGMAS), seed: int = 1234) -> None:
        if len(dataset) == 0:
            raise ValueError("the held-out dataset is empty")
        self.seed = seed
        self.samples = [dataset[i % len(dataset)] for i in range(count)]

    def batch(self, slot: int, device: torch.device) -> dict[str, torch.Tensor]:
        return {key: value.unsqueeze(0).to(device) for key, value in self.samples[slot].items()}

    def draw(self, model, slot: int, batch: dict):
        """The fixed noise draw of held-out sample ``slot`` (made on the CPU, so it is the same on any
        device)."""
        cpu_batch = {key: value.cpu() for key, value in batch.items()}
        draw = model.draw(cpu_batch, torch.Generator().manual_seed(self.seed + slot))
        fixed = {"keep": torch.ones_like(draw.keep)}
        if hasattr(draw, "sigmas"):
            fixed["sigmas"] = torch.full_like(draw.sigmas, EVAL_SIGMAS[slot % len(EVAL_SIGMAS)])
        return dataclasses.replace(draw, **fixed)

    @torch.no_grad()
    def __call__(self, model, device: torch.device | None = None) -> float:
        device = device if device is not None else next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            losses = []
            for slot in range(len(self.samples)):
                batch = self.batch(slot, device)
                draw = self.draw(model, slot, batch).to(device)
                losses.append(model(batch, draw).float().mean())
        finally:
            model.train(was_training)
        return torch.stack(losses).mean().item()
