"""Run animation jobs end to end: check weights, load once, then per job poses -> guidance -> sampling ->
video + sidecar.  Used by ``dispose animate`` and by ``bench/pipeline.py``.

Memory and speed controls (:class:`Runtime`), and what each saves:

* ``dtype`` fp16 / bf16 halve the weights and activations against fp32 (fp16 is the release's choice on
  CUDA; bf16 where fp16 overflows; fp32 on CPU, where half-precision convolutions are slow).
* ``cfg_mode="sequential"`` runs the unconditional and conditional halves as two passes: half the
  UNet/ControlNet activation memory, about the same time on a saturated GPU.
* ``offload``: diffusers' ``enable_model_cpu_offload`` (accelerate hooks): each model moves to the GPU
  when it runs.  CLIP and PoseNet leave the GPU before sampling, the UNet before decoding; the UNet and
  the ControlNet stay resident while sampling (they run in turn for every tile).  Saves CLIP's ~1.3 GB
  (fp16) during sampling and the UNet's ~3 GB during decoding, at a small transfer cost per job.
* ``decode_chunk_size``: frames decoded per VAE call; 1 minimises decoder memory (the release's tip).
* DIFT (SD1.5) and CMP are loaded per job, used once and freed before sampling; only their outputs
  (point embeddings, flows) stay, on the CPU.
* ``compile``: ``torch.compile`` of the UNet and ControlNet; slow first job, faster later ones.
* ``cache_guidance`` (default on): each tile's encoded DisPose guidance (motion encoder and point MLP
  outputs) is computed once and kept for all denoising steps; off, it is recomputed at every step (once
  for both CFG halves).  Same output; the cache holds ~141 MB per 16-frame tile at 576x1024 in fp16
  (:mod:`dispose.pipelines.mimicmotion`).

Numerics: fp16 on CUDA samples and decodes under ``torch.autocast("cuda")``, as the release's script does
(:func:`release_autocast`); the reference and skeleton images get the release's pixel arithmetic
(:meth:`dispose.pipelines.inputs.JobInputs.sampling_inputs`).

Multi-GPU: launch one process per GPU with ``accelerate launch --num_processes K -m dispose.cli animate
--config jobs.yaml --out DIR``; each process takes every K-th job of the file (its process index) on
its own device.  There is no scheduler beyond that round-robin split.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dispose.errors import UserError
from dispose.pipelines.job import JobSettings, Sidecar, sidecar_path
from dispose.pipelines.weights import WeightPaths, fingerprint, required_components, resolve_weights

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class Runtime:
    """How to run (not what to generate): device, precision, memory controls, detector, dense flow."""

    device: str = "auto"
    dtype: str = "auto"
    cfg_mode: str = "batch"
    offload: bool = False
    compile: bool = False
    cache_guidance: bool = True
    detector: str = "dwpose"  # dwpose | mediapipe
    dense: str = "cmp"  # cmp | propagate | none (dense motion field F_d)
    align: str | None = None  # pose alignment of dispose.pose.extract (None = its default)
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

    def to_dict(self) -> dict:
        return {"device": str(self.torch_device()), "dtype": str(self.torch_dtype()).replace("torch.", ""),
                "cfg_mode": self.cfg_mode, "offload": self.offload, "compile": self.compile,
                "cache_guidance": self.cache_guidance, "detector": self.detector, "dense": self.dense,
                "align": self.align}


@dataclass
class Animator:
    """Weights checked, pipeline loaded once; :meth:`run` performs one job."""

    paths: WeightPaths
    runtime: Runtime
    needs_dispose: bool
    pipeline: object = None
    detector: object = None
    weight_fingerprints: dict = field(default_factory=dict)

    @classmethod
    def prepare(cls, jobs: list[JobSettings], runtime: Runtime, weights_dir: Path | None,
                overrides: dict[str, str]) -> Animator:
        """Check every file all ``jobs`` need (one error listing all missing ones) and that their outputs can
        be written, then load the models."""
        from dispose.media.files import check_writable_dir

        needs_dispose = any(not job.baseline for job in jobs)
        required = required_components(dispose=needs_dispose, detector=runtime.detector, dense=runtime.dense)
        paths = resolve_weights(weights_dir, overrides, required)
        for job in jobs:
            for label, path in (("reference image", job.ref), ("driving video", job.driving)):
                if not Path(path).is_file():
                    raise UserError(f"{label} {path} does not exist")
            for path in (job.out, job.side_by_side):
                if path is not None:
                    check_writable_dir(Path(path))
        animator = cls(paths=paths, runtime=runtime, needs_dispose=needs_dispose)
        animator.weight_fingerprints = {key: {"path": value, "found_by": paths.origins.get(key),
                                              "fingerprint": fingerprint(value)}
                                        for key, value in paths.as_dict().items() if value is not None}
        animator._load()
        return animator

    def _load(self) -> None:
        from dispose.pipelines.loading import load_pipeline
        from dispose.pose.detectors import load_detector

        device, dtype = self.runtime.torch_device(), self.runtime.torch_dtype()
        self.pipeline = load_pipeline(self.paths, dispose=self.needs_dispose, dtype=dtype,
                                      device="cpu" if self.runtime.offload else device)
        if self.runtime.offload:
            self.pipeline.enable_model_cpu_offload(device=device)
        if self.runtime.compile:
            self.pipeline.enable_compile()
        self.pipeline.set_progress_bar_config(disable=True)
        dwpose = self.paths.dwpose if self.runtime.detector == "dwpose" else None
        self.detector = load_detector(dwpose_dir=dwpose, device=str(device))

    def run(self, job: JobSettings, on_stage: Callable[[str], None] | None = None) -> dict:
        """Animate one job; writes ``job.out`` (+ side-by-side, + sidecar) atomically. Returns the sidecar dict."""
        from tqdm.auto import tqdm

        from dispose.media.files import check_writable_dir
        from dispose.pipelines.inputs import compute_guidance, load_inputs
        from dispose.pipelines.tiling import tile_indices

        for path in (job.out, job.side_by_side):
            if path is not None:
                check_writable_dir(Path(path))
        device, dtype = self.runtime.torch_device(), self.runtime.torch_dtype()
        timings: dict[str, float] = {}
        bar = tqdm(total=1, desc="poses", unit="step", disable=not self.runtime.progress)
        start = time.perf_counter()
        inputs = load_inputs(job.ref, job.driving, resolution=job.resolution, sample_stride=job.sample_stride,
                             max_frames=job.max_frames, detector=self.detector, align=self.runtime.align)
        timings["poses"] = time.perf_counter() - start
        frames = len(inputs.pose_images)
        tiles = tile_indices(frames, job.num_frames, job.frames_overlap)
        chunks = -(-frames // job.decode_chunk_size)
        bar.total = 1 + (0 if job.baseline else 1) + job.num_inference_steps * len(tiles) + chunks
        bar.update(1)

        guidance = None
        if not job.baseline:
            bar.set_description("guidance")
            guidance, guidance_times = compute_guidance(
                inputs, sd15=self.paths.sd15, cmp_path=self.paths.cmp, dense=self.runtime.dense, seed=job.seed,
                device=device, dtype=dtype, release_missing_points=job.release_missing_points)
            timings.update(guidance_times)
            bar.update(1)

        bar.set_description("sampling")
        start = time.perf_counter()
        generator = torch.Generator(device=device).manual_seed(job.seed)
        low, high = job.guidance_range
        reference, pose_images = inputs.sampling_inputs(dtype)
        with release_autocast(device, dtype):
            latents = self.pipeline(
                reference, pose_images, guidance, tile_size=job.num_frames,
                tile_overlap=job.frames_overlap, num_inference_steps=job.num_inference_steps,
                min_guidance_scale=low, max_guidance_scale=high, fps=job.conditioning_fps,
                motion_bucket_id=job.motion_bucket_id, noise_aug_strength=job.noise_aug_strength,
                controlnet_conditioning_scale=job.controlnet_scale, cfg_mode=self.runtime.cfg_mode,
                cache_guidance=self.runtime.cache_guidance, generator=generator, keep_reference=True,
                output_type="latent", progress_bar=bar).frames
        timings["sampling"] = time.perf_counter() - start

        bar.set_description("decoding")
        start = time.perf_counter()
        with release_autocast(device, dtype):
            video = self._decode(latents, job.decode_chunk_size, bar)[1:]  # drop the reference frame
        timings["decoding"] = time.perf_counter() - start
        bar.close()

        from dispose.media.video import write_video

        write_video(job.out, video, job.fps)
        if job.side_by_side is not None:
            write_video(job.side_by_side, side_by_side(inputs.reference, inputs.pose_images[1:], video), job.fps)
        sidecar = Sidecar(
            job=job, runtime=self.runtime.to_dict(),
            inputs={"ref": {"path": str(job.ref), **fingerprint(job.ref)},
                    "driving": {"path": str(job.driving), **fingerprint(job.driving), "fps_after_stride": inputs.fps},
                    "frames_without_person": inputs.filled},
            weights=self.weight_fingerprints,
            result={"frames": int(video.shape[0]), "width": int(video.shape[2]), "height": int(video.shape[1]),
                    "fps": job.fps, "tiles": len(tiles), "out": str(job.out),
                    "side_by_side": None if job.side_by_side is None else str(job.side_by_side)},
            timings={key: round(value, 3) for key, value in timings.items()})
        sidecar.write(sidecar_path(Path(job.out)))
        return sidecar.to_dict()

    def _decode(self, latents: torch.Tensor, chunk: int, bar) -> np.ndarray:
        from dispose.pipelines.mimicmotion import to_uint8

        parts = []
        for start in range(0, latents.shape[1], chunk):
            parts.append(self.pipeline.decode_latents(latents[:, start:start + chunk], chunk)[0])
            bar.update(1)
        self.pipeline.maybe_free_model_hooks()
        return to_uint8(torch.cat(parts).permute(0, 2, 3, 1))


def release_autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """``torch.autocast("cuda")`` for fp16 models on CUDA, as the release's script samples and decodes (norms
    and a few other ops then run in float32); no change elsewhere."""
    if device.type == "cuda" and dtype == torch.float16:
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def side_by_side(reference: np.ndarray, skeletons: np.ndarray, video: np.ndarray) -> np.ndarray:
    """(reference | driving skeleton | result) per frame, (N, H, 3W, 3) uint8."""
    count = len(video)
    return np.concatenate([np.broadcast_to(reference, (count, *reference.shape)), skeletons[:count], video], axis=2)
