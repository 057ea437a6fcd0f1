"""The base-model registry: every animation model DisPose plugs into is one :class:`Base` entry.

An entry declares its weight components and their layout below ``--weights`` (added to
:data:`dispose.pipelines.weights.COMPONENTS`), which of them a run needs, how to load its pipeline, how to
sample one video with it (:class:`SamplingRequest` -> uint8 frames, streamed a chunk at a time), its tiling
convention, its default settings and its parameter table.  The engine (:mod:`dispose.engine`), the commands
and the trainer only talk to entries, so a new base is one package in :mod:`dispose.bases` plus one
:func:`register` call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dispose.errors import UserError


@dataclass
class SamplingRequest:
    """One video to sample: the reference and skeletons at the generation size, the DisPose guidance (None for
    the baseline), the settings and runtime, and the hooks the engine passes through.

    ``progress_bar`` is a tqdm-like object (``update()``, ``total``) advanced once per tile and step and once per
    decoded chunk; ``callback_on_step_end`` is diffusers' ``f(pipeline, step, timestep, kwargs) -> kwargs``.
    """

    reference: np.ndarray  # (H, W, 3) uint8
    skeletons: Any  # (N + 1, H, W, 3) uint8 array or FrameStore, [0] = the reference pose
    guidance: Any  # dispose.guidance.stage.GuidanceTensors or None
    settings: Any  # dispose.settings.JobSettings
    runtime: Any  # dispose.engine.Runtime
    generator: torch.Generator
    progress_bar: Any = None
    callback_on_step_end: Callable | None = None


@dataclass(frozen=True)
class Base:
    """A base animation model (see module docstring).

    Attributes:
        name: the ``--base`` value.
        title: what it is, for help texts and sidecars.
        components: its own weight components (:class:`dispose.pipelines.weights.Component`).
        required_components: ``f(dispose: bool) -> component keys`` a run needs (the guidance stage adds its own).
        load_pipeline: ``f(paths, dispose: bool, dtype, device) -> pipeline``.
        sample: ``f(pipeline, request: SamplingRequest)`` yielding the video's (n, H, W, 3) uint8 frames in
            chunks, in order (reference frame dropped), so that nobody holds the whole video.
        tiles: ``f(num_frames, settings) -> list of frame-index lists`` (frame 0 = the reference).
        sampling_steps: ``f(num_frames, settings) -> int``: progress units of sampling (``progress_bar``);
        steps_per_video: the same, plus those of decoding.
        defaults: settings that differ from :class:`dispose.settings.JobSettings`' defaults.
        parameter_counts: ``f(config_path | None) -> list of (section, [(label, tensors, parameters, note)])``.
        checkpoint_kinds: checkpoint files ``dispose convert`` knows, ``{component key: key prefix that
            identifies it}``; ``verify_checkpoint(kind, path, config_path)`` loads a written copy strictly.
    """

    name: str
    title: str
    components: Sequence[Any]
    required_components: Callable[[bool], list[str]]
    load_pipeline: Callable[..., Any]
    sample: Callable[[Any, SamplingRequest], Iterator[np.ndarray]]
    tiles: Callable[[int, Any], list[list[int]]]
    sampling_steps: Callable[[int, Any], int]
    steps_per_video: Callable[[int, Any], int]
    defaults: dict = field(default_factory=dict)
    parameter_counts: Callable[..., list] | None = None
    checkpoint_kinds: dict = field(default_factory=dict)
    verify_checkpoint: Callable[..., None] | None = None


BASES: dict[str, Base] = {}
DEFAULT_BASE = "mimicmotion"


def register(base: Base) -> Base:
    """Add ``base`` to the registry (and its weight components to the resolver); returns it."""
    from dispose.pipelines.weights import register_components

    register_components(base.components)
    BASES[base.name] = base
    return base


def get_base(name: str | None) -> Base:
    """The registered base called ``name`` (None: the default); a UserError lists the known ones."""
    name = name or DEFAULT_BASE
    if name not in BASES:
        raise UserError(f"unknown base model {name!r}; choose one of {', '.join(sorted(BASES))}")
    return BASES[name]


def required_components(*, dispose: bool = True, detector: str = "dwpose", dense: str = "cmp",
                        base: str | None = None) -> list[str]:
    """Keys of the weight components a run needs: the base's, SD1.5 and CMP for DisPose runs (CMP only with
    ``dense="cmp"``), DWPose with ``detector="dwpose"``."""
    keys = list(get_base(base).required_components(dispose))
    if dispose:
        keys.append("sd15")
        if dense == "cmp":
            keys.append("cmp")
    if detector == "dwpose":
        keys.append("dwpose")
    return keys
