"""Detect whole-body poses in an image or a video and draw the skeletons the animation model sees.

--image REF: the image is resized and centre-cropped to the generation size (576x1024 for a portrait at
--resolution 576), its pose detected and drawn.  Writes OUT/poses.json (dispose-poses/1), skeleton.png
and overlay.png (the skeleton on the image).

--video VIDEO: every --sample-stride-th frame (the release's rule: the stride is multiplied by
int(fps / 24) for fast videos) up to --max-frames.  With --ref, the poses are aligned to the reference
person (--align global: the release's fit; bones: per-bone retargeting; none) and drawn at the reference's
generation size: OUT/poses.json, skeleton.mp4, overlay.mp4 (skeletons on the reference image), plus
reference.json and reference_skeleton.png.  Without --ref, the video is shown as it would be used as a
reference-sized frame: skeletons drawn on the resized and cropped frames.  Frames where nobody is found
take the previous frame's pose; their count is printed.

The detector is DWPose with --dwpose-dir (a folder holding yolox_l.onnx and dw-ll_ucoco_384.onnx, from
huggingface.co/yzd-v/DWPose), else MediaPipe (installed with the 'pose' extra; no hands, sparser face).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dispose.pose.alignment import ALIGN_MODES

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="an image (PNG/JPEG) to pose")
    source.add_argument("--video", type=Path, help="a driving video to pose")
    parser.add_argument("--ref", type=Path, help="reference image the video's poses are aligned to (with --video)")
    parser.add_argument("--align", choices=ALIGN_MODES,
                        help="alignment to --ref: global (the release's fit, default), bones, none")
    parser.add_argument("--dwpose-dir", type=Path, help="folder with yolox_l.onnx and dw-ll_ucoco_384.onnx "
                        "(default: MediaPipe)")
    parser.add_argument("--device", default="auto", help="device for DWPose: auto, cpu, cuda, cuda:1")
    parser.add_argument("--resolution", type=int, default=576, help="short side of the generation frame (576)")
    parser.add_argument("--sample-stride", type=int, default=2,
                        help="use every N-th video frame (2); times int(fps / 24) for 48 fps and faster, as the release")
    parser.add_argument("--max-frames", type=int, help="use at most N video frames (after the stride)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from dispose.errors import UserError
    from dispose.pose.detectors import load_detector

    if args.image is not None and (args.ref is not None or args.align is not None):
        raise UserError("--ref and --align go with --video, not --image")
    if args.align is not None and args.ref is None:
        raise UserError("--align needs --ref (the reference image to align the video's poses to)")
    if args.resolution < 64:
        raise UserError(f"--resolution {args.resolution} is too small; use at least 64 (the release uses 576)")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")
    for label, path in (("--image", args.image), ("--video", args.video), ("--ref", args.ref)):
        if path is not None and not path.is_file():
            raise UserError(f"{label} {path} does not exist")
    detector = load_detector(args.dwpose_dir, device=args.device)
    print(f"detector: {detector.name}")
    if args.image is not None:
        _pose_image(args, detector)
    else:
        _pose_video(args, detector)
    return 0


def _pose_image(args: argparse.Namespace, detector) -> None:
    from dispose.media.image import save_image
    from dispose.pose.drawing import draw_pose, overlay
    from dispose.pose.extract import load_reference
    from dispose.pose.keypoints import PoseSequence

    frame, pose = load_reference(args.image, args.resolution, detector)
    height, width = frame.shape[:2]
    skeleton = draw_pose(pose, width, height)
    args.out.mkdir(parents=True, exist_ok=True)
    PoseSequence([pose], width, height).save(args.out / "poses.json")
    save_image(args.out / "skeleton.png", skeleton)
    save_image(args.out / "overlay.png", overlay(frame, skeleton))
    visible = int(pose.body_visible.sum())
    print(f"{args.image}: {visible}/18 body keypoints visible at {width}x{height}; wrote poses.json, "
          f"skeleton.png, overlay.png to {args.out}")


def _pose_video(args: argparse.Namespace, detector) -> None:
    import numpy as np
    from tqdm.auto import tqdm

    from dispose.errors import UserError
    from dispose.media.geometry import resize_and_crop, target_size
    from dispose.media.image import save_image
    from dispose.media.video import read_video, write_video
    from dispose.pose.alignment import align_people
    from dispose.pose.drawing import draw_pose, overlay
    from dispose.pose.extract import extract_poses, fill_missing, load_reference
    from dispose.pose.keypoints import PoseSequence

    progress = not args.no_progress
    reference = None
    if args.ref is not None:
        reference, reference_pose = load_reference(args.ref, args.resolution, detector)
    clip = read_video(args.video, sample_stride=args.sample_stride, max_frames=args.max_frames)
    if reference is not None:
        extraction = extract_poses(reference, clip.frames, detector, align=args.align or "global",
                                   progress=progress, fps=clip.fps, reference_pose=reference_pose)
        sequence, filled = extraction.driving, extraction.filled
        size = (reference.shape[1], reference.shape[0])
        backgrounds = (reference for _ in range(len(sequence)))
        how = f"aligned to {args.ref} ({args.align or 'global'})"
    else:
        size = target_size(clip.width, clip.height, args.resolution)
        people = detector.detect_people(clip.frames, progress=progress)
        if not any(people):
            raise UserError(f"no person found in any of the {len(clip)} sampled frames of {args.video} "
                            f"by {detector.name}")
        aligned, _ = align_people(None, people, size, (clip.width, clip.height), "none")
        poses, filled_frames = fill_missing(aligned)
        sequence, filled = PoseSequence(poses, size[0], size[1], clip.fps), len(filled_frames)
        backgrounds = (resize_and_crop(frame, size) for frame in clip.frames)
        how = "in the video's own frame"
    skeletons = np.stack([draw_pose(pose, *size) for pose in
                          tqdm(sequence.poses, desc="drawing", unit="frame", disable=not progress)])
    args.out.mkdir(parents=True, exist_ok=True)
    sequence.save(args.out / "poses.json")
    write_video(args.out / "skeleton.mp4", skeletons, clip.fps)
    write_video(args.out / "overlay.mp4", (overlay(bg, sk) for bg, sk in zip(backgrounds, skeletons)), clip.fps)
    written = "poses.json, skeleton.mp4, overlay.mp4"
    if reference is not None:
        PoseSequence([reference_pose], size[0], size[1]).save(args.out / "reference.json")
        save_image(args.out / "reference_skeleton.png", draw_pose(reference_pose, *size))
        written += ", reference.json, reference_skeleton.png"
    print(f"{args.video}: {len(sequence)} frames at {clip.fps:g} fps (stride {clip.stride}), {how}, "
          f"{size[0]}x{size[1]}; {filled} frame(s) without a person filled from a neighbour; "
          f"wrote {written} to {args.out}")
