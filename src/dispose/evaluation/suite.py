"""Running every requested metric over paired generated / ground-truth videos (``dispose eval``).

Per pair: both videos are read with their frame strides and ``max_frames``, resized to the common
evaluation size (``size``, default: the generated video's own frame size; the ground truth is
resized to it, see :mod:`.videos`), and must then have the same frame count (or are cut to the
shorter one with ``truncate``).  Frame metrics are averaged over a video's frames, then over
videos; VBench dimensions are computed on the generated videos only (set scores as VBench forms
them, :mod:`.vbench`); FVD, FID-VID and CD-FVD compare features of both sets (:mod:`.fvd`).  Any
metric that cannot be computed is reported as skipped with its reason, never as a number.  The
report records the wall time of every video (all its metrics) and of the video-feature models.

TikTok protocol (``protocol="tiktok"``, the paper's Sec. 5.2): ground truth = sequences 00335 to
00340 of the TikTok dataset (Jafarian & Park 2021), read from ``<root>/00335/images/*.png`` (the
dataset's own layout; a flat ``<root>/00335/*.png`` works too); generated videos must be named
after the sequence (``00335.mp4`` or ``335.mp4``).  The ground truth is truncated to the generated
length, so set ``gt_stride`` to the frame stride used when generating (``dispose animate``'s
sample stride).  The paper does not state resolution or frame counts for this test; we evaluate
at the generated video's size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dispose.devices import resolve_device
from dispose.errors import UserError
from dispose.evaluation import frame_metrics, vbench
from dispose.evaluation.backbones import Backbones, EvalWeights, load_backbones
from dispose.evaluation.fvd import clip_features
from dispose.evaluation.metric_names import ALL_METRICS
from dispose.evaluation.videos import collect_videos, frame_size, pair_videos, read_clip

TIKTOK_SEQUENCES = tuple(f"{n:05d}" for n in range(335, 341))

DEFINITIONS = {
    "ssim": "skimage structural_similarity defaults (7x7 uniform window, data_range 1), channel mean",
    "psnr": "10*log10(1/MSE) on [0,1] values, per frame; 'inf' for identical frames",
    "l1": "mean absolute error on [0,1] values",
    "l1_disco": "DisCo's L1 (the scale of the paper's Table 6): mean |a-b| on 0..255 values / (H*W)",
    "lpips": "LPIPS v0.1 (backbone + linear heads from local files), inputs in [-1,1]",
    "fvd": "Frechet distance of Kinetics-400 I3D logits (400-d) of every clip (224x224, [-1,1]), "
           "unbiased covariances",
    "fid_vid": "Frechet distance of per-video I3D features (final average pool, 1024-d, mean over the video's "
               "clips), unbiased covariances",
    "fid_vid_r3d": "DisCo's FID-VID: Frechet distance of per-video Kinetics 3D ResNet-50 features (Hara et al.; "
                   "112x112 Pillow-bicubic frames, mean-subtracted, 16-frame segments padded with the last frame, "
                   "2048-d, mean over segments), unbiased covariances",
    "cd_fvd": "content-debiased FVD (Ge et al. 2024): Frechet distance of VideoMAE-v2 ViT-g/14 (SSv2) features "
              "of every clip (224x224, [0,1]), covariances / N as in cd-fvd",
    "temporal_flickering": "VBench: (255 - mean |frame_t+1 - frame_t|)/255 on generated frames",
    "subject_consistency": "VBench: mean of (cos(f_t, f_t-1)+ + cos(f_t, f_0)+)/2 over DINO ViT-B/16 CLS "
                           "features of generated frames (short side 224); set score weighted by frame pairs",
    "background_consistency": "VBench: same formula on CLIP ViT-B/32 image embeddings (224 centre crop); set "
                              "score weighted by frame pairs",
    "motion_smoothness": "VBench: (255 - mean |odd frame - AMT-S interpolation of its even neighbours|)/255",
    "imaging_quality": "VBench: mean MUSIQ (SPAQ) score / 100, longer side capped at 512",
    "aesthetic_quality": "VBench: mean LAION aesthetic score / 10 on CLIP ViT-L/14 embeddings",
    "dynamic_degree": "VBench: fraction of generated videos judged dynamic from RAFT flow (raft-things)",
    "dynamic_degree_dis": "VBench dynamic-degree rule with OpenCV DIS flow instead of RAFT (fraction of "
                          "dynamic videos)",
}


@dataclass
class EvalSettings:
    metrics: tuple[str, ...] = ALL_METRICS
    size: tuple[int, int] | None = None
    pred_stride: int = 1
    gt_stride: int = 1
    max_frames: int | None = None
    truncate: bool = False
    clip_frames: int = 16
    clip_stride: int | None = None
    max_clips: int | None = None
    lpips_net: str = "alex"
    protocol: str | None = None
    device: str = "cpu"
    progress: bool = True


def find_weights(folder: Path | None, lpips_net: str = "alex") -> EvalWeights:
    """Look for known file names in ``folder`` (see the README); explicit paths override these."""
    weights = EvalWeights()
    if folder is None:
        return weights
    if not folder.is_dir():
        raise FileNotFoundError(f"--weights folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file())

    def first(match: Callable[[Path], bool]) -> Path | None:
        return next((p for p in files if match(p)), None)

    weights.i3d = first(lambda p: p.name.startswith("i3d") and p.suffix in (".ckpt", ".safetensors", ".pt", ".pth"))
    backbone = "alexnet" if lpips_net == "alex" else "vgg16"
    weights.lpips_backbone = first(lambda p: p.name.startswith(backbone) and p.suffix in (".pth", ".safetensors"))
    weights.lpips_heads = first(lambda p: p.name in (f"{lpips_net}.pth", f"lpips_{lpips_net}.pth"))
    weights.videomae = first(lambda p: p.name.startswith("vit_g_hybrid_pt_1200e_ssv2_ft") or
                             ("videomae" in p.name.lower() and p.suffix in (".pth", ".pt", ".bin")))
    weights.dino = first(lambda p: p.name.startswith("dino_vitbase16") and p.suffix == ".pth")
    weights.raft = first(lambda p: p.name == "raft-things.pth")
    weights.amt = first(lambda p: p.name == "amt-s.pth")
    weights.musiq = first(lambda p: p.name.startswith("musiq_spaq") and p.suffix == ".pth")
    weights.resnet3d = first(lambda p: p.name == "resnet-50-kinetics.pth")
    weights.aesthetic_head = first(lambda p: p.name == "sa_0_4_vit_l_14_linear.pth")
    configs = [p.parent for p in files if p.name == "config.json"]
    weights.clip_b32 = next((d for d in configs if d.name.endswith("clip-vit-base-patch32")), None)
    weights.clip_l14 = next((d for d in configs if d.name.endswith("clip-vit-large-patch14")), None)
    return weights


def tiktok_pairs(pred_specs: list[Path], gt_root: Path) -> list[tuple[str, Path, Path]]:
    pred = {}
    for name, path in collect_videos(pred_specs).items():
        if name.isdigit() and f"{int(name):05d}" in TIKTOK_SEQUENCES:
            pred[f"{int(name):05d}"] = path
    gt = {}
    for sequence in TIKTOK_SEQUENCES:
        if (gt_root / sequence).is_dir():
            gt[sequence] = gt_root / sequence
    missing = [s for s in TIKTOK_SEQUENCES if s not in gt]
    if missing:
        raise UserError(f"TikTok protocol: {gt_root} lacks sequence folders {missing} "
                        f"(expected <root>/00335/images/0001.png ...)")
    return pair_videos(pred, gt)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _video_metrics(wanted: set[str], models: Backbones, pred: np.ndarray, gt: np.ndarray,
                   fps: float) -> dict[str, float]:
    """Every per-video metric that was asked for and can run."""
    values: dict[str, float] = {}
    pairs = list(zip(pred, gt, strict=True))
    for metric in ("ssim", "psnr", "l1", "l1_disco"):
        if metric in wanted:
            fn = getattr(frame_metrics, metric)
            values[metric] = frame_metrics.mean_or_inf([fn(a, b) for a, b in pairs])
    if models.lpips is not None:
        from dispose.evaluation.lpips import lpips_distance

        values["lpips"] = float(np.mean(lpips_distance(models.lpips, pred, gt)))
    if "temporal_flickering" in wanted:
        values["temporal_flickering"] = vbench.temporal_flickering(pred)
    if "dynamic_degree_dis" in wanted:
        values["dynamic_degree_dis"] = vbench.dynamic_degree_dis(pred, fps)
    if models.dino is not None:
        values["subject_consistency"] = vbench.subject_consistency(models.dino, pred)
    if models.clip_b32 is not None:
        values["background_consistency"] = vbench.background_consistency(models.clip_b32, pred)
    if models.clip_l14 is not None and models.aesthetic_head is not None:
        values["aesthetic_quality"] = vbench.aesthetic_quality(models.clip_l14, models.aesthetic_head, pred)
    if models.raft is not None:
        values["dynamic_degree"] = vbench.dynamic_degree(models.raft, pred, fps)
    if models.amt is not None:
        values["motion_smoothness"] = vbench.motion_smoothness(models.amt, pred)
    if models.musiq is not None:
        values["imaging_quality"] = vbench.imaging_quality(models.musiq, pred)
    return values


def _video_features(models: Backbones, frames: np.ndarray, settings: EvalSettings,
                    name: str) -> dict[str, np.ndarray]:
    """Features of one video for the set metrics: per-clip I3D / VideoMAE-v2, per-video 3D ResNet-50."""
    features: dict[str, np.ndarray] = {}
    if models.i3d is not None or models.videomae is not None:
        try:
            features = clip_features(frames, models.i3d, models.videomae, settings.clip_frames, settings.clip_stride,
                                     settings.max_clips)
        except ValueError as error:
            raise UserError(f"{name}: {error} (lower --clip-frames, minimum 9)") from error
    if models.resnet3d is not None:
        from dispose.evaluation.resnet3d import video_feature

        features["r3d"] = video_feature(models.resnet3d, frames)
    return features


def _aggregate(per_video: list[dict]) -> dict[str, float]:
    """Set scores of the per-video metrics: plain means, frame-pair weighted for VBench's consistency."""
    aggregate: dict[str, float] = {}
    for metric in ALL_METRICS:
        rows = [v for v in per_video if metric in v["metrics"]]
        if not rows:
            continue
        column = [v["metrics"][metric] for v in rows]
        if metric in ("subject_consistency", "background_consistency"):
            aggregate[metric] = vbench.frame_weighted_mean(column, [v["frames"] for v in rows])
        else:
            aggregate[metric] = frame_metrics.mean_or_inf(column)
    return aggregate


def _set_metrics(wanted: set[str], models: Backbones, features: dict[str, list[dict[str, np.ndarray]]],
                 skipped: dict[str, str]) -> dict[str, float]:
    """FVD, FID-VID and CD-FVD over the whole set, or the reason each cannot be computed."""
    from dispose.evaluation import fvd

    jobs = {"fvd": (models.i3d, fvd.fvd, "clip"), "fid_vid": (models.i3d, fvd.fid_vid, "video"),
            "cd_fvd": (models.videomae, fvd.cd_fvd, "clip"), "fid_vid_r3d": (models.resnet3d, fvd.fid_vid_r3d, "video")}
    values: dict[str, float] = {}
    for metric, (model, distance, unit) in jobs.items():
        if metric not in wanted or model is None:
            continue
        key = "videomae" if metric == "cd_fvd" else "logits"
        counts = [len(features[side]) if unit == "video" else sum(len(f[key]) for f in features[side])
                  for side in ("pred", "gt")]
        if min(counts) < 2:
            skipped[metric] = f"a Frechet distance needs at least 2 {unit}s per side, got {min(counts)}"
        else:
            values[metric] = distance(features["pred"], features["gt"])
    return values


def evaluate(pairs: list[tuple[str, Path, Path]], settings: EvalSettings, weights: EvalWeights) -> dict:
    """Compute the requested metrics; returns the report dict (see :mod:`.report`)."""
    unknown = sorted(set(settings.metrics) - set(ALL_METRICS))
    if unknown:
        raise UserError(f"unknown metrics {unknown}; choose from {', '.join(ALL_METRICS)}")
    wanted = set(settings.metrics)
    device = resolve_device(settings.device)
    skipped: dict[str, str] = {}

    models = load_backbones(wanted, weights, settings.lpips_net, device, skipped)

    per_video: list[dict] = []
    features: dict[str, list[dict[str, np.ndarray]]] = {"pred": [], "gt": []}
    feature_time, clip_count = 0.0, 0
    for name, pred_path, gt_path in tqdm(pairs, desc="videos", unit="video", disable=not settings.progress):
        video_start = time.perf_counter()
        size = settings.size or frame_size(pred_path)
        pred = read_clip(name, pred_path, size, settings.pred_stride, settings.max_frames)
        gt_max = len(pred.frames) if settings.protocol == "tiktok" else settings.max_frames
        gt = read_clip(name, gt_path, size, settings.gt_stride, gt_max)
        if len(pred.frames) != len(gt.frames):
            if not settings.truncate:
                raise UserError(f"{name}: generated video has {len(pred.frames)} frames, ground truth "
                                f"{len(gt.frames)} (after strides {settings.pred_stride}/{settings.gt_stride}); "
                                "fix the strides, or pass --truncate / --max-frames")
            count = min(len(pred.frames), len(gt.frames))
            pred_frames, gt_frames = pred.frames[:count], gt.frames[:count]
        else:
            pred_frames, gt_frames = pred.frames, gt.frames
        values = _video_metrics(wanted, models, pred_frames, gt_frames, pred.fps)
        for side, frames in (("pred", pred_frames), ("gt", gt_frames)):
            start = time.perf_counter()
            side_features = _video_features(models, frames, settings, name)
            feature_time += time.perf_counter() - start
            clip_count += len(side_features.get("logits", side_features.get("videomae", [])))
            features[side].append(side_features)
        per_video.append({"name": name, "pred": str(pred_path), "gt": str(gt_path), "frames": len(pred_frames),
                          "size": list(size), "fps": pred.fps, "metrics": values,
                          "seconds": round(time.perf_counter() - video_start, 3)})

    aggregate = _aggregate(per_video)
    aggregate.update(_set_metrics(wanted, models, features, skipped))
    settings_dict = asdict(settings) | {"device": str(device), "metrics": list(settings.metrics)}
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {"dispose": _version("dispose-animate"), "torch": torch.__version__, "numpy": np.__version__},
        "settings": settings_dict,
        "weights": weights.hashes,
        "definitions": {k: v for k, v in DEFINITIONS.items() if k in wanted},
        "aggregate": aggregate,
        "skipped": skipped,
        "timing": {"feature_clips": clip_count, "video_feature_seconds": round(feature_time, 3),
                   "seconds_per_video": round(sum(v["seconds"] for v in per_video) / max(1, len(per_video)), 3)},
        "videos": per_video,
    }


__all__ = ["ALL_METRICS", "EvalSettings", "EvalWeights", "evaluate", "find_weights", "tiktok_pairs"]
