"""Animate a reference image with the poses of a driving video (DisPose on MimicMotion).

Defaults are the release's test settings (configs/test.yaml): resolution 576, tiles of 16 frames
overlapping by 6, 25 steps, guidance 2.0, every 2nd driving frame, 15 fps output, noise aug 0, VAE
decode chunks of 8, seed 42.  Before loading anything, every weight file the run needs is checked and
all missing ones are listed with where to get them.  Writes OUT.mp4 atomically and OUT.json (every
setting, the seed, sha256 of the inputs and weight files (cached per file version), timings); --side-by-side adds
reference | skeleton | result.  --baseline runs plain MimicMotion with the same pipeline and seed.

Several jobs: --config jobs.yaml (see dispose.pipelines.job) with --out FOLDER; --resume skips jobs
whose output exists.  Multi-GPU: accelerate launch --num_processes K -m dispose.cli animate --config
jobs.yaml --out FOLDER (each process runs every K-th job on its own GPU).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

#: Command-line options that override job settings (dest -> JobSettings field).
_JOB_OPTIONS = {
    "ref": "ref", "driving": "driving", "resolution": "resolution", "num_frames": "num_frames",
    "frames_overlap": "frames_overlap", "steps": "num_inference_steps", "guidance_scale": "guidance_scale",
    "min_guidance_scale": "min_guidance_scale", "noise_aug_strength": "noise_aug_strength",
    "sample_stride": "sample_stride", "fps": "fps", "decode_chunk_size": "decode_chunk_size", "seed": "seed",
    "max_frames": "max_frames", "controlnet_scale": "controlnet_scale", "side_by_side": "side_by_side",
}
_WEIGHT_OPTIONS = {"svd": "svd", "mimicmotion": "mimicmotion", "dispose_ckpt": "dispose", "sd15": "sd15",
                   "dwpose": "dwpose", "cmp": "cmp"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--ref", type=Path, help="reference image")
    io.add_argument("--driving", type=Path, help="driving video")
    io.add_argument("--out", type=Path, help="output .mp4 (one job) or folder (job file)")
    io.add_argument("--config", type=Path, help="YAML job file (one or more jobs; release test.yaml accepted)")
    io.add_argument("--side-by-side", type=Path, help="also write reference | skeleton | result to this .mp4")
    io.add_argument("--resume", action="store_true", help="skip jobs whose output already exists")

    weights = parser.add_argument_group("weights (checked before anything loads)")
    weights.add_argument("--weights", type=Path, help="folder in the release's pretrained_weights/ layout")
    weights.add_argument("--svd", help="stable-video-diffusion-img2vid-xt-1-1 folder or HF id")
    weights.add_argument("--mimicmotion", help="MimicMotion_1-1.pth (or HF id/path)")
    weights.add_argument("--dispose-ckpt", help="DisPose.pth (or HF id/path)")
    weights.add_argument("--sd15", help="stable-diffusion-v1-5 folder or HF id (DIFT)")
    weights.add_argument("--dwpose", "--dwpose-dir", dest="dwpose",
                         help="folder with yolox_l.onnx and dw-ll_ucoco_384.onnx")
    weights.add_argument("--cmp", "--cmp-checkpoint", dest="cmp", help="CMP ckpt_iter_42000.pth.tar")

    gen = parser.add_argument_group("generation (default: release test settings)")
    gen.add_argument("--resolution", type=int, help="short side of the output, multiple of 64 (576)")
    gen.add_argument("--num-frames", type=int, help="frames per tile (16)")
    gen.add_argument("--frames-overlap", type=int, help="overlap of consecutive tiles (6)")
    gen.add_argument("--steps", type=int, help="denoising steps (25)")
    gen.add_argument("--guidance-scale", type=float, help="CFG scale; the max of a per-frame ramp (2.0)")
    gen.add_argument("--min-guidance-scale", type=float, help="CFG scale of the first frame (= --guidance-scale)")
    gen.add_argument("--noise-aug-strength", type=float, help="noise added to the reference (0)")
    gen.add_argument("--sample-stride", type=int, help="use every N-th driving frame (2)")
    gen.add_argument("--max-frames", type=int, help="at most N driving frames (after the stride)")
    gen.add_argument("--fps", type=int, help="output fps (15)")
    gen.add_argument("--decode-chunk-size", type=int, help="frames per VAE decode (8); 1 = least memory")
    gen.add_argument("--seed", type=int, help="random seed (42)")
    gen.add_argument("--controlnet-scale", type=float, help="scale of DisPose's residuals (1.0)")
    gen.add_argument("--baseline", action="store_true", help="plain MimicMotion: same pipeline without DisPose")
    gen.add_argument("--release-missing-points", action="store_true",
                     help="treat undetected keypoints in the motion fields as the release does (default: ignored)")

    run = parser.add_argument_group("runtime")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    run.add_argument("--dtype", default="auto", choices=("auto", "fp16", "bf16", "fp32"),
                     help="auto = fp16 on CUDA, else fp32")
    run.add_argument("--cfg", dest="cfg_mode", default="batch", choices=("batch", "sequential"),
                     help="CFG halves in one batch (release) or two passes (half the activation memory)")
    run.add_argument("--offload", action="store_true", help="model CPU offload (accelerate hooks)")
    run.add_argument("--compile", action="store_true", help="torch.compile the UNet and ControlNet")
    run.add_argument("--no-guidance-cache", dest="cache_guidance", action="store_false",
                     help="re-encode DisPose's guidance at every step instead of keeping it per tile "
                          "(same output, slower; saves ~141 MB per 16-frame tile at 576x1024 fp16)")
    run.add_argument("--detector", default="dwpose", choices=("dwpose", "mediapipe"),
                     help="pose detector (dwpose as the release; mediapipe needs no weights)")
    run.add_argument("--dense", default="cmp", choices=("cmp", "propagate", "none"),
                     help="dense motion field: CMP (release), a weight-free propagation, or none")
    run.add_argument("--align", help="pose alignment of dispose.pose.extract (default: its default)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _process_shard() -> tuple[int, int]:
    """(index, count) of this process under ``accelerate launch`` / torchrun, else (0, 1)."""
    count = int(os.environ.get("WORLD_SIZE", "1"))
    if count <= 1:
        return 0, 1
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes


def run(args: argparse.Namespace) -> int:
    from dispose.pipelines.job import build_jobs, shard
    from dispose.pipelines.runner import Animator, Runtime

    overrides = {field: getattr(args, dest) for dest, field in _JOB_OPTIONS.items()}
    for flag in ("baseline", "release_missing_points"):
        if getattr(args, flag):
            overrides[flag] = True
    jobs, weight_overrides = build_jobs(args.config, overrides, args.out)
    weight_overrides.update({key: getattr(args, dest) for dest, key in _WEIGHT_OPTIONS.items()
                             if getattr(args, dest) is not None})
    index, count = _process_shard()
    device = args.device
    if count > 1:
        jobs = shard(jobs, index, count)
        if device == "auto":
            from accelerate import PartialState

            device = str(PartialState().device)
    if args.resume:
        skipped = [job for job in jobs if Path(job.out).is_file()]
        jobs = [job for job in jobs if not Path(job.out).is_file()]
        for job in skipped:
            print(f"skip (exists): {job.out}", file=sys.stderr)
    if not jobs:
        return 0
    runtime = Runtime(device=device, dtype=args.dtype, cfg_mode=args.cfg_mode, offload=args.offload,
                      compile=args.compile, cache_guidance=args.cache_guidance, detector=args.detector,
                      dense=args.dense, align=args.align,
                      progress=not args.no_progress)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # one bar of our own, not one per model file loaded
    animator = Animator.prepare(jobs, runtime, args.weights, weight_overrides)
    for job in jobs:
        animator.run(job)
        print(f"wrote {job.out}", file=sys.stderr)
    return 0
