"""Per-tile conditioning kept across denoising steps, within a memory budget.

The conditioning of a tile that depends neither on the noisy latent nor on the timestep (DisPose's encoded
guidance, the pose network's features) is the same at every step.  Sampling visits every tile at every step,
so a tile's conditioning is either kept for all steps or recomputed at each: :class:`TileCache` keeps tiles in
the order they are first offered while their total size fits the budget (``--guidance-cache-mb``, default
:data:`GUIDANCE_CACHE_MB`) and recomputation covers the rest, so device memory stays bounded however long the
video is and short videos are computed once.  Kept and recomputed conditioning are the same numbers (the
computation is deterministic per tile).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable

import torch

#: Default budget (MiB) of the per-tile conditioning kept across steps.
GUIDANCE_CACHE_MB = 2048.0


def tensor_bytes(value) -> int:
    """Bytes of the tensors in ``value`` (a tensor, or dataclasses, dicts, lists and tuples holding some)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(tensor_bytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


class TileCache:
    """Values per key, kept while their total :func:`tensor_bytes` fits ``budget_mb`` MiB (None: no limit,
    0: nothing kept)."""

    def __init__(self, budget_mb: float | None) -> None:
        self.budget = None if budget_mb is None else int(budget_mb * (1 << 20))
        self.used = 0
        self._values: dict[Hashable, object] = {}
        self._refused: set[Hashable] = set()

    def get(self, key: Hashable):
        return self._values.get(key)

    def offer(self, key: Hashable, value) -> None:
        """Keep ``value`` for ``key`` if it fits the budget (measured now: offer a value once it is
        complete)."""
        if key in self._values or key in self._refused:
            return
        size = tensor_bytes(value)
        if self.budget is None or self.used + size <= self.budget:
            self._values[key] = value
            self.used += size
        else:
            self._refused.add(key)

    def clear(self) -> None:
        self._values.clear()
        self._refused.clear()
        self.used = 0

