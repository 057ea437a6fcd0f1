"""``dispose benchmark train``: one training configuration's step time, samples/s and peak memory.

The training model is the trainer's own (``dispose.bases.<base>.training``: frozen base + trainable hybrid
ControlNet, its ``draw`` and ``forward`` giving the per-clip loss), assembled by the base's recipe around its
full-size random networks on the device (the frozen networks directly in the mixed-precision dtype, the
ControlNet in float32, as the trainer keeps it), or, with ``tiny``, by the trainer's own ``build`` from the
tiny test weights.  The random clips carry their dense field (``data.dense_field=flow``): CMP's share of a
step is ``bench/train_cmp_cost.py``'s.  Each timed iteration is what one process does per micro-batch when
the gradients are synchronised: the loss of ``micro_batch`` random clips of the configured size under
autocast, backward, the optimiser step and ``zero_grad``; ``warmup`` iterations run first, untimed, and peak
memory is reset after them.  Settings come from a ``configs/train/*.yaml`` file (default: the base's, when
the checkout's ``configs/`` is there) with ``--set`` overrides.  The prediction of ``bench/train_memory.py``
for the same networks and settings (:mod:`.train_memory`, one process without sharding) is printed beside
the measurement; it covers the MimicMotion base, and excludes the CUDA context and the allocator's cache
(and, on a CPU, where the peak resident set is measured, Python and its libraries).
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from dispose.bases import DEFAULT_BASE
from dispose.benchmark.measure import PeakMemory, environment, synchronize
from dispose.benchmark.report import gib, table


@dataclass
class TrainBenchSettings:
    base: str = DEFAULT_BASE
    config: Path | None = None
    overrides: list = field(default_factory=list)
    micro_batch: int | None = None
    checkpointing: bool = True
    frames: int | None = None
    size: tuple | None = None
    steps: int = 3
    warmup: int = 1
    device: str = "auto"
    dtype: str = "auto"
    tiny: bool = False
    progress: bool = True


def _config(settings: TrainBenchSettings):
    from dispose.training.config import TrainConfig

    path = settings.config
    if path is None:
        shipped = Path(__file__).resolve().parents[3] / "configs" / "train" / f"{settings.base}.yaml"
        path = shipped if shipped.is_file() else None
    frames, size = settings.frames, settings.size
    if settings.tiny:
        frames, size = frames or 4, size or (64, 64)
    overrides = [f"train.gradient_checkpointing={str(settings.checkpointing).lower()}",
                 "data.dense_field=flow", *settings.overrides]
    if settings.micro_batch:
        overrides.append(f"train.micro_batch_size={settings.micro_batch}")
    if frames:
        overrides.append(f"data.num_frames={frames}")
    if size:
        overrides += [f"data.width={size[0]}", f"data.height={size[1]}"]
    if settings.dtype != "auto":
        overrides.append(f"train.mixed_precision={'no' if settings.dtype == 'fp32' else settings.dtype}")
    config = TrainConfig.load(path, overrides, base=settings.base)
    return config, path


def _model(config, settings: TrainBenchSettings, device: torch.device, workdir: Path):
    """The training model (module docstring) on ``device``."""
    from dispose.bases import training_base

    if settings.tiny:
        from dispose.benchmark.networks import tiny_weights

        tiny_weights(settings.base, workdir)
        config.weights.dir = str(workdir)
        config.weights.point_channels = _tiny_point_channels()
        return training_base(settings.base).build(config).to(device), "tiny random"
    from dispose.bases.training import frozen_dtype
    from dispose.benchmark.networks import random_pipeline
    from dispose.devices import on_device

    base = random_pipeline(settings.base, False, frozen_dtype(config.train.mixed_precision), device)
    with on_device(device, torch.float32):  # the ControlNet trains in float32, created on the device
        model = training_base(settings.base).assemble(config, base, copy_weights=False)
    return model, "full-size random"


def _tiny_point_channels() -> int:
    from dispose.guidance.tiny import DIFT_CHANNELS

    return DIFT_CHANNELS


def _batch(config, device: torch.device) -> dict:
    from dispose.bases.training import random_sample

    data, generator = config.data, torch.Generator().manual_seed(config.train.seed)
    samples = [
        random_sample(
            data.num_frames,
            data.width,
            data.height,
            point_channels=config.weights.point_channels,
            generator=generator,
        )
        for _ in range(config.train.micro_batch_size)
    ]
    return {key: torch.stack([s[key] for s in samples]).to(device) for key in samples[0]}


def _prediction(model, config) -> dict | None:
    """``bench/train_memory.py``'s prediction for this model's networks and settings (MimicMotion only)."""
    from dispose.benchmark.train_memory import activation_bytes, predicted_bytes

    unet, controlnet = getattr(model, "unet", None), model.controlnet
    if unet is None or not hasattr(controlnet, "controlnet_cond_embedding"):
        return None
    with torch.device("meta"):
        copies = [
            torch.nn.Module.to(type(m).from_config(m.config), "meta", torch.bfloat16)
            for m in (unet, controlnet)
        ]  # ModelMixin.to warns on dtype casts
    data = config.data
    checkpointing = "blocks" if config.train.gradient_checkpointing else "off"
    activations = activation_bytes(*copies, data.num_frames, data.height, data.width, checkpointing)
    frozen = sum(p.numel() for m in model.frozen_modules() for p in m.parameters())
    trainable = sum(p.numel() for p in controlnet.parameters())
    return predicted_bytes(
        frozen,
        trainable,
        activations,
        config.train.micro_batch_size,
        adam_bytes=2 if config.train.use_8bit_adam else 8,
    )


def run_train(settings: TrainBenchSettings) -> tuple[dict, str, list]:
    """Run the benchmark; returns (JSON report, printed tables, chart groups)."""
    from dispose.bases.training import frozen_dtype
    from dispose.devices import resolve_device
    from dispose.training.trainer import build_optimizer, optimizer_class

    config, config_path = _config(settings)
    device = resolve_device(settings.device)
    memory = PeakMemory(device)
    with tempfile.TemporaryDirectory(prefix="dispose-bench-") as workdir:
        model, networks = _model(config, settings, device, Path(workdir))
    if config.train.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    train = config.train
    parameters = [p for module in model.trainable_modules() for p in module.parameters()]
    optimizer = build_optimizer(optimizer_class(config, device), parameters, train)
    batch = _batch(config, device)
    generator = torch.Generator(device).manual_seed(train.seed)
    mixed = frozen_dtype(train.mixed_precision)  # the autocast dtype (float32: no autocast)
    model.train()
    times, losses = [], []
    for index in range(settings.warmup + settings.steps):
        if index == settings.warmup:
            memory.reset()
        synchronize(device)
        start = time.perf_counter()
        autocast = (torch.autocast(device.type, dtype=mixed) if mixed != torch.float32
                    else contextlib.nullcontext())
        with autocast:
            loss = model(batch, model.draw(batch, generator)).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        seconds = time.perf_counter() - start
        losses.append(loss.item())
        if index >= settings.warmup:
            times.append(seconds)
        if settings.progress:
            print(
                f"step {index + 1}/{settings.warmup + settings.steps}: {seconds:.2f} s"
                f"{' (warm-up)' if index < settings.warmup else ''}",
                flush=True,
            )
    peak = memory.peak()
    prediction = _prediction(model, config)
    step = statistics.median(times)
    report = {
        "benchmark": "train",
        "networks": networks,
        "config_file": None if config_path is None else str(config_path),
        "settings": {**asdict(settings), "config": config.to_dict()},
        "environment": environment(device),
        "memory_kind": memory.kind,
        "trainable_parameters": sum(p.numel() for p in parameters),
        "step_seconds": {"median": step, "min": min(times), "all": times},
        "samples_per_second": train.micro_batch_size / step,
        "peak_memory": peak,
        "losses": losses,
        "predicted_memory": prediction,
    }
    return report, format_train(report), [("step time", {"measured": step})]


def format_train(report: dict) -> str:
    config = report["settings"]["config"]
    data, train = config["data"], config["train"]
    predicted = report["predicted_memory"]
    total = None if predicted is None else predicted["total"]
    peak = report["peak_memory"]
    difference = "n/a" if total is None or peak is None else f"{(peak - total) / 2**30:+.2f} GiB"
    env = report["environment"]
    head = (
        f"Training step: {config['base']}, {report['networks']} networks, micro-batch "
        f"{train['micro_batch_size']} x {data['num_frames']} frames at {data['width']}x{data['height']}, "
        f"mixed precision {train['mixed_precision']}, gradient checkpointing "
        f"{'on' if train['gradient_checkpointing'] else 'off'}, {env['device']} ({env['device_name']})"
    )
    rows = [
        ["step time (s, median)", report["step_seconds"]["median"], ""],
        ["samples/s", report["samples_per_second"], ""],
        [
            f"peak memory ({report['memory_kind'] or 'not measured here'})",
            gib(peak),
            "n/a" if total is None else gib(total),
        ],
        ["difference measured - predicted", difference, ""],
    ]
    lines = [head, table(["", "measured", "predicted (bench/train_memory.py)"], rows)]
    if predicted is not None:
        lines.append("prediction: " + ", ".join(f"{key} {gib(value)}" for key, value in predicted.items()))
    return "\n".join(lines)
