"""The base-model registry: every animation model DisPose plugs into is one :class:`Base` entry.

An entry declares its weight components and their layout below ``--weights`` (added to
:data:`dispose.pipelines.weights.COMPONENTS`), which of them a run needs, how to load its pipeline, how to
sample one video with it (:class:`SamplingRequest` -> uint8 frames, streamed a chunk at a time), its tiling
convention, its default settings and its parameter table.  The engine (:mod:`dispose.engine`), the commands
and the trainer only talk to entries, so a new base is one package in :mod:`dispose.bases` plus one
:func:`register` call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dispose.errors import UserError
from dispose.settings import JobSettings

_SETTING_DEFAULTS = vars(JobSettings())
#: The settings whose defaults belong to the base model (its release's values): :attr:`Base.defaults`.
BASE_SETTINGS = ("resolution", "num_frames", "frames_overlap", "num_inference_steps", "guidance_scale",
                 "sample_stride", "max_frames", "seed")


@dataclass
class SamplingRequest:
    """One video to sample: the reference and skeletons at the generation size, the DisPose guidance (None for
    the baseline), the settings and runtime, and the hooks the engine passes through.

    ``progress_bar`` is a tqdm-like object (``update()``, ``total``) advanced once per tile and step and once
    per decoded chunk; ``callback_on_step_end`` is diffusers'
    ``f(pipeline, step, timestep, kwargs) -> kwargs``.
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
        required_components: ``f(dispose: bool) -> component keys`` a run needs (the guidance stage adds
            its own).
        load_pipeline: ``f(paths, dispose: bool, dtype, device) -> pipeline``.
        sample: ``f(pipeline, request: SamplingRequest)`` yielding the video's (n, H, W, 3) uint8 frames in
            chunks, in order (reference frame dropped), so that nobody holds the whole video.
        tiles: ``f(num_frames, settings) -> list of frame-index lists`` (frame 0 = the reference).
        sampling_steps: ``f(num_frames, settings) -> int``: progress units of sampling (``progress_bar``);
        steps_per_video: the same, plus those of decoding.
        defaults: the base's own values of the settings every base owns (:data:`BASE_SETTINGS`), and of any
            other :class:`dispose.settings.JobSettings` field it sets otherwise; those it does not give are
            JobSettings' (the release's ``configs/test.yaml``, MimicMotion's).  Completed when the entry is
            made, so every front door reads them here.
        parameter_counts:
            ``f(config_path | None) -> list of (section, [(label, tensors, parameters, note)])``.
        checkpoint_kinds: checkpoint files ``dispose convert`` knows, ``{component key: key prefix that
            identifies it}``; ``verify_checkpoint(kind, path, config_path)`` loads a written copy strictly.
        training: ``f() -> recipe`` (:class:`dispose.bases.training.TrainingBase`) for ``dispose train``; None
            for a base that cannot be trained.
        unsupported: ``{JobSettings field: why}`` for the settings this base has no use for; a run that sets
            one away from its default is refused (:meth:`check_settings`).
        random_pipeline: ``f(dispose: bool, dtype, device) -> pipeline`` at full size with random weights,
            every parameter created on the device in ``dtype`` (``dispose benchmark``; ``"meta"``: counts).
        tiny_weights: ``f(folder)`` writes tiny random weights in the release layout (tests, ``--tiny``).
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
    training: Callable[[], Any] | None = None
    unsupported: dict = field(default_factory=dict)
    random_pipeline: Callable[..., Any] | None = None
    tiny_weights: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.defaults) - set(_SETTING_DEFAULTS)
        if unknown:
            raise ValueError(f"base {self.name!r}: defaults for settings that do not exist: "
                             f"{sorted(unknown)}")
        complete = {**{name: _SETTING_DEFAULTS[name] for name in BASE_SETTINGS}, **self.defaults}
        object.__setattr__(self, "defaults", complete)  # frozen dataclass: set once, here

    def job_settings(self, **values) -> JobSettings:
        """JobSettings with this base's defaults, then ``values``."""
        return dataclasses.replace(JobSettings(), **{**self.defaults, **values})

    def check_settings(self, settings: JobSettings) -> None:
        """A UserError naming the first setting of ``settings`` this base does not use that is not at its
        default (``unsupported``): a cheap check, for before any model loads."""
        for name, why in self.unsupported.items():
            if getattr(settings, name) != _SETTING_DEFAULTS[name]:
                option = "--" + name.replace("_", "-")
                raise UserError(f"--base {self.name} does not use {name} ({option}): {why}; leave it out")


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


def defaults_text(name: str) -> str:
    """Every base's default of setting ``name``, for help texts: ``"mimicmotion: 576, musepose: 768"``."""
    shown = {key: BASES[key].defaults[name] for key in sorted(BASES)}
    return ", ".join(f"{key}: {'all' if value is None else value}" for key, value in shown.items())


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


def training_base(name: str | None):
    """The training recipe of base ``name`` (None: the default); a UserError names the bases that train."""
    base = get_base(name)
    if base.training is None:
        trainable = ", ".join(sorted(key for key, entry in BASES.items() if entry.training is not None))
        raise UserError(f"base {base.name!r} cannot be trained (yet); bases that train: {trainable}")
    return base.training()
