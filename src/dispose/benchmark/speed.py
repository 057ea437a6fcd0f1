"""``dispose benchmark speed``: the paper's Table 7 (trainable parameters, s/frame) measured on this device.

One process, one device, one engine (:class:`dispose.engine.Animator`): the base alone (``baseline``) and the
base with DisPose animate the same reference and driving frames, interleaved (base, DisPose, base, ...) for
``warmup`` untimed and ``repeats`` timed rounds.  Each run records its wall time and the engine's stages
(poses, ``F_d``, DIFT, sampling, decoding), the time inside every network (:class:`.measure.ModuleTimes`: the
UNet and the ControlNet per denoising step of one tile, CFG included) and peak memory
(:class:`.measure.PeakMemory`).  s/frame is the whole run (poses to decoded frames) over the driving frames,
as the paper's "infer time (sec/frame)", the median of the repeats.  The ControlNet / UNet time ratio is the
median over denoising steps of each ControlNet call against the UNet call right after it (adjacent calls
see the same load, so the ratio holds on a shared machine).

Networks: full size with random weights built on the device in the run's dtype (:mod:`.networks`; CMP and
SD1.5 for DIFT too), or the real ones with ``weights``, or the tiny test models with ``tiny`` (then F_d is
the weight-free propagation).  Poses come from MediaPipe unless ``dwpose`` names DWPose's folder (the paper
uses DWPose on the GPU).  For MimicMotion the per-step ControlNet / UNet time ratio is printed beside the
FLOP ratio of the same networks at the same size (:func:`.flops.svd_controlnet_unet_ratio`), the cost
model's prediction for a compute-bound device.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from dispose.bases import DEFAULT_BASE
from dispose.benchmark import paper
from dispose.benchmark.measure import ModuleTimes, PeakMemory, environment, synchronize
from dispose.benchmark.report import cell, gib, table

STAGES = (
    ("poses", "poses"),
    ("motion_fields", "F_d"),
    ("dift", "DIFT"),
    ("sampling", "sampling"),
    ("decoding", "decoding"),
)


@dataclass
class SpeedSettings:
    base: str = DEFAULT_BASE
    ref: Path | None = None
    driving: Path | None = None
    frames: int = 16
    resolution: int | None = None  # None: the base's default
    steps: int | None = None
    repeats: int = 3
    warmup: int = 1
    device: str = "auto"
    dtype: str = "auto"
    cfg_mode: str = "batch"
    offload: bool = False
    compile: bool = False
    controlnet_interval: int = 1
    weights: Path | None = None
    dwpose: Path | None = None
    tiny: bool = False
    progress: bool = True


def _engine(settings: SpeedSettings, workdir: Path):
    """An Animator for the settings' networks (module docstring) and a label of what they are."""
    from dispose.bases import get_base
    from dispose.engine import Animator, Runtime
    from dispose.errors import UserError
    from dispose.guidance.stage import GuidanceModels
    from dispose.pose.detector_factory import load_detector

    detector = "dwpose" if settings.dwpose else "mediapipe"
    runtime = Runtime(
        device=settings.device,
        dtype=settings.dtype,
        cfg_mode=settings.cfg_mode,
        offload=settings.offload,
        compile=settings.compile,
        detector=detector,
        dense="propagate" if settings.tiny else "cmp",
        progress=False,
    )
    runtime.check()
    overrides = {"dwpose": settings.dwpose} if settings.dwpose else None
    if settings.tiny or settings.weights:
        from dispose.benchmark.networks import tiny_weights

        folder = settings.weights
        if settings.tiny:
            folder = workdir / "tiny-weights"
            tiny_weights(settings.base, folder)
        engine = Animator.load(settings.base, folder, overrides, runtime)
        return engine, "tiny random" if settings.tiny else "real"
    from dispose.benchmark.networks import random_cmp, random_dift, random_pipeline

    device, dtype = runtime.torch_device(), runtime.torch_dtype()
    pipeline = random_pipeline(settings.base, True, dtype, "cpu" if settings.offload else device)
    if settings.offload:
        pipeline.enable_model_cpu_offload(device=device)
    if settings.compile:
        if not hasattr(pipeline, "enable_compile"):
            raise UserError(f"--compile is not supported by base {settings.base} yet")
        pipeline.enable_compile()
    pipeline.set_progress_bar_config(disable=True)
    models = GuidanceModels(
        detector=load_detector(settings.dwpose, str(device)),
        cmp=random_cmp(device),
        sd15=random_dift(dtype, device),
    )
    return Animator(get_base(settings.base), pipeline, runtime, guidance_models=models), "full-size random"


def _denoiser(modules: dict[str, torch.nn.Module]) -> str:
    """The base's denoising network: its largest network other than the ControlNet."""
    return max(
        (name for name in modules if name != "controlnet"),
        key=lambda name: sum(p.numel() for p in modules[name].parameters()),
    )


def _run_once(engine, job, timer: ModuleTimes, memory: PeakMemory, device) -> dict:
    timer.reset()
    memory.reset()
    synchronize(device)
    start = time.perf_counter()
    result = engine.animate(job.ref, job.driving, settings=job)
    synchronize(device)
    seconds = time.perf_counter() - start
    calls = timer.calls()
    record = {
        "seconds": seconds,
        "frames": result.metadata["result"]["frames"],
        "tiles": result.metadata["result"]["tiles"],
        "stages": result.metadata["timings"],
        "size": [result.metadata["result"]["width"], result.metadata["result"]["height"]],
        "modules": timer.totals(calls),
        "calls": [[name, round(t, 6)] for name, t in calls],
        "peak_memory": memory.peak(),
    }
    del result
    return record


def _median(runs: list[dict], get) -> float | None:
    values = [v for v in (get(run) for run in runs) if v is not None]
    return statistics.median(values) if values else None


def _paired_ratio(runs: list[dict], denoiser: str) -> tuple[float | None, int]:
    """(median, count) over denoising steps of each ControlNet call's time / the time of the denoiser call
    that follows it: adjacent calls see the same machine load, so the ratio holds on a busy machine."""
    ratios = []
    for run in runs:
        pending = None
        for name, seconds in run["calls"]:
            if name == "controlnet":
                pending = seconds
            elif name == denoiser and pending is not None:
                ratios.append(pending / seconds)
                pending = None
    return (statistics.median(ratios) if ratios else None), len(ratios)


def _summary(runs: list[dict], denoiser: str, steps: int) -> dict:
    frames = runs[0]["frames"]
    per_step = runs[0]["tiles"] * steps

    def module(name):
        return lambda run: run["modules"].get(name, {}).get("seconds")

    out = {
        "frames": frames,
        "tiles": runs[0]["tiles"],
        "size": runs[0]["size"],
        "seconds": {"min": min(r["seconds"] for r in runs), "median": _median(runs, lambda r: r["seconds"])},
        "stages": {key: _median(runs, lambda r, k=key: r["stages"].get(k)) for key, _ in STAGES},
        "peak_memory": max((r["peak_memory"] for r in runs if r["peak_memory"] is not None), default=None),
    }
    out["s_per_frame"] = out["seconds"]["median"] / frames
    unet = _median(runs, module(denoiser))
    control = _median(runs, module("controlnet"))
    out["per_step"] = {
        "unet": None if unet is None else unet / per_step,
        "controlnet": None if not control else control / per_step,
    }
    out["modules"] = {name: _median(runs, module(name)) for name in runs[0]["modules"]}
    ratio, pairs = _paired_ratio(runs, denoiser)
    out["controlnet_unet_ratio"] = {"median_per_step": ratio, "steps": pairs}
    return out


def run_speed(settings: SpeedSettings) -> tuple[dict, str, list]:
    """Run the benchmark; returns (JSON report, printed tables, chart groups)."""
    from dispose.benchmark.networks import trainable_counts

    with tempfile.TemporaryDirectory(prefix="dispose-bench-") as workdir:
        engine, networks = _engine(settings, Path(workdir))
        device = engine.runtime.torch_device()
        values = {
            "ref": settings.ref,
            "driving": settings.driving,
            "max_frames": settings.frames,
            "controlnet_interval": settings.controlnet_interval,
        }
        if settings.resolution:
            values["resolution"] = settings.resolution
        if settings.steps:
            values["num_inference_steps"] = settings.steps
        job = engine.settings(**values)
        job.validate()
        jobs = {"base": replace(job, baseline=True), "dispose": job}
        modules = {
            name: m for name, m in engine.pipeline.components.items() if isinstance(m, torch.nn.Module)
        }
        timer, memory = ModuleTimes(modules, device), PeakMemory(device)
        runs: dict[str, list] = {"base": [], "dispose": []}
        rounds = settings.warmup + settings.repeats
        for index in range(rounds):
            for variant, variant_job in jobs.items():
                record = _run_once(engine, variant_job, timer, memory, device)
                timed = index >= settings.warmup
                if timed:
                    runs[variant].append(record)
                if settings.progress:
                    print(
                        f"round {index + 1}/{rounds} {variant}: {record['seconds']:.2f} s"
                        f"{'' if timed else ' (warm-up)'}",
                        flush=True,
                    )
        timer.remove()
        counts = trainable_counts(engine.pipeline)
    denoiser = _denoiser(modules)
    summary = {
        variant: _summary(variant_runs, denoiser, job.num_inference_steps)
        for variant, variant_runs in runs.items()
    }
    predicted = None
    if settings.base == "mimicmotion" and not settings.tiny:
        from dispose.benchmark.flops import svd_controlnet_unet_ratio

        width, height = summary["dispose"]["size"]
        tile = min(job.num_frames, summary["dispose"]["frames"] + 1)
        predicted = svd_controlnet_unet_ratio(width, height, tile)
    report = {
        "benchmark": "speed",
        "networks": networks,
        "settings": {**asdict(settings), "job": job.to_dict(), "runtime": engine.runtime.to_dict()},
        "environment": environment(device),
        "memory_kind": memory.kind,
        "trainable_parameters": counts,
        "denoiser": denoiser,
        "summary": summary,
        "runs": runs,
        "predicted_controlnet_unet_flop_ratio": predicted,
    }
    return report, format_speed(report), chart_groups(report)


def _ratio(a, b):
    return None if a is None or not b else a / b


def format_speed(report: dict) -> str:
    """Table 7's layout with the paper's figures beside ours, then the per-stage split."""
    settings, summary = report["settings"], report["summary"]
    base, dispose = summary["base"], summary["dispose"]
    rows7 = paper.TABLE7.get(settings["base"], {})
    job = settings["job"]
    counts = report["trainable_parameters"]
    env = report["environment"]
    lines = [
        (
            f"Table 7 layout: {settings['base']}, {report['networks']} networks, {base['frames']} frames at "
            f"{base['size'][0]}x{base['size'][1]}, {job['num_inference_steps']} steps, {env['device']} "
            f"({env['device_name']}) {settings['runtime']['dtype']}, median of {settings['repeats']} "
            f"interleaved runs after {settings['warmup']} warm-up"
        )
    ]
    rows = []
    for key, variant in (("base", base), ("dispose", dispose)):
        label, paper_mi, paper_s = rows7.get(key, (key, None, None))
        rows.append(
            [
                label,
                paper_mi,
                counts[key] / 2**20,
                paper_s,
                variant["s_per_frame"],
                gib(variant["peak_memory"]),
            ]
        )
    paper_ratio = _ratio(rows[1][3], rows[0][3])
    rows.append(
        [
            "ratio DisPose / base",
            None,
            None,
            paper_ratio,
            _ratio(dispose["s_per_frame"], base["s_per_frame"]),
            "",
        ]
    )
    memory = report["memory_kind"] or "not measured on this device"
    lines.append(
        table(
            [
                "Method",
                "trainable Mi (paper)",
                "trainable Mi (ours)",
                "s/frame (paper)",
                "s/frame (ours)",
                f"peak memory ({memory})",
            ],
            rows,
        )
    )
    lines += ["", "Per stage (median seconds per run; per denoising step of one tile, CFG included):"]
    stage_rows = [[title, base["stages"].get(key), dispose["stages"].get(key)] for key, title in STAGES]
    stage_rows += [
        [f"{report['denoiser']} per step", base["per_step"]["unet"], dispose["per_step"]["unet"]],
        ["controlnet per step", None, dispose["per_step"]["controlnet"]],
        ["whole run", base["seconds"]["median"], dispose["seconds"]["median"]],
    ]
    lines.append(table(["stage", "base (s)", "base + DisPose (s)"], stage_rows))
    paired = dispose["controlnet_unet_ratio"]
    measured = paired["median_per_step"]
    predicted = report["predicted_controlnet_unet_flop_ratio"]
    denoiser = report["denoiser"]
    text = (f"\nControlNet / {denoiser} time per step: measured {cell(measured)} (median over "
            f"{paired['steps']} steps of each ControlNet call against the {denoiser} call after it)")
    if predicted is not None and measured is not None:
        text += (
            f", FLOP ratio of the same networks at this size {predicted:.3f} (cost model), "
            f"difference {100 * (measured / predicted - 1):+.1f} %"
        )
    lines.append(text)
    return "\n".join(lines)


def chart_groups(report: dict) -> list:
    summary = report["summary"]
    groups = [
        (
            title,
            {
                "base": summary["base"]["stages"].get(key),
                "base + DisPose": summary["dispose"]["stages"].get(key),
            },
        )
        for key, title in STAGES
    ]
    groups.append(
        (
            "whole run",
            {
                "base": summary["base"]["seconds"]["median"],
                "base + DisPose": summary["dispose"]["seconds"]["median"],
            },
        )
    )
    return groups
