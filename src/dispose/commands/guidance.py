"""Compute DisPose's motion field guidance of a reference image and a driving video, with pictures.

The reference is resized and centre-cropped to the generation size W x H (576x1024 for a portrait at
--resolution 576); every --sample-stride-th driving frame (up to --max-frames, at least 2 frames) is
posed and aligned to the reference person (dispose.pose.extract).  From the 18 body keypoints of the
reference (frame 0) and the N driving frames it computes (paper sec. 4.1, see dispose.guidance):

  F_s  sparse motion field (Eq. 3): frame-to-frame keypoint steps, Gaussian-filtered (199 px, sigma 20)
  P_d  reference-based sparse flow (Eq. 4) on CMP's 384x384 grid, and its mask
  F_d  dense motion field: --dense cmp (the release: CMP on P_d and the reference; needs
       --cmp-checkpoint ckpt_iter_42000.pth.tar; saturates at about +-50 px of the 384 grid), propagate
       (weight-free, edge-aware spreading of P_d over the person; not in the release) or none.
       Default: cmp when --cmp-checkpoint is given, else propagate.

Writes to --out (created if missing):

  poses.json                 the N aligned driving poses (dispose-poses/1, normalised to W x H)
  reference.json             the reference pose
  motion_fields.safetensors  sparse_flow F_s (N,2,H,W) float32 [pixels x kernel weight];
                             dense_flow F_d (N,2,H,W) float32 [pixels of W x H] (unless --dense none);
                             reference_flow P_d (N,2,384,384) float32 [pixels of the 384 grid];
                             reference_mask (N,2,384,384) float32 {0,1}; trajectories (N+1,18,2) float32
                             [pixels of W x H, frame 0 = reference]; visibility (N+1,18) bool;
                             foreground (H,W) float32 (propagate only).  Channel 0 = x, 1 = y.  The
                             file's metadata repeats this and records the settings.
  frames/NNNN.png            per driving frame: skeleton | F_s | F_d in the Middlebury colour code
                             (direction = hue, length = saturation; one scale per field for the whole
                             video, the 90th percentile of the frames' largest vectors, longer ones are
                             darkened; arrows on F_d show the displacement, shortened when the
                             field's scale exceeds the arrow spacing)
  guidance.mp4               the same panels as a video at the sampled frame rate

Needs no weights with the defaults (MediaPipe poses, propagated F_d).  Missing keypoints contribute
nothing unless --release-missing-points (the release's handling, see dispose.guidance.sparse_field).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

#: The choices of --dense: dispose.guidance.motion_fields.DENSE_METHODS, spelled out so that building the
#: parser (every `dispose` call) does not import torch, OpenCV and scipy with that module.
DENSE_CHOICES = ("cmp", "propagate", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dispose.pose.alignment import ALIGN_MODES

    parser.add_argument("--ref", type=Path, required=True, help="reference image")
    parser.add_argument("--driving", type=Path, required=True, help="driving video")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--dwpose-dir", type=Path, help="folder with yolox_l.onnx and dw-ll_ucoco_384.onnx "
                        "(default: MediaPipe)")
    parser.add_argument("--cmp-checkpoint", type=Path, help="CMP ckpt_iter_42000.pth.tar "
                        "(semiauto_annot/resnet50_vip+mpii_liteflow)")
    parser.add_argument("--dense", choices=DENSE_CHOICES,
                        help="dense field F_d: cmp, propagate or none (default: cmp with --cmp-checkpoint, "
                             "else propagate)")
    parser.add_argument("--resolution", type=int, default=576, help="short side of the generation frame (576)")
    parser.add_argument("--sample-stride", type=int, default=2,
                        help="use every N-th driving frame (2); times int(fps / 24) for 48 fps and faster, as the release")
    parser.add_argument("--max-frames", type=int, help="use at most N driving frames (after the stride)")
    parser.add_argument("--align", choices=ALIGN_MODES, default="global",
                        help="pose alignment to the reference (global: the release's fit)")
    parser.add_argument("--release-missing-points", action="store_true",
                        help="treat undetected keypoints as the release does (spurious corner vectors)")
    parser.add_argument("--no-pictures", action="store_true", help="skip frames/*.png and guidance.mp4")
    parser.add_argument("--device", default="auto",
                        help="device for DWPose and CMP: auto, cpu, cuda, cuda:1, mps (CMP only)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _check_args(args: argparse.Namespace) -> str:
    """Validate the options; return the dense method to use."""
    from dispose.errors import UserError

    for label, path in (("--ref", args.ref), ("--driving", args.driving), ("--cmp-checkpoint", args.cmp_checkpoint)):
        if path is not None and not path.is_file():
            raise UserError(f"{label} {path} does not exist")
    if args.dwpose_dir is not None and not args.dwpose_dir.is_dir():
        raise UserError(f"--dwpose-dir {args.dwpose_dir} is not a folder")
    if args.resolution < 64:
        raise UserError(f"--resolution {args.resolution} is too small; use at least 64 (the release uses 576)")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")
    dense = args.dense or ("cmp" if args.cmp_checkpoint is not None else "propagate")
    if dense == "cmp" and args.cmp_checkpoint is None:
        raise UserError("--dense cmp needs --cmp-checkpoint (ckpt_iter_42000.pth.tar); use --dense propagate "
                        "for a weight-free dense field")
    return dense


def run(args: argparse.Namespace) -> int:
    from dispose.errors import UserError
    from dispose.guidance.motion_fields import compute_motion_fields, save_motion_fields
    from dispose.guidance.sparse_field import KERNEL_SIZE, SIGMA
    from dispose.guidance.trajectories import body_trajectories
    from dispose.media.video import read_video
    from dispose.pose.detectors import load_detector
    from dispose.pose.extract import extract_poses, load_reference
    from dispose.pose.keypoints import PoseSequence

    dense = _check_args(args)
    progress = not args.no_progress
    cmp = None
    if dense == "cmp":
        from dispose.devices import resolve_device
        from dispose.guidance.cmp import load_cmp

        cmp = load_cmp(args.cmp_checkpoint, device=resolve_device(args.device))  # fail early on a bad checkpoint
    print(f"dense motion field: {dense}" + {
        "cmp": f" (CMP {args.cmp_checkpoint})",
        "propagate": " (weight-free propagation over the reference; no CMP checkpoint given)"
                     if args.cmp_checkpoint is None else " (weight-free propagation over the reference)",
        "none": " (F_d not computed)"}[dense])

    clip = read_video(args.driving, sample_stride=args.sample_stride, max_frames=args.max_frames)
    if len(clip) < 2:
        raise UserError(f"--driving {args.driving} gave {len(clip)} frame after sampling (stride {clip.stride}); "
                        "motion needs at least 2: use a longer video, a smaller --sample-stride or a larger "
                        "--max-frames")
    detector = load_detector(args.dwpose_dir, device=args.device)
    print(f"detector: {detector.name}")
    reference, reference_pose = load_reference(args.ref, args.resolution, detector)
    extraction = extract_poses(reference, clip.frames, detector, align=args.align, progress=progress, fps=clip.fps,
                               reference_pose=reference_pose)
    height, width = reference.shape[:2]

    start = time.perf_counter()
    trajectories = body_trajectories(extraction.reference, extraction.driving, width, height)
    fields = compute_motion_fields(reference, trajectories, dense=dense, cmp=cmp,
                                   release_missing_points=args.release_missing_points, progress=progress)
    elapsed = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    extraction.driving.save(args.out / "poses.json")
    PoseSequence([extraction.reference], width, height).save(args.out / "reference.json")
    save_motion_fields(args.out / "motion_fields.safetensors", fields, {
        "reference": str(args.ref), "driving": str(args.driving), "detector": detector.name,
        "fps": f"{clip.fps:g}", "sample_stride": str(clip.stride), "align": args.align,
        "release_missing_points": str(args.release_missing_points), "kernel_size": str(KERNEL_SIZE),
        "sigma": f"{SIGMA:g}"})
    written = "poses.json, reference.json, motion_fields.safetensors"
    if not args.no_pictures:
        _write_pictures(args.out, fields, extraction.driving, clip.fps, progress)
        written += f", frames/0000-{fields.num_frames - 1:04d}.png, guidance.mp4"
    print(f"{args.driving}: {fields.num_frames} driving frames at {clip.fps:g} fps (stride {clip.stride}), "
          f"{width}x{height}; {extraction.filled} frame(s) without a person filled from a neighbour; motion "
          f"fields in {elapsed:.1f} s; wrote {written} to {args.out}")
    return 0


def _write_pictures(out: Path, fields, driving, fps: float, progress: bool) -> None:
    import numpy as np
    from tqdm.auto import tqdm

    from dispose.guidance.flow_pictures import draw_flow_arrows, flow_to_color, label, video_scale
    from dispose.media.image import save_image
    from dispose.media.video import write_video
    from dispose.pose.drawing import draw_pose

    width, height = fields.trajectories.width, fields.trajectories.height
    sparse_scale = video_scale(fields.sparse)
    dense_scale = video_scale(fields.dense) if fields.dense is not None else 0.0
    step = max(16, width // 18)
    arrow_scale = min(1.0, 1.5 * step / dense_scale) if dense_scale > 0 else 1.0
    (out / "frames").mkdir(exist_ok=True)

    def panels():
        for n in tqdm(range(fields.num_frames), desc="pictures", unit="frame", disable=not progress):
            row = [label(draw_pose(driving[n], width, height), f"skeleton {n}"),
                   label(flow_to_color(fields.sparse[n], sparse_scale), "F_s sparse")]
            if fields.dense is not None:
                dense = draw_flow_arrows(flow_to_color(fields.dense[n], dense_scale), fields.dense[n], step=step,
                                         scale=arrow_scale)
                row.append(label(dense, f"F_d {fields.dense_method}"))
            picture = np.concatenate(row, axis=1)
            save_image(out / "frames" / f"{n:04d}.png", picture)
            yield picture

    write_video(out / "guidance.mp4", panels(), fps)
