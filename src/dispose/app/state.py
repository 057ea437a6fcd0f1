"""What ``dispose app`` computes, without Gradio: one :class:`AppState` per process.

* :class:`FormSettings` are the page's settings; they become the engine's
  :class:`~dispose.settings.JobSettings` and ``Runtime`` and the guidance stage's arguments.
* Models load once per process and stay loaded (:class:`ModelCache`): one :class:`~dispose.engine.Animator`
  is kept, keyed by base, weights folder, dtype, device, detector, dense field and baseline; a request with
  another key frees the loaded one before loading (one set of models per device, as the page runs one job at
  a time).  Pose detectors for the previews are kept per detector folder.
* :meth:`AppState.preview` computes the guidance with no animation weights (MediaPipe or DWPose poses, the
  weight-free or CMP dense field, no point embeddings) or reads a saved guidance folder; a :class:`Preview`
  draws any frame on demand (pose alignment, and skeleton | F_s | F_d with one colour scale per video).
* :meth:`AppState.animate` runs the engine and writes the result, the reference | skeleton | result video and
  the JSON sidecar of ``dispose animate`` (same format) atomically into a folder of its own under the output
  folder.
* :meth:`AppState.missing_weights` lists what an animation would still need (the weights resolver's list).
* Errors from bad input are reported as the command line reports them (:func:`dispose.errors.error_line`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from dispose.bases import DEFAULT_BASE, get_base
from dispose.errors import UserError
from dispose.settings import JobSettings

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv")
Progress = Callable[[str, int, int], None]
PANEL_WIDTH = 384  # preview panels are drawn at most this wide (the page shows three side by side)


#: The page's names of the settings a base owns that the command line names otherwise.
FORM_NAMES = {"num_inference_steps": "steps"}


@dataclass(frozen=True)
class FormSettings:
    """The settings the page offers.  The settings a base owns (:data:`dispose.bases.BASE_SETTINGS`) left at
    None take the chosen base's defaults (:attr:`dispose.bases.Base.defaults`; :meth:`for_base` fills them as
    the page shows them, ``max_frames`` 0 = every frame); the others are the command line's defaults, except
    MediaPipe and the weight-free dense field (so a page with no weights works)."""

    resolution: int | None = None
    max_frames: int | None = None
    sample_stride: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    align: str = "global"
    detector: str = "mediapipe"
    dense: str = "propagate"
    dtype: str = "auto"
    base: str = DEFAULT_BASE
    baseline: bool = False
    weights: str = ""
    num_frames: int | None = None
    frames_overlap: int | None = None
    controlnet_interval: int = JobSettings.controlnet_interval

    @classmethod
    def for_base(cls, base: str | None = None, **values) -> FormSettings:
        """The page's settings for ``base`` (None: the default): its defaults, then ``values`` (None:
        unset)."""
        entry = get_base(base)
        defaults = {FORM_NAMES.get(name, name): value for name, value in entry.defaults.items()}
        defaults["max_frames"] = defaults["max_frames"] or 0
        given = {key: value for key, value in values.items() if value is not None}
        return cls(**{**defaults, **given, "base": entry.name})

    def resolved(self) -> FormSettings:
        """These settings with every unset one at the chosen base's default."""
        values = dataclasses.asdict(self)
        return self.for_base(values.pop("base"), **values)

    @property
    def frames_limit(self) -> int | None:
        return self.max_frames if self.max_frames else None  # typed by job_values

    @property
    def weights_dir(self) -> Path | None:
        return Path(self.weights).expanduser() if self.weights.strip() else None

    def job_values(self, reference: str | Path | None, driving: str | Path | None,
                   guidance: Path | None = None) -> dict:
        """JobSettings fields of these settings (unset ones at the base's defaults) and inputs, validated
        with the command line's messages."""
        form = self.resolved()
        values = {"ref": None if reference is None else Path(reference),
                  "driving": None if driving is None else Path(driving), "guidance": guidance,
                  "resolution": form.resolution, "max_frames": form.frames_limit,
                  "sample_stride": form.sample_stride, "num_inference_steps": form.steps,
                  "guidance_scale": form.guidance_scale, "seed": form.seed, "baseline": form.baseline,
                  "base": form.base, "align": form.align, "num_frames": form.num_frames,
                  "frames_overlap": form.frames_overlap, "controlnet_interval": form.controlnet_interval}
        settings = get_base(form.base).job_settings(**values)
        settings.validate()  # typed: a NaN or 2.5 from a number field is one line, not a cast error
        return {key: getattr(settings, key) for key in values}

    def runtime(self, device: str):
        from dispose.engine import Runtime

        runtime = Runtime(device=device, dtype=self.dtype, detector=self.detector, dense=self.dense,
                          progress=False)
        runtime.check()
        return runtime


def find_examples(folder: str | Path | None) -> dict[str, list[Path]]:
    """Example images and videos directly in ``folder`` (``DISPOSE_SHARED_DATA``), by kind; empty
    without one."""
    result: dict[str, list[Path]] = {"images": [], "videos": []}
    if not folder or not Path(folder).is_dir():
        return result
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            result["images"].append(path)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            result["videos"].append(path)
    return result


class ModelCache:
    """One loaded Animator per process (see module docstring); ``loads`` counts how often models were
    loaded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._animator = None
        self.loads = 0

    def get(self, key: tuple, load: Callable[[], object]):
        with self._lock:
            if key != self._key or self._animator is None:
                self._animator, self._key = None, None
                _free_memory()
                self._animator = load()
                self._key = key
                self.loads += 1
            return self._animator


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class Preview:
    """A computed (or loaded) guidance and its pictures, drawn per driving frame on demand."""

    guidance: object  # dispose.guidance.stage.Guidance
    seconds: float = 0.0
    source: str = ""

    @property
    def frames(self) -> int:
        """Driving frames (the reference frame excluded)."""
        return self.guidance.num_frames - 1

    @cached_property
    def scales(self) -> tuple[float, float]:
        """One colour scale per field for the whole video (as ``dispose guidance``'s pictures)."""
        from dispose.guidance.pictures import guidance_scales

        return guidance_scales(self.guidance)

    def guidance_picture(self, frame: int) -> np.ndarray:
        """skeleton | F_s | F_d of driving frame ``frame`` (0-based), each panel at most PANEL_WIDTH wide."""
        return self.guidance.preview(self._clamp(frame), scales=self.scales,
                                     width=min(PANEL_WIDTH, self.guidance.size[0]))

    def alignment_picture(self, frame: int) -> np.ndarray:
        """The reference with its own skeleton | the reference with driving frame ``frame``'s aligned
        skeleton."""
        from dispose.pose.drawing import overlay

        reference = self.guidance.reference
        own, driving = self.guidance.skeleton_images([0, self._clamp(frame) + 1])
        return np.concatenate([overlay(reference, own), overlay(reference, driving)], axis=1)

    def summary(self) -> str:
        width, height = self.guidance.size
        settings = self.guidance.settings
        filled = f"; {self.guidance.filled} frame(s) without a person reuse a neighbour's pose" \
            if self.guidance.filled else ""
        dense = settings.get("dense", "none") if self.guidance.dense_flow is not None else "none"
        return (f"{self.source}: {self.frames} driving frames at {self.guidance.fps:g} fps, "
                f"{width}x{height}, detector {settings.get('detector', '?')}, dense field {dense}{filled}"
                + (f"; {self.seconds:.1f} s" if self.seconds else ""))

    def _clamp(self, frame: int) -> int:
        return min(max(int(frame), 0), self.frames - 1)


@dataclass
class AnimationFiles:
    """What one animation wrote."""

    video: Path
    side_by_side: Path
    sidecar: Path
    frames: int
    seconds: float


class AppState:
    """Everything the page keeps for the life of the process (see module docstring)."""

    def __init__(self, *, weights: str | Path | None = None, device: str = "auto", output_dir: str | Path,
                 examples_dir: str | Path | None = None) -> None:
        self.default_weights = "" if weights is None else str(weights)
        self.device = device
        self.output_dir = Path(output_dir)
        self.examples = find_examples(examples_dir)
        self.models = ModelCache()
        self._detectors: dict[tuple, object] = {}
        self._detector_lock = threading.Lock()
        self._cancels: dict[str, threading.Event] = {}
        self._counter = itertools.count(1)

    # ------------------------------------------------------------------ weights
    def missing_weights(self, settings: FormSettings) -> list[str]:
        """Weight files an animation with ``settings`` still needs, with where to get them ([] = ready)."""
        from dispose.engine import Animator

        return Animator.missing_weights(settings.base, settings.weights_dir, {},
                                        settings.runtime(self.device), not settings.baseline)

    def _component(self, settings: FormSettings, key: str) -> Path:
        from dispose.pipelines.weights import resolve_weights

        return getattr(resolve_weights(settings.weights_dir, {}, [key]), key)

    def _detector(self, settings: FormSettings):
        from dispose.pose.detector_factory import load_detector

        folder = self._component(settings, "dwpose") if settings.detector == "dwpose" else None
        key = (settings.detector, str(folder))
        with self._detector_lock:
            if key not in self._detectors:
                self._detectors[key] = load_detector(folder, device=self.device)
            return self._detectors[key]

    # ------------------------------------------------------------------ preview
    def preview(self, settings: FormSettings, reference: str | None, driving: str | None,
                guidance_folder: str | None = None, on_progress: Progress | None = None) -> Preview:
        """Poses and guidance of ``reference`` + ``driving`` (no animation weights needed), or a saved
        folder."""
        from dispose.guidance.stage import Guidance, GuidanceModels, compute_guidance

        start = time.perf_counter()
        if guidance_folder and guidance_folder.strip():
            folder = Path(guidance_folder.strip()).expanduser()
            return Preview(Guidance.load(folder), time.perf_counter() - start, f"guidance folder {folder}")
        reference_path, driving_path = _inputs(reference, driving)
        settings = settings.resolved()
        values = settings.job_values(reference_path, driving_path)  # the command line's checks, typed
        cmp = self._component(settings, "cmp") if settings.dense == "cmp" else None
        guidance = compute_guidance(
            reference_path, driving_path, resolution=values["resolution"],
            sample_stride=values["sample_stride"], max_frames=values["max_frames"], align=settings.align,
            dense=settings.dense,
            models=GuidanceModels(detector=self._detector(settings), cmp=cmp), seed=values["seed"],
            device=self.device, on_progress=on_progress)
        return Preview(guidance, time.perf_counter() - start, f"{reference_path.name} + {driving_path.name}")

    # ------------------------------------------------------------------ animation
    def load_animator(self, settings: FormSettings):
        """The process's Animator for ``settings`` (loaded on first use, kept while the key stays the
        same)."""
        from dispose.engine import Animator

        runtime = settings.runtime(self.device)
        weights = settings.weights_dir
        key = (settings.base, str(weights), settings.dtype, self.device, settings.detector, settings.dense,
               settings.baseline)
        return self.models.get(key, lambda: Animator.load(base=settings.base, weights=weights, overrides={},
                                                          runtime=runtime, dispose=not settings.baseline))

    @contextlib.contextmanager
    def cancellable(self, session: str) -> Iterator[threading.Event]:
        """A cancel flag for the job of ``session`` while it runs (the Cancel button sets it)."""
        event = threading.Event()
        self._cancels[session] = event
        try:
            yield event
        finally:
            if self._cancels.get(session) is event:
                del self._cancels[session]

    def cancel(self, session: str) -> bool:
        """Ask the running job of ``session`` to stop at the next step; False when none runs."""
        event = self._cancels.get(session)
        if event is None:
            return False
        event.set()
        return True

    def animate(self, settings: FormSettings, reference: str | None, driving: str | None,
                guidance_folder: str | None = None, *, on_progress: Progress | None = None,
                cancel: threading.Event | None = None) -> AnimationFiles:
        """Animate and write result.mp4, side_by_side.mp4 and result.json into a new folder under the
        output dir."""
        from dispose.jobs import write_result

        start = time.perf_counter()
        guidance = folder = None
        if guidance_folder and guidance_folder.strip():
            from dispose.guidance.stage import Guidance

            folder = Path(guidance_folder.strip()).expanduser()
            guidance = Guidance.load(folder)
            reference_path = driving_path = None
        else:
            reference_path, driving_path = _inputs(reference, driving)
        values = settings.job_values(reference_path, driving_path, folder)
        animator = self.load_animator(settings)  # a UserError lists every missing weight file, as the CLI
        out = self.output_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(self._counter)}"
        job = animator.settings(**values, out=out / "result.mp4", side_by_side=out / "side_by_side.mp4")
        result = animator.animate(reference_path, driving_path, guidance=guidance, settings=job,
                                  on_progress=on_progress, cancel=cancel)
        out.mkdir(parents=True, exist_ok=False)
        sidecar = write_result(job, result)  # the files and sidecar of `dispose animate`
        return AnimationFiles(video=job.out, side_by_side=job.side_by_side, sidecar=sidecar,
                              frames=len(result.frames), seconds=time.perf_counter() - start)


def _inputs(reference: str | None, driving: str | None) -> tuple[Path, Path]:
    """The two input files, or the UserError the command line gives when one is missing."""
    if not reference:
        raise UserError("no reference image: upload one (or pick an example), "
                        "or give a saved guidance folder")
    if not driving:
        raise UserError("no driving video: upload one (or pick an example), or give a saved guidance folder")
    return Path(reference), Path(driving)
