"""Timing helper shared by the benchmark scripts (run them from any folder: ``python bench/<script>.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def best_of(fn: Callable[[], T], repeats: int = 3) -> tuple[float, T]:
    """Fastest wall time of ``repeats`` calls of ``fn`` and the last call's result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out
