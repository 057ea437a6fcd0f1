"""Train DisPose's hybrid ControlNet on a frozen base (paper sec. 4.3 and 5; defaults: the paper's settings).

Settings come from a YAML file (configs/train/mimicmotion.yaml: 16 frames, 768x1024, batch 8, lr 2e-5, 10,000
steps, AdamW, bf16, gradient checkpointing); options below and --set section.key=value override it.  Launch
with accelerate for several GPUs or nodes, e.g.

    accelerate launch --num_processes 8 -m dispose.cli train --config configs/train/mimicmotion.yaml \\
        --data dataset/ --weights pretrained_weights/ --out runs/dispose

Several CPU processes (accelerate launch --cpu starts one): torchrun --nproc_per_node 3 -m dispose.cli train
--cpu ...

Writes OUT/checkpoints/checkpoint-STEP (accelerate states; --resume latest continues from the newest complete
one and refuses when there is none), OUT/logs (TensorBoard), OUT/validation/step-STEP.mp4 and
OUT/export/DisPose.pth + DisPose.safetensors, which dispose animate loads with --dispose-ckpt (--base
musepose, configs/train/musepose.yaml: OUT/export/DisPose_MusePose.pth, loaded with --dispose-musepose).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path,
                        help="training YAML (default: built-in defaults = the paper's)")
    parser.add_argument("--base", help="base model to train on: mimicmotion | musepose (base)")
    parser.add_argument("--data", help="dataset folder written by dispose prepare (data.root)")
    parser.add_argument("--weights", help="folder in the release's pretrained_weights/ layout (weights.dir)")
    parser.add_argument("--svd", help="stable-video-diffusion-img2vid-xt-1-1 folder, if not under --weights "
                        "(weights.svd; MimicMotion base)")
    parser.add_argument("--mimicmotion",
                        help="MimicMotion_1-1.pth, if not under --weights (weights.mimicmotion)")
    for key, what in (("musepose", "the MusePose/ release folder"),
                      ("sd_image_variations", "the sd-image-variations-diffusers folder"),
                      ("clip_image_encoder", "the image_encoder folder"),
                      ("sd_vae", "the sd-vae-ft-mse folder")):
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key,
                            help=f"{what}, if not under --weights (weights.{key}; MusePose base)")
    parser.add_argument("--out", help="output folder (output_dir)")
    parser.add_argument("--max-steps", type=int, help="optimiser steps (train.max_steps)")
    parser.add_argument("--resume", help="'latest' or a checkpoint folder OUT/checkpoints/checkpoint-STEP")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any config entry (repeatable), e.g. --set train.use_ema=true")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")


def run(args: argparse.Namespace) -> int:
    from dispose.media.files import check_apart
    from dispose.training.config import TrainConfig
    from dispose.training.trainer import end_process_group, train

    config = TrainConfig.load(args.config, args.overrides, base=args.base)
    weights = ("dir", "svd", "mimicmotion", "musepose", "sd_image_variations", "clip_image_encoder", "sd_vae")
    for section, key, value in ((config.data, "root", args.data),
                                (config, "output_dir", args.out), (config.train, "max_steps", args.max_steps),
                                *((config.weights, key, getattr(args, "weights" if key == "dir" else key))
                                  for key in weights)):
        if value is not None:
            setattr(section, key, value)
    config.check()
    check_apart([("--data", config.data.root), ("--weights", config.weights.dir), ("--config", args.config)],
                [("--out", config.output_dir)])
    result = train(config, resume=args.resume, cpu=args.cpu)
    end_process_group()
    for path in result.exported:
        print(f"wrote {path}", file=sys.stderr)
    return 0
