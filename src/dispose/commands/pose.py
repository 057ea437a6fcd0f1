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
take the previous frame's pose; their count is printed.  A video that ends before the frame count its
container declares (cut short) is a warning, an error with --strict.

--poses FILE: poses from your own tool instead of a detector: a dispose-poses/1 file (poses.json), an
OpenPose JSON file, or a folder of per-frame OpenPose files (first person of each frame; pixel coordinates
need canvas_width/canvas_height in the files, or --video).  One pose per frame of the driving video: with
--video (the frames they belong to: frame rate, size and overlay background) they are sampled like its
frames and must match its frame count; without it every pose is used (--sample-stride 1 by default; files
written by `dispose pose` are already sampled) at the file's frame rate (24 fps when it gives none), and no
overlay.mp4 is drawn.  --ref and --align work as with --video; the reference pose is detected in --ref.

The whole output folder is written at once when everything is done: an earlier result in --out is replaced
then (a rerun leaves no stale files), a failure or Ctrl-C leaves it as it was, and a second run writing the
same --out at the same time is refused.  --out must be new, empty, or an earlier result of `dispose pose` (a
folder written by another command, or holding one of the inputs, is refused).

The detector is DWPose with --dwpose-dir (a folder holding yolox_l.onnx and dw-ll_ucoco_384.onnx, from
huggingface.co/yzd-v/DWPose), else MediaPipe (installed with the 'pose' extra; no hands, sparser face).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dispose.pose.alignment import ALIGN_MODES
    from dispose.validation import job_option

    parser.add_argument("--image", type=Path, help="an image (PNG/JPEG) to pose")
    parser.add_argument("--base", metavar="NAME", help="base model the poses are for (as dispose animate "
                        "--base): its resolution and stride apply unless given (default: the default base)")
    parser.add_argument("--video", type=Path,
                        help="a driving video to pose (with --poses: the video they belong to)")
    parser.add_argument("--poses", type=Path, metavar="FILE", help="poses from a file instead of a detector: "
                        "dispose-poses/1 JSON, OpenPose JSON, or a folder of per-frame OpenPose files")
    parser.add_argument("--ref", type=Path,
                        help="reference image the video's poses are aligned to (with --video)")
    parser.add_argument("--align", choices=ALIGN_MODES,
                        help="alignment to --ref: global (the release's fit, default), bones, none")
    parser.add_argument("--dwpose-dir", type=Path, help="folder with yolox_l.onnx and dw-ll_ucoco_384.onnx "
                        "(default: MediaPipe)")
    parser.add_argument("--device", default="auto", help="device for DWPose: auto, cpu, cuda, cuda:1")
    parser.add_argument("--resolution", type=job_option("resolution"),
                        help="short side of the generation frame, a multiple of 64 from 64 to 2048 "
                        "(default: the base's)")
    parser.add_argument("--sample-stride", type=job_option("sample_stride"),
                        help="use every N-th video frame (default: the base's; 1 for --poses without "
                        "--video); times int(fps / 24) for 48 fps and faster, as the release")
    parser.add_argument("--max-frames", type=job_option("max_frames"),
                        help="use at most N video frames (after the stride)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a video that ends before the frame count its container declares")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (created; an earlier result there is replaced when done)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _check_args(args: argparse.Namespace) -> None:
    from dispose.errors import UserError
    from dispose.media.files import check_apart

    sources = [label for label, value in (("--image", args.image), ("--video", args.video),
                                          ("--poses", args.poses))
               if value is not None]
    if not sources or (args.image is not None and len(sources) > 1):
        raise UserError("give one of --image, --video or --poses (--poses may come with --video)")
    if args.image is not None and (args.ref is not None or args.align is not None):
        raise UserError("--ref and --align go with --video or --poses, not --image")
    if args.align is not None and args.ref is None:
        raise UserError("--align needs --ref (the reference image to align the video's poses to)")
    for label, path in (("--image", args.image), ("--video", args.video), ("--ref", args.ref)):
        if path is not None and not path.is_file():
            raise UserError(f"{label} {path} does not exist")
    if args.poses is not None and not args.poses.exists():
        raise UserError(f"--poses {args.poses} does not exist")
    check_apart([("--image", args.image), ("--video", args.video), ("--poses", args.poses),
                 ("--ref", args.ref), ("--dwpose-dir", args.dwpose_dir)], [("--out", args.out)], folders=True)


def run(args: argparse.Namespace) -> int:
    from dispose.bases import get_base
    from dispose.media.files import atomic_folder

    _check_args(args)
    defaults = get_base(args.base).defaults
    args.resolution = args.resolution or defaults["resolution"]  # numbers the base owns, unless given
    if args.video is not None and args.sample_stride is None:  # poses from a file alone: each one, as given
        args.sample_stride = defaults["sample_stride"]
    with atomic_folder(args.out, command="dispose pose") as out:
        written = (_pose_image if args.image is not None else _pose_video)(args, out)
    print(f"wrote {written} to {args.out}")
    return 0


def _detector(args: argparse.Namespace):
    from dispose.pose.detector_factory import load_detector

    detector = load_detector(args.dwpose_dir, device=args.device)
    print(f"detector: {detector.name}")
    return detector


def _pose_image(args: argparse.Namespace, out: Path) -> str:
    from dispose.media.image import save_image
    from dispose.pose.drawing import draw_pose, overlay
    from dispose.pose.extract import load_reference
    from dispose.pose.keypoints import PoseSequence

    frame, pose = load_reference(args.image, args.resolution, _detector(args))
    height, width = frame.shape[:2]
    skeleton = draw_pose(pose, width, height)
    PoseSequence([pose], width, height).save(out / "poses.json")
    save_image(out / "skeleton.png", skeleton)
    save_image(out / "overlay.png", overlay(frame, skeleton))
    visible = int(pose.body_visible.sum())
    print(f"{args.image}: {visible}/18 body keypoints visible at {width}x{height}")
    return "poses.json, skeleton.png, overlay.png"


def _driving_poses(args: argparse.Namespace, detector, clip, sequence, progress: bool):
    """``(people, frame_size, fps, stride, source)``: every person of each used frame, detected in ``clip`` or
    read (``sequence``, from --poses)."""
    from dispose.errors import UserError
    from dispose.media.video import REFERENCE_FPS, effective_stride

    if sequence is None:
        return (detector.detect_people(clip.frames, progress=progress), (clip.width, clip.height), clip.fps,
                clip.stride, f"{args.video} by {detector.name}")
    if clip is not None:
        stride, fps = clip.stride, clip.fps
    else:
        rate = sequence.fps or REFERENCE_FPS
        stride = effective_stride(args.sample_stride or 1, rate)
        fps = rate / stride
        if sequence.fps is None:
            print(f"{args.poses} gives no frame rate: {REFERENCE_FPS} fps assumed")
    poses = sequence.poses[::stride][:args.max_frames]
    if clip is not None and len(poses) != len(clip):
        raise UserError(f"--poses {args.poses} gives {len(poses)} poses for the {len(clip)} frames used of "
                        f"{args.video} (every {stride}-th of {len(sequence)} poses); give the poses of every "
                        "frame of this video")
    return ([[pose] if pose.has_person else [] for pose in poses], (sequence.width, sequence.height), fps,
            stride, f"{args.poses}")


def _pose_video(args: argparse.Namespace, out: Path) -> str:
    import numpy as np
    from tqdm.auto import tqdm

    from dispose.errors import UserError
    from dispose.media.geometry import resize_and_crop, target_size
    from dispose.media.image import save_image
    from dispose.media.video import read_video, write_video
    from dispose.pose.drawing import draw_pose, overlay
    from dispose.pose.extract import align_and_fill, load_reference
    from dispose.pose.json_poses import load_pose_file
    from dispose.pose.keypoints import PoseSequence

    progress = not args.no_progress
    reference = reference_pose = clip = None
    if args.video is not None:  # the inputs first: a damaged file is reported before any model loads
        clip = read_video(args.video, sample_stride=args.sample_stride, max_frames=args.max_frames,
                          strict=args.strict)
    sequence = None
    if args.poses is not None:
        sequence = load_pose_file(args.poses, frame_size=None if clip is None else (clip.width, clip.height))
    detector = _detector(args) if args.poses is None or args.ref is not None else None
    if args.ref is not None:
        reference, reference_pose = load_reference(args.ref, args.resolution, detector)
    people, frame_size, fps, stride, source = _driving_poses(args, detector, clip, sequence, progress)
    if not any(people):
        raise UserError(f"no person found in any of the {len(people)} frames of {source}")
    if reference is not None:
        size = (reference.shape[1], reference.shape[0])
        align = args.align or "global"
        backgrounds = (reference for _ in people)
        how = f"aligned to {args.ref} ({align})"
    else:
        size, align = target_size(*frame_size, args.resolution), "none"
        backgrounds = None if clip is None else (resize_and_crop(frame, size) for frame in clip.frames)
        how = "in the video's own frame"
    extraction = align_and_fill(reference_pose, people, size, frame_size, align, fps)
    driving = extraction.driving
    skeletons = np.stack([draw_pose(pose, *size) for pose in
                          tqdm(driving.poses, desc="drawing", unit="frame", disable=not progress)])
    driving.save(out / "poses.json")
    write_video(out / "skeleton.mp4", skeletons, fps)
    written = "poses.json, skeleton.mp4"
    if backgrounds is not None:
        write_video(out / "overlay.mp4", (overlay(bg, sk) for bg, sk in zip(backgrounds, skeletons)), fps)
        written += ", overlay.mp4"
    if reference is not None:
        PoseSequence([reference_pose], size[0], size[1]).save(out / "reference.json")
        save_image(out / "reference_skeleton.png", draw_pose(reference_pose, *size))
        written += ", reference.json, reference_skeleton.png"
    print(f"{source}: {len(driving)} frames at {fps:g} fps (stride {stride}), {how}, {size[0]}x{size[1]}; "
          f"{extraction.filled} frame(s) without a person filled from a neighbour")
    return written
