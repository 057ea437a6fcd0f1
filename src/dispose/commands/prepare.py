"""Prepare training data: poses, reference-based optical flow, watershed samples and DIFT embeddings per clip.

VIDEOS is a folder of videos (.mp4/.mov/.webm/.mkv), a TikTok-style folder of frame folders
(<root>/00001/images/*.png), a .txt list of paths (one per line) or a .jsonl list ({"path": ..., "id": ...}).
Every clip is sampled with the release's stride rule (--sample-stride times int(fps / 24)), resized and
centre-cropped to --size (default 768x1024, the paper's training size), posed (--detector: DWPose from
--dwpose-dir, the default and what the release's PoseNet was trained on; or MediaPipe, weight-free but
without hand and face keypoints), filtered, and stored under OUT/clips/<id>/ with one line per clip in
OUT/manifest.jsonl (status
ok or failed with the reason, detector, frame count, fps, sizes, stride, pose quality, flow model, source
sha256); dispose train refuses a dataset whose detector differs from its data.detector.

Per clip, for --references R frames spread over the clip (the references the training sampler may pick):
the optical flow from that frame to every frame (RAFT with --raft raft-things.pth, else OpenCV DIS; float16
at 1/--flow-downscale of the size), its watershed samples (P_d, App. A; --nms-kernel K_f) and the DIFT
embeddings of its body keypoints (SD1.5 from --sd15; or --no-dift, then the point encoder cannot be
trained).  The trainer feeds CMP with the watershed samples (data.dense_field=cmp, the paper's App. A) or
uses the flow itself (data.dense_field=flow).

Rerunning skips finished clips (failed ones too, unless --retry-failed); a clip that cannot be read or shows
nobody is recorded as failed and never stops the run (the exit code is 2 when every clip failed).  --workers N
runs N processes (one CUDA device each when several are visible).  Launched with torchrun or accelerate
launch (any number of nodes), each process prepares every K-th clip on its own device into the same --out
and the manifest is written once all have finished.  The reader for training is
dispose.training.dataset.TrainingDataset.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 768x1024, got {text!r}") from None
    return width, height


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dispose.pose.detector_factory import DETECTORS

    parser.add_argument("videos", type=Path, help="folder of videos or frame folders, or a .txt/.jsonl list")
    parser.add_argument("--out", type=Path, required=True,
                        help="dataset folder (created; resumed if it exists)")
    parser.add_argument("--size", type=_size, default=(768, 1024), help="stored frame size WxH (768x1024)")
    parser.add_argument("--sample-stride", type=int, default=2,
                        help="use every N-th frame (2); times int(fps / 24) for 48 fps and faster, as the "
                             "release")
    parser.add_argument("--max-frames", type=int, help="use at most N frames per clip (after the stride)")
    parser.add_argument("--folder-fps", type=float, default=30.0,
                        help="frame rate of frame folders (30: TikTok)")
    parser.add_argument("--references", type=int, default=4, help="reference candidates per clip (4)")
    parser.add_argument("--flow-downscale", type=int, default=4, choices=(1, 2, 4, 8),
                        help="store flows at 1/N of the size (4)")
    parser.add_argument("--nms-kernel", type=int, default=41, help="watershed NMS kernel K_f (41, as CMP)")
    parser.add_argument("--min-frames", type=int, default=16, help="reject clips with fewer frames (16)")
    parser.add_argument("--min-score", type=float, default=0.0,
                        help="reject clips whose mean keypoint score is lower")
    parser.add_argument("--min-visible", type=float, default=0.3,
                        help="reject clips with a lower mean share of visible body keypoints (0.3)")
    parser.add_argument("--max-people", type=int, default=1,
                        help="reject clips with more people in over 5%% of the frames (1; 0: no limit)")
    parser.add_argument("--max-missing", type=float, default=0.1,
                        help="reject clips where nobody is found in a larger share of the frames (0.1)")
    parser.add_argument("--detector", default="dwpose", choices=DETECTORS,
                        help="pose detector: dwpose (default, needs --dwpose-dir) or mediapipe (no weights, "
                        "no hands)")
    parser.add_argument("--dwpose-dir", type=Path, help="folder with yolox_l.onnx and dw-ll_ucoco_384.onnx")
    parser.add_argument("--raft", type=Path,
                        help="raft-things.pth for the optical flow (default: OpenCV DIS)")
    parser.add_argument("--sd15", type=Path,
                        help="local stable-diffusion-v1-5 folder for the DIFT embeddings")
    parser.add_argument("--no-dift", action="store_true",
                        help="skip DIFT (the point encoder cannot be trained)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (1)")
    parser.add_argument("--retry-failed", action="store_true", help="prepare clips that failed before again")
    parser.add_argument("--device", default="auto",
                        help="device for DWPose, RAFT and DIFT: auto, cpu, cuda, cuda:1")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from collections import Counter

    from dispose.errors import UserError
    from dispose.media.files import check_apart
    from dispose.training.prepare import ModelFiles, PrepareSettings, prepare_dataset

    check_apart([("videos", args.videos)], [("--out", args.out)])

    for label, path, folder in (("--dwpose-dir", args.dwpose_dir, True), ("--raft", args.raft, False),
                                ("--sd15", args.sd15, True)):
        if path is not None and not (path.is_dir() if folder else path.is_file()):
            raise UserError(f"{label} {path} does not exist" + (" or is not a folder" if folder else ""))
    if args.no_dift and args.sd15 is not None:
        raise UserError("--no-dift and --sd15 contradict each other; give one")
    settings = PrepareSettings(
        width=args.size[0], height=args.size[1], sample_stride=args.sample_stride, max_frames=args.max_frames,
        references=args.references, flow_downscale=args.flow_downscale, nms_kernel=args.nms_kernel,
        folder_fps=args.folder_fps, min_frames=args.min_frames, min_score=args.min_score,
        min_visible=args.min_visible, max_people=args.max_people, max_missing=args.max_missing,
        dift=not args.no_dift)
    models = ModelFiles(dwpose_dir=args.dwpose_dir, raft=args.raft, sd15=args.sd15, device=args.device,
                        detector=args.detector)
    records = prepare_dataset(args.videos, args.out, settings, models, workers=args.workers,
                              retry_failed=args.retry_failed, progress=not args.no_progress)
    ok = [r for r in records if r["status"] == "ok"]
    if os.environ.get("RANK", "0") != "0":  # a launched process: rank 0 reports
        return 0
    if not ok:
        reason = Counter(r["reason"] for r in records).most_common(1)[0][0]
        raise UserError(f"{args.videos}: every clip failed ({len(records)}; most often: {reason}); the "
                        f"reasons are in {args.out / 'manifest.jsonl'}")
    frames = sum(r["frames"] for r in ok)
    size = sum(r["bytes"] for r in ok)
    print(f"{args.out}: {len(ok)} of {len(records)} clip(s) prepared, {frames} frames, "
          f"{size / 2**20:.1f} MiB ({size / max(len(ok), 1) / 2**20:.2f} MiB per clip); "
          "manifest.jsonl written")
    for reason, count in Counter(r["reason"] for r in records if r["status"] != "ok").most_common():
        print(f"  failed ({count}): {reason}")
    return 0
