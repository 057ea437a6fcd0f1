"""Compute DisPose's guidance of a reference image and a driving video, save it for
`dispose animate --guidance`, with pictures.

The reference is resized and centre-cropped to the generation size W x H (576x1024 for a portrait at
--resolution 576); every --sample-stride-th driving frame (up to --max-frames) is posed (or its pose read from
--poses) and aligned to the reference person.  From the 18 body keypoints of the reference (frame 0) and the N
driving frames it computes (paper sec. 4.1 and 4.2, see dispose.guidance):

  F_s  sparse motion field (Eq. 3): frame-to-frame keypoint steps, Gaussian-filtered (199 px, sigma 20);
       not stored: generated from the poses wherever it is used
  P_d  reference-based sparse flow (Eq. 4) on CMP's 384x384 grid (likewise derived from the poses)
  F_d  dense motion field: --dense cmp (the release: CMP on P_d and the reference; needs --cmp-checkpoint
       ckpt_iter_42000.pth.tar), propagate (weight-free, edge-aware spreading of P_d over the person; not in
       the release) or none.  Default: cmp when --cmp-checkpoint is given, else propagate.
  F_p  point embeddings (Eq. 6): DIFT features of the reference keypoints, with --sd15 (SD1.5 folder);
       without it `dispose animate --guidance` computes them from the saved reference.

Writes the folder --out as a unit (built beside it, renamed into place when complete; a rerun replaces an
earlier `dispose guidance` result whole; a second writer at the same time, a folder written by another command
and a folder holding one of the inputs are refused):

  guidance.json              format dispose-guidance/2, sizes, settings, input sha256s, fingerprint
  reference.png              the reference at the generation size
  reference.json, poses.json the reference pose and the N aligned driving poses (dispose-poses/1)
  fields.safetensors         dense_flow F_d (N, 2, H, W) float16 (float32 with --match-release) [pixels of
                             W x H, channel 0 = x]; point_embeddings (18, C) float32 (with --sd15)
  guidance.mp4               per driving frame: skeleton | F_s | F_d in the Middlebury colour code (direction
                             = hue, length = saturation; one scale per field for the whole video, the 90th
                             percentile of the frames' largest vectors; arrows on F_d), --picture-width wide
                             per panel (default 384; 0 = the generation size)
  frames/NNNN.png            the same pictures one file per frame, with --frame-pictures

Needs no weights with the defaults (MediaPipe poses, propagated F_d).  Missing keypoints contribute nothing
unless --release-missing-points (the release's handling, see dispose.guidance.sparse_field).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

#: The choices of --dense, spelled out so that building the parser does not import torch.
DENSE_CHOICES = ("cmp", "propagate", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dispose.pose.alignment import ALIGN_MODES
    from dispose.validation import job_option

    parser.add_argument("--ref", type=Path, required=True, help="reference image")
    parser.add_argument("--base", metavar="NAME",
                        help="base model the guidance is for (as dispose animate --base): its resolution, "
                        "stride and seed apply unless given (default: the default base)")
    parser.add_argument("--driving", type=Path, help="driving video (optional with --poses)")
    parser.add_argument("--poses", type=Path,
                        help="driving poses from a file (dispose-poses JSON, or OpenPose JSON: "
                        "one file or a folder of per-frame files) instead of detecting them")
    parser.add_argument("--out", type=Path, required=True, help="output folder (written as a unit)")
    parser.add_argument("--dwpose-dir", type=Path, help="folder with yolox_l.onnx and dw-ll_ucoco_384.onnx "
                        "(default: MediaPipe)")
    parser.add_argument("--cmp-checkpoint", type=Path, help="CMP ckpt_iter_42000.pth.tar "
                        "(semiauto_annot/resnet50_vip+mpii_liteflow)")
    parser.add_argument("--sd15", type=Path,
                        help="Stable Diffusion 1.5 folder: also store the DIFT point embeddings")
    parser.add_argument("--dense", choices=DENSE_CHOICES,
                        help="dense field F_d: cmp, propagate or none (default: cmp with --cmp-checkpoint, "
                             "else propagate)")
    parser.add_argument("--resolution", type=job_option("resolution"),
                        help="short side of the generation frame, a multiple of 64 (default: the base's)")
    parser.add_argument("--sample-stride", type=job_option("sample_stride"),
                        help="use every N-th driving frame (default: the base's); times int(fps / 24) for 48 "
                        "fps and faster, as the release")
    parser.add_argument("--max-frames", type=job_option("max_frames"),
                        help="use at most N driving frames (after the stride)")
    parser.add_argument("--align", choices=ALIGN_MODES, default="global",
                        help="pose alignment to the reference (global: the release's fit)")
    parser.add_argument("--release-missing-points", action="store_true",
                        help="treat undetected keypoints as the release does (spurious corner vectors)")
    parser.add_argument("--match-release", action="store_true",
                        help="as the release: its missing-keypoint handling and F_d kept in float32")
    parser.add_argument("--seed", type=job_option("seed"),
                        help="seed of the DIFT noise ensemble (default: the base's)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a driving video that ends before the frame count its container declares "
                        "(default: a warning; both counts go to guidance.json)")
    parser.add_argument("--no-pictures", action="store_true", help="skip guidance.mp4")
    parser.add_argument("--frame-pictures", action="store_true", help="also write frames/NNNN.png")
    parser.add_argument("--picture-width", type=int, default=384,
                        help="width of each picture panel in pixels (384; 0 = the generation size)")
    parser.add_argument("--device", default="auto",
                        help="device for DWPose, CMP and DIFT: auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _check_args(args: argparse.Namespace) -> str:
    """Validate the options before anything loads; return the dense method to use."""
    from dispose.errors import UserError
    from dispose.media.files import check_apart

    for label, path in (("--ref", args.ref), ("--driving", args.driving),
                        ("--cmp-checkpoint", args.cmp_checkpoint)):
        if path is not None and not path.is_file():
            raise UserError(f"{label} {path} does not exist")
    for label, path in (("--poses", args.poses), ("--sd15", args.sd15), ("--dwpose-dir", args.dwpose_dir)):
        if path is not None and not path.exists():
            raise UserError(f"{label} {path} does not exist")
    check_apart([("--ref", args.ref), ("--driving", args.driving), ("--poses", args.poses),
                 ("--cmp-checkpoint", args.cmp_checkpoint), ("--sd15", args.sd15),
                 ("--dwpose-dir", args.dwpose_dir)],
                [("--out", args.out)], folders=True)
    if args.driving is None and args.poses is None:
        raise UserError("give the driving video (--driving) or its poses (--poses)")
    if args.picture_width != 0 and args.picture_width < 16:
        raise UserError(f"--picture-width must be 0 (full size) or at least 16, got {args.picture_width}")
    dense = args.dense or ("cmp" if args.cmp_checkpoint is not None else "propagate")
    if dense == "cmp" and args.cmp_checkpoint is None:
        raise UserError("--dense cmp needs --cmp-checkpoint (ckpt_iter_42000.pth.tar); use --dense propagate "
                        "for a weight-free dense field")
    return dense


def run(args: argparse.Namespace) -> int:
    from dispose.bases import get_base
    from dispose.devices import resolve_device
    from dispose.guidance.stage import GuidanceModels, compute_guidance
    from dispose.media.files import atomic_folder
    from dispose.pose.detector_factory import load_detector

    dense = _check_args(args)
    defaults = get_base(args.base).defaults
    for name in ("resolution", "sample_stride", "seed"):  # numbers the base owns, unless given
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    device = resolve_device(args.device)
    with atomic_folder(args.out, command="dispose guidance") as folder:
        detector = load_detector(args.dwpose_dir, device=str(device))
        models = GuidanceModels(detector=detector, cmp=args.cmp_checkpoint, sd15=args.sd15)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        guidance = compute_guidance(
            args.ref, args.driving, poses=args.poses, resolution=args.resolution,
            sample_stride=args.sample_stride, max_frames=args.max_frames, align=args.align, dense=dense,
            models=models, release_missing_points=args.release_missing_points,
            match_release=args.match_release, seed=args.seed, device=device, strict=args.strict,
            timings=timings, on_progress=None if args.no_progress else _stage_printer())
        elapsed = time.perf_counter() - start
        guidance.save(folder)
        written = "guidance.json, reference.png, reference.json, poses.json, fields.safetensors"
        if not args.no_pictures:
            _write_pictures(folder, guidance, args)
            written += ", guidance.mp4" + (", frames/*.png" if args.frame_pictures else "")
    frames, (width, height) = len(guidance.driving), guidance.size
    print(f"{args.driving or args.poses}: {frames} driving frames at {guidance.fps:g} fps, {width}x{height}; "
          f"{guidance.filled} frame(s) without a person filled from a neighbour; guidance in {elapsed:.1f} s "
          f"({', '.join(f'{k} {v:.1f} s' for k, v in timings.items())}); wrote {written} to {args.out}")
    return 0


def _stage_printer():
    def report(stage: str, done: int, total: int) -> None:
        if done == 0:
            print(f"{stage}...", file=sys.stderr)

    return report


def _write_pictures(folder: Path, guidance, args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from dispose.guidance.pictures import guidance_pictures
    from dispose.media.image import save_image
    from dispose.media.video import write_video

    if args.frame_pictures:
        (folder / "frames").mkdir()
    pictures = guidance_pictures(guidance, width=args.picture_width or None)

    def each():
        for index, picture in enumerate(tqdm(pictures, total=len(guidance.driving), desc="pictures",
                                             unit="frame", disable=args.no_progress)):
            if args.frame_pictures:
                save_image(folder / "frames" / f"{index:04d}.png", picture)
            yield picture

    write_video(folder / "guidance.mp4", each(), guidance.fps)
