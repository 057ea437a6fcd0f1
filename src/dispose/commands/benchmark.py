"""Measure the paper's Tables 7 (speed, memory, parameters), 1 and 6 (quality) and a training step.

dispose benchmark speed   [--base B] [--frames 16] [--resolution 576] [--steps 25] [--repeats 3] [--out DIR]
dispose benchmark train   [--base B] [--config configs/train/B.yaml] [--micro-batch 1] [--no-checkpointing]
dispose benchmark quality --data TikTok_dataset/ --weights pretrained_weights/ [--out DIR]

speed and train need no weights: the full-size networks are built on the device with random weights (speed
and memory do not depend on the values).  --tiny runs any of them with the tiny random test models on the
CPU.  Each writes DIR/NAME.txt (the printed tables), DIR/NAME.json (every setting, the device, driver and
library versions, every measurement) and DIR/NAME.png (a bar chart).  See the README, "Benchmarks".
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _common(parser: argparse.ArgumentParser, name: str) -> None:
    from dispose.bases import BASES, DEFAULT_BASE

    parser.add_argument(
        "--base", choices=sorted(BASES), default=DEFAULT_BASE, help=f"base model ({DEFAULT_BASE})"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(f"benchmark-{name}"),
        help=f"folder for {name}.txt, {name}.json and {name}.png (default benchmark-{name}/)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "fp16", "bf16", "fp32"),
        help="precision (auto: fp16 on CUDA, fp32 elsewhere)",
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny random test models (CPU, seconds)")
    parser.add_argument("--no-progress", action="store_true", help="print nothing while running")


def _shared_example(name: str) -> Path | None:
    root = os.environ.get("DISPOSE_SHARED_DATA")
    candidates = [Path(root)] if root else [p / "shared" / "data" for p in Path(__file__).resolve().parents]
    return next((folder / name for folder in candidates if (folder / name).is_file()), None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dispose.pose.detector_factory import DETECTORS
    from dispose.validation import Rule, job_option, option_type

    count, rounds = option_type(Rule(int, least=1)), option_type(Rule(int, least=0))
    sub = parser.add_subparsers(dest="benchmark", metavar="WHAT", required=True)
    speed = sub.add_parser("speed", help="s/frame, per-stage times and peak memory, base vs base + DisPose")
    _common(speed, "speed")
    speed.add_argument("--ref", type=Path, help="reference image (default: the example musepose_ref.png)")
    speed.add_argument("--driving", type=Path, help="driving video (default: the example musepose_dance.mp4)")
    speed.add_argument("--frames", type=count, default=16, help="driving frames of the job (16)")
    speed.add_argument(
        "--resolution", type=job_option("resolution"),
        help="generation size (576 = 576x1024; default: the base's)",
    )
    speed.add_argument(
        "--steps", type=job_option("num_inference_steps"),
        help="denoising steps (default: the base's)",
    )
    speed.add_argument(
        "--repeats", type=count, default=3, help="timed rounds, each running base and DisPose (3)"
    )
    speed.add_argument("--warmup", type=rounds, default=1, help="untimed rounds first (1)")
    speed.add_argument(
        "--cfg",
        dest="cfg_mode",
        default="batch",
        choices=("batch", "sequential"),
        help="CFG halves in one batch (release) or two passes",
    )
    speed.add_argument("--offload", action="store_true", help="model CPU offload (accelerate hooks)")
    speed.add_argument("--compile", action="store_true", help="torch.compile the UNet and ControlNet")
    speed.add_argument(
        "--controlnet-interval",
        type=job_option("controlnet_interval"),
        default=1,
        metavar="K",
        help="run the ControlNet every K-th step (changes the output; default 1)",
    )
    speed.add_argument(
        "--weights", type=Path, help="time the real weights in this folder instead of random ones"
    )
    speed.add_argument("--dwpose-dir", type=Path, help="DWPose's folder: its poses instead of MediaPipe's")

    train = sub.add_parser("train", help="training step time, samples/s and peak memory vs the prediction")
    _common(train, "train")
    train.add_argument(
        "--config", type=Path, help="training config (default configs/train/BASE.yaml settings)"
    )
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config entry (repeatable)",
    )
    train.add_argument("--micro-batch", type=count, help="clips per forward (default: the config's)")
    train.add_argument("--no-checkpointing", action="store_true", help="gradient checkpointing off")
    train.add_argument("--frames", type=count, help="frames per clip (default: the config's)")
    train.add_argument(
        "--size", type=option_type(Rule(int, least=64, multiple=64)), nargs=2, metavar=("W", "H"),
        help="clip size (default: the config's)",
    )
    train.add_argument("--steps", type=count, default=3, help="timed optimiser steps (3)")
    train.add_argument("--warmup", type=rounds, default=1, help="untimed steps first (1)")

    quality = sub.add_parser("quality", help="the paper's TikTok protocol: Tables 1 and 6, base vs DisPose")
    _common(quality, "quality")
    quality.add_argument(
        "--data",
        type=Path,
        required=True,
        help="TikTok-layout dataset root (NNNNN/images/*.png per sequence)",
    )
    quality.add_argument(
        "--sequences",
        nargs="+",
        metavar="NNNNN",
        help="sequence folders to use (default the paper's 00335 .. 00340)",
    )
    quality.add_argument("--weights", type=Path, help="animation weights (pretrained_weights/ layout)")
    quality.add_argument(
        "--eval-weights", type=Path, help="evaluation weights folder (as dispose eval --weights)"
    )
    quality.add_argument("--metrics", nargs="+", metavar="NAME", help="subset of dispose eval's metrics")
    quality.add_argument(
        "--resolution", type=job_option("resolution"),
        help="generation size (default: the base's)",
    )
    quality.add_argument(
        "--steps", type=job_option("num_inference_steps"),
        help="denoising steps (default: the base's)",
    )
    quality.add_argument(
        "--max-frames", type=job_option("max_frames"),
        help="frames per sequence after the stride (default: all)",
    )
    quality.add_argument(
        "--sample-stride",
        type=job_option("sample_stride"),
        default=1,
        help="use every N-th frame of a sequence (1: the frame folders are read as given)",
    )
    quality.add_argument(
        "--folder-fps", type=option_type(Rule(float, least=1)), default=30.0,
        help="frame rate of the frame folders (30)",
    )
    quality.add_argument(
        "--detector", default="dwpose", choices=DETECTORS, help="pose detector"
    )
    quality.add_argument("--dense", default="cmp", choices=("cmp", "propagate", "none"), help="dense field")


def run(args: argparse.Namespace) -> int:
    from dispose.errors import UserError
    from dispose.media.files import check_creatable, ensure_folder

    check_creatable(args.out / f"{args.benchmark}.json", "--out")  # numbers: checked by their option types
    for option in ("data", "weights", "eval_weights", "config", "dwpose_dir"):
        path = getattr(args, option, None)
        if path is not None and not path.exists():
            raise UserError(f"--{option.replace('_', '-')} {path} does not exist")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # no bar per model file written or loaded
    runner = {"speed": _speed, "train": _train, "quality": _quality}[args.benchmark]
    report, text, groups, title, unit = runner(args)
    if not report:  # a process of a sharded quality run other than the first: its videos are written
        return 0
    from dispose.benchmark.chart import bar_chart
    from dispose.benchmark.report import write_outputs

    ensure_folder(args.out)
    written = write_outputs(args.out, args.benchmark, report, text)
    chart = args.out / f"{args.benchmark}.png"
    bar_chart(chart, title, groups, unit)
    print(text)
    print("\nwrote " + ", ".join(str(p) for p in [*written, chart]), file=sys.stderr)
    return 0


def _example(path: Path | None, name: str, option: str) -> Path:
    from dispose.errors import UserError

    path = path or _shared_example(name)
    if path is None:
        raise UserError(f"{option}: give a file (the example {name} was not found; set DISPOSE_SHARED_DATA)")
    if not path.is_file():
        raise UserError(f"{option} {path} does not exist")
    return path


def _settings(cls, args: argparse.Namespace, **given):
    """A benchmark's settings dataclass from the options of the same name, ``given`` values over them, and
    ``progress`` from ``--no-progress``."""
    import dataclasses

    names = {field.name for field in dataclasses.fields(cls)} - set(given) - {"progress"}
    return cls(**{name: getattr(args, name) for name in names if hasattr(args, name)}, **given,
               progress=not args.no_progress)


def _speed(args):
    from dispose.benchmark.speed import SpeedSettings, run_speed
    from dispose.errors import UserError

    if args.tiny and args.weights:
        raise UserError("--tiny and --weights exclude each other: pick the tiny test models or your weights")
    settings = _settings(SpeedSettings, args, ref=_example(args.ref, "musepose_ref.png", "--ref"),
                         driving=_example(args.driving, "musepose_dance.mp4", "--driving"),
                         dwpose=args.dwpose_dir)
    report, text, groups = run_speed(settings)
    return report, text, groups, f"dispose benchmark speed: {args.base}, seconds per run (median)", "s"


def _train(args):
    from dispose.benchmark.train import TrainBenchSettings, run_train

    settings = _settings(TrainBenchSettings, args, overrides=list(args.overrides),
                         checkpointing=not args.no_checkpointing,
                         size=tuple(args.size) if args.size else None)
    report, text, groups = run_train(settings)
    return report, text, groups, f"dispose benchmark train: {args.base}, one optimiser step", "s"


def _quality(args):
    from dispose.benchmark.quality import QualitySettings, run_quality

    settings = _settings(QualitySettings, args)
    report, text, groups = run_quality(settings)
    title = f"dispose benchmark quality: {args.base}, DisPose / base per metric (1 = same)"
    return report, text, groups, title, ""
