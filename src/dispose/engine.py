"""The in-memory animation engine behind every front door (CLI, web app, ComfyUI nodes, training validation).

An :class:`Animator` loads a base model's pipeline once (:mod:`dispose.bases`) and then animates any number
of inputs: a reference (path, PIL image or uint8 array) with driving frames (a video path or frames), a poses
file, or a ready :class:`~dispose.guidance.stage.Guidance`.  It returns an :class:`AnimationResult` (frames
and metadata) and writes nothing the user sees: files, sidecars and side-by-side videos are the front
doors' business.  Per-frame data (skeletons, ``F_d``, the result's frames) is kept in
:class:`~dispose.media.frame_store.FrameStore` temporary files and read a tile or chunk at a time, so memory
stays flat in the video's length; ``np.asarray(result.frames)`` loads the frames when wanted.
Progress goes to ``on_progress(stage, done, total)`` (and a tqdm bar when ``Runtime.progress``), the
diffusers-style ``callback_on_step_end`` is passed to the pipeline, and ``cancel`` (a ``threading.Event``
or a callable) is checked after every denoising step and between stages (:class:`Cancelled`).

Memory and speed controls (:class:`Runtime`), and what each saves:

* ``dtype`` fp16 / bf16 halve the weights and activations against fp32 (fp16 is the release's choice on
  CUDA; bf16 where fp16 overflows; fp32 on CPU, where half-precision convolutions are slow).
* ``cfg_mode="sequential"`` runs the unconditional and conditional halves as two passes: half the
  UNet/ControlNet activation memory, about the same time on a saturated GPU.
* ``offload``: diffusers' ``enable_model_cpu_offload`` (accelerate hooks): each model moves to the GPU
  when it runs; the UNet and the ControlNet stay resident while sampling.
* DIFT (SD1.5) and CMP are loaded per job, used once and freed before sampling; only their outputs stay.
* ``compile``: ``torch.compile`` of the UNet and ControlNet; slow first job, faster later ones.
* ``cache_guidance`` (default on): each tile's encoded DisPose guidance and pose features are computed once
  and kept for all denoising steps, for as many tiles as fit ``guidance_cache_mb`` of device memory; the
  other tiles recompute them at each step (:mod:`dispose.pipelines.tile_cache`).

Multi-GPU: one process per GPU (``accelerate launch``), each with its own Animator (see ``dispose animate``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dispose.bases import Base, SamplingRequest, get_base
from dispose.errors import UserError
from dispose.guidance.stage import Guidance, GuidanceModels, Progress, compute_guidance
from dispose.media.frame_store import FrameStore
from dispose.pipelines.tile_cache import GUIDANCE_CACHE_MB
from dispose.settings import JobSettings

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class Cancelled(UserError):
    """The caller cancelled the animation (``cancel`` was set); nothing was produced."""


@dataclass
class Runtime:
    """How to run (not what to generate): device, precision, memory controls, detector, dense flow."""

    device: str = "auto"
    dtype: str = "auto"
    cfg_mode: str = "batch"
    offload: bool = False
    compile: bool = False
    cache_guidance: bool = True
    guidance_cache_mb: float = GUIDANCE_CACHE_MB
    detector: str = "dwpose"  # dwpose | mediapipe | saved (every run brings a saved Guidance: none loaded)
    dense: str = "cmp"  # cmp | propagate | none | saved (dense motion field F_d; saved: from the Guidance)
    progress: bool = True

    def torch_device(self) -> torch.device:
        from dispose.devices import resolve_device

        return resolve_device(self.device)

    def torch_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.float16 if self.torch_device().type == "cuda" else torch.float32
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype must be one of auto, {', '.join(DTYPES)}; got {self.dtype!r}")
        return DTYPES[self.dtype]

    def check(self) -> None:
        """Validate every option without loading anything (a UserError names the option and the fix)."""
        self.torch_dtype()
        if not self.guidance_cache_mb >= 0:
            raise UserError(f"--guidance-cache-mb must be 0 or more (MiB), got {self.guidance_cache_mb}")
        choices = {"cfg_mode": ("batch", "sequential"), "detector": ("dwpose", "mediapipe", "saved"),
                   "dense": ("cmp", "propagate", "none", "saved")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"--{name.replace('_mode', '')} must be one of {', '.join(allowed)}; "
                                f"got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return {"device": str(self.torch_device()), "dtype": str(self.torch_dtype()).replace("torch.", ""),
                "cfg_mode": self.cfg_mode, "offload": self.offload, "compile": self.compile,
                "cache_guidance": self.cache_guidance, "guidance_cache_mb": self.guidance_cache_mb,
                "detector": self.detector, "dense": self.dense}


@dataclass
class AnimationResult:
    """One animation: ``frames`` (N, H, W, 3) uint8, the ``reference`` (H, W, 3) and ``skeletons`` (N + 1, H,
    W, 3; [0] the reference pose) it was made from, the ``guidance`` used (None for the baseline) and
    ``metadata`` (settings, runtime, seed, inputs and weight fingerprints, sizes, timings).  ``frames`` and
    ``skeletons`` are :class:`~dispose.media.frame_store.FrameStore` s (index them, iterate them, or
    ``np.asarray`` them)."""

    frames: FrameStore
    reference: np.ndarray
    skeletons: FrameStore
    guidance: Guidance | None
    metadata: dict = field(default_factory=dict)

    def side_by_side(self) -> Iterator[np.ndarray]:
        """(reference | driving skeleton | result) per frame, (H, 3W, 3) uint8 frames, made as they are
        read."""
        for index, frame in enumerate(self.frames):
            yield np.concatenate([self.reference, self.skeletons[index + 1], frame], axis=1)


class _Bar:
    """Forwards ``update()`` of the pipeline to ``on_progress`` and an optional tqdm bar: ``sampling`` for the
    first ``sampling`` units, then ``decoding``; :attr:`switched` is when decoding began."""

    def __init__(self, sampling: int, total: int, on_progress: Progress | None, show: bool) -> None:
        from tqdm.auto import tqdm

        self.sampling, self.total, self.done, self.on_progress = sampling, total, 0, on_progress
        self.stage = "sampling"
        self.switched: float | None = None
        self.tqdm = tqdm(total=total, desc=self.stage, unit="step", disable=not show)

    def update(self, count: int = 1) -> None:
        self.done += count
        self.tqdm.update(count)
        if self.done >= self.sampling and self.switched is None:
            self.switched = time.perf_counter()
            self.stage = "decoding"
            self.tqdm.set_description(self.stage)
        if self.on_progress is not None:
            self.on_progress(self.stage, self.done, self.total)

    def close(self) -> None:
        self.tqdm.close()


def _cancelled(cancel) -> bool:
    if cancel is None:
        return False
    return cancel.is_set() if isinstance(cancel, threading.Event) else bool(cancel())


class Animator:
    """A loaded base model and its guidance models; :meth:`animate` runs one animation in memory."""

    def __init__(self, base: Base, pipeline, runtime: Runtime, *,
                 guidance_models: GuidanceModels | None = None,
                 weight_fingerprints: dict | None = None) -> None:
        self.base = base
        self.pipeline = pipeline
        self.runtime = runtime
        self.guidance_models = guidance_models or GuidanceModels()
        self.weight_fingerprints = weight_fingerprints or {}

    # ------------------------------------------------------------------ loading
    @staticmethod
    def required(base: str | None, runtime: Runtime, dispose: bool) -> list[str]:
        """Weight component keys a run needs."""
        from dispose.bases import required_components

        return required_components(dispose=dispose, detector=runtime.detector, dense=runtime.dense, base=base)

    @classmethod
    def missing_weights(cls, base: str | None = None, weights: str | Path | None = None,
                        overrides: dict | None = None, runtime: Runtime | None = None,
                        dispose: bool = True) -> list[str]:
        """What a run would still need, one entry per missing component (empty when all are there)."""
        from dispose.pipelines.weights import find_weights

        runtime = runtime or Runtime()
        return find_weights(weights, overrides, cls.required(base, runtime, dispose))[1]

    @classmethod
    def load(cls, base: str | None = None, weights: str | Path | None = None, overrides: dict | None = None,
             runtime: Runtime | None = None, dispose: bool = True,
             check: Callable[[GuidanceModels], None] | None = None) -> Animator:
        """Check every weight file the runs need (one error listing all missing ones), then load them once.
        ``dispose=False`` loads the base alone (baseline runs only).  ``check(models)`` runs once the pose
        detector is loaded and before the base model loads (e.g. that every reference shows a person)."""
        from dispose.pipelines.weights import fingerprint, resolve_weights
        from dispose.pose.detector_factory import load_detector

        runtime = runtime or Runtime()
        runtime.check()
        spec = get_base(base)
        paths = resolve_weights(weights, overrides, cls.required(spec.name, runtime, dispose))
        fingerprints = {key: {"path": str(value), "found_by": paths.origins.get(key),
                              "fingerprint": fingerprint(value)}
                        for key, value in paths.found.items()}
        device, dtype = runtime.torch_device(), runtime.torch_dtype()
        detector = None if runtime.detector == "saved" else load_detector(
            dwpose_dir=paths.dwpose if runtime.detector == "dwpose" else None, device=str(device))
        models = GuidanceModels(detector=detector, cmp=paths.cmp, sd15=paths.sd15)
        if check is not None:
            check(models)
        pipeline = spec.load_pipeline(paths, dispose, dtype, "cpu" if runtime.offload else device)
        if runtime.offload:
            pipeline.enable_model_cpu_offload(device=device)
        if runtime.compile:
            pipeline.enable_compile()
        pipeline.set_progress_bar_config(disable=True)
        return cls(spec, pipeline, runtime, guidance_models=models, weight_fingerprints=fingerprints)

    @classmethod
    def from_pipeline(cls, pipeline, base: str | None = None, runtime: Runtime | None = None,
                      guidance_models: GuidanceModels | None = None) -> Animator:
        """An engine around an already built pipeline (training validation, tests)."""
        return cls(get_base(base), pipeline, runtime or Runtime(detector="mediapipe", dense="propagate"),
                   guidance_models=guidance_models)

    # ------------------------------------------------------------------ running
    def settings(self, **values) -> JobSettings:
        """Settings with this base's defaults, then ``values``."""
        return self.base.job_settings(**values)

    def compute_guidance(self, reference, driving=None, *, poses=None, fps: float | None = None,
                         settings: JobSettings | None = None, dispose: bool = True,
                         on_progress: Progress | None = None, timings: dict | None = None) -> Guidance:
        """Poses (and, with ``dispose``, DisPose's guidance) of a reference and driving input with this
        engine's detector, CMP and SD1.5 (:func:`dispose.guidance.stage.compute_guidance`)."""
        job = settings or self.settings()
        if self.runtime.detector == "saved":
            raise UserError("this run was set up for saved guidance only (--guidance); give every job one")
        models = self.guidance_models if dispose else GuidanceModels(detector=self.guidance_models.detector)
        return compute_guidance(
            reference, driving, poses=poses, fps=fps, resolution=job.resolution,
            sample_stride=job.sample_stride, max_frames=job.max_frames, align=job.align,
            dense=self.runtime.dense if dispose else "none", models=models,
            release_missing_points=job.release_missing_points, match_release=job.match_release,
            seed=job.seed, device=self.runtime.torch_device(), dtype=self.runtime.torch_dtype(),
            strict=job.strict, on_progress=on_progress, timings=timings)

    def animate(self, reference=None, driving=None, *, poses=None, fps: float | None = None,
                guidance: Guidance | None = None, settings: JobSettings | None = None,
                callback_on_step_end: Callable | None = None, on_progress: Progress | None = None,
                cancel=None) -> AnimationResult:
        """Animate ``reference`` with the motion of ``driving`` (or ``poses``, or a ready ``guidance``);
        ``fps`` is the rate of driving frames given as arrays
        (:func:`dispose.guidance.stage.compute_guidance`).

        Without ``guidance``, poses and guidance are computed here (:meth:`compute_guidance`).  Raises
        :class:`Cancelled` when ``cancel`` is set.  ``settings.baseline`` samples the base model alone.
        """
        job = settings or self.settings()
        self.base.check_settings(job)
        dispose = not job.baseline
        if dispose and getattr(self.pipeline, "controlnet", None) is None:
            raise UserError("this engine was loaded without DisPose (baseline only); "
                            "load it with dispose=True or ask for a baseline run")
        timings: dict[str, float] = {}
        if guidance is None:
            if reference is None:
                raise UserError("give a reference image (--ref) or a saved guidance (--guidance)")
            guidance = self.compute_guidance(reference, driving, poses=poses, fps=fps, settings=job,
                                             dispose=dispose, on_progress=on_progress, timings=timings)
        elif dispose and guidance.point_embeddings is None:
            models = self.guidance_models
            if models.sd15 is None:
                raise UserError("the saved guidance has no point embeddings and no SD1.5 weights were given: "
                                "pass --sd15 (or --weights), or write the guidance with them")
            from dispose.guidance.stage import reference_point_embeddings

            start = time.perf_counter()
            guidance.point_embeddings = reference_point_embeddings(
                guidance, models.sd15, seed=job.seed, device=self.runtime.torch_device(),
                dtype=self.runtime.torch_dtype())
            timings["dift"] = time.perf_counter() - start
        if _cancelled(cancel):
            raise Cancelled("cancelled before sampling; nothing was produced")

        device = self.runtime.torch_device()
        frames_total = guidance.num_frames
        tiles = self.base.tiles(frames_total, job)
        bar = _Bar(self.base.sampling_steps(frames_total, job), self.base.steps_per_video(frames_total, job),
                   on_progress, self.runtime.progress)

        def step_end(pipeline, step, timestep, kwargs):
            if callback_on_step_end is not None:
                kwargs = callback_on_step_end(pipeline, step, timestep, kwargs) or kwargs
            if _cancelled(cancel):
                raise Cancelled(f"cancelled after step {step + 1} of {job.num_inference_steps}; "
                                "nothing was produced")
            return kwargs

        skeletons = guidance.skeleton_store()
        request = SamplingRequest(
            reference=guidance.reference, skeletons=skeletons,
            guidance=guidance.tensors if dispose else None, settings=job, runtime=self.runtime,
            generator=torch.Generator(device=device).manual_seed(job.seed), progress_bar=bar,
            callback_on_step_end=step_end)
        start = time.perf_counter()
        width, height = guidance.size
        frames = FrameStore((height, width, 3), np.uint8)
        try:
            for chunk in self.base.sample(self.pipeline, request):
                frames.append(chunk)
        finally:
            bar.close()
        end = time.perf_counter()
        timings["sampling"] = (bar.switched or end) - start
        timings["decoding"] = end - (bar.switched or end)
        metadata = {
            "base": self.base.name, "job": job.to_dict(), "seed": job.seed, "runtime": self.runtime.to_dict(),
            "inputs": {**guidance.inputs, "fps_after_stride": guidance.fps,
                       "frames_without_person": guidance.filled, "guidance_fingerprint": guidance.fingerprint,
                       "guidance_settings": guidance.settings},
            "weights": self.weight_fingerprints,
            "result": {"frames": len(frames), "width": width, "height": height,
                       "tiles": len(tiles)},
            "timings": {key: round(value, 3) for key, value in timings.items()},
        }
        return AnimationResult(frames=frames, reference=guidance.reference, skeletons=skeletons,
                               guidance=guidance if dispose else None, metadata=metadata)
