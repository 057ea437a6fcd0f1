"""Running every requested metric over paired generated / ground-truth videos (``dispose eval``).

Cheap checks first: every video is counted (:func:`.videos.probe`, one read that keeps no frame), the
pairs' frame counts and clip lengths are checked, and only then are the models loaded.  Per pair:
both videos are read with their frame strides and ``max_frames`` and resized to the common
evaluation size (``size``, default: the generated video's own frame size; the ground truth is
resized to it, see :mod:`.videos`); they must have the same frame count (or are cut to the shorter
one with ``truncate``).  Each pair is decoded once and streamed: every metric is a meter fed one
frame pair at a time (:mod:`.streaming`), holding at most one batch or clip, so memory does not
grow with video length; the progress bar of a video advances per frame and names the metric
running.  Frame metrics are averaged over a video's frames, then over videos; VBench dimensions are
computed on the generated videos only (set scores as VBench forms them, :mod:`.vbench`); FVD,
FID-VID and CD-FVD compare features of both sets (:mod:`.fvd`).  Any metric that cannot be
computed is reported as skipped with its reason, never as a number.  The report records the wall
time of every video and the compute time of every metric.

Fréchet distances follow one rule (:data:`MIN_FRECHET_PAIRS`): they compare *sets* of videos, so
with fewer than two video pairs every one of them (FVD, FID-VID, CD-FVD, FID-VID r3d) is skipped
with the same reason, before any model loads -- even FVD and CD-FVD, whose samples are clips and
could be counted in a single long video.  Otherwise all are computed, and ``frechet_samples``
records each one's sample count per side (clips or videos) and feature dimension: with fewer
samples than dimensions (the usual case) the value depends on the counts, so compare only runs
with equal counts.

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
from dispose.evaluation.metric_names import ALL_METRICS, VIDEO_SET_METRICS
from dispose.evaluation.streaming import FrameMeter, batch_size
from dispose.evaluation.videos import VideoInput, collect_videos, pair_videos, probe, stream

TIKTOK_SEQUENCES = tuple(f"{n:05d}" for n in range(335, 341))
#: the fewest video pairs any Fréchet distance (FVD, FID-VID, CD-FVD, FID-VID r3d) is computed from
MIN_FRECHET_PAIRS = 2

DEFINITIONS = {
    "ssim": "skimage structural_similarity defaults (7x7 uniform window, data_range 1), channel mean",
    "psnr": "10*log10(1/MSE) on [0,1] values, per frame; 'inf' for identical frames",
    "l1": "mean absolute error on [0,1] values",
    "l1_disco": "DisCo's L1 (the scale of the paper's Table 6): mean |a-b| on 0..255 values / (H*W)",
    "lpips": "LPIPS v0.1 (backbone + linear heads from local files), inputs in [-1,1]",
    "fvd": "Frechet distance of Kinetics-400 I3D logits (400-d) of every clip (224x224, [-1,1]), "
           "unbiased covariances",
    "fid_vid": "Frechet distance of per-video I3D features (final average pool, 1024-d, mean over the "
               "video's clips), unbiased covariances",
    "fid_vid_r3d": "DisCo's FID-VID: Frechet distance of per-video Kinetics 3D ResNet-50 features "
                   "(Hara et al.; 112x112 Pillow-bicubic frames, mean-subtracted, 16-frame segments padded "
                   "with the last frame, 2048-d, mean over segments), unbiased covariances",
    "cd_fvd": "content-debiased FVD (Ge et al. 2024): Frechet distance of VideoMAE-v2 ViT-g/14 (SSv2) "
              "features of every clip (224x224, [0,1]), covariances / N as in cd-fvd",
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

    weights.i3d = first(lambda p: p.name.startswith("i3d")
                        and p.suffix in (".ckpt", ".safetensors", ".pt", ".pth"))
    backbone = "alexnet" if lpips_net == "alex" else "vgg16"
    weights.lpips_backbone = first(lambda p: p.name.startswith(backbone)
                                   and p.suffix in (".pth", ".safetensors"))
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


@dataclass
class _Meter:
    """One metric (or one side's video features) of the video being read, with its compute time."""

    update: Callable[[np.ndarray, np.ndarray], None]  # (generated frame, ground-truth frame)
    result: Callable[[], object]
    seconds: float = 0.0


def _one_side(meter: FrameMeter, side: str = "pred") -> _Meter:
    """A meter of one video of the pair (VBench dimensions: the generated one)."""
    if side == "pred":
        return _Meter(lambda pred, gt: meter.update(pred), meter.result)
    return _Meter(lambda pred, gt: meter.update(gt), meter.result)


def _meters(wanted: set[str], models: Backbones, settings: EvalSettings, pair: _Pair) -> dict[str, _Meter]:
    """A meter for every metric of this pair that was asked for and can run; ``pred:``/``gt:`` keys hold
    the features the set metrics (FVD, FID-VID, CD-FVD) need."""
    from dispose.evaluation.fvd import ClipFeatures
    from dispose.evaluation.lpips import LpipsMeans
    from dispose.evaluation.resnet3d import VideoFeature

    meters: dict[str, _Meter] = {}
    for metric in ("ssim", "psnr", "l1", "l1_disco"):
        if metric in wanted:
            means = frame_metrics.FrameMeans(getattr(frame_metrics, metric))
            meters[metric] = _Meter(means.update, means.result)
    if models.lpips is not None:
        lpips = LpipsMeans(models.lpips, batch_size(pair.size, 8))
        meters["lpips"] = _Meter(lpips.update, lpips.result)
    vbench_meters = {
        "temporal_flickering": ("temporal_flickering" in wanted, vbench.TemporalFlickering),
        "dynamic_degree_dis": ("dynamic_degree_dis" in wanted,
                               lambda: vbench.DynamicDegree(vbench.dis_score(), pair.fps, pair.frames)),
        "subject_consistency": (models.dino is not None,
                                lambda: vbench.subject_consistency_meter(models.dino)),
        "background_consistency": (models.clip_b32 is not None,
                                   lambda: vbench.background_consistency_meter(models.clip_b32)),
        "aesthetic_quality": (models.aesthetic_head is not None,
                              lambda: vbench.Aesthetic(models.clip_l14, models.aesthetic_head)),
        "dynamic_degree": (models.raft is not None,
                           lambda: vbench.DynamicDegree(vbench.raft_score(models.raft), pair.fps,
                                                        pair.frames)),
        "motion_smoothness": (models.amt is not None, lambda: vbench.MotionSmoothness(models.amt)),
        "imaging_quality": (models.musiq is not None, lambda: vbench.ImagingQuality(models.musiq)),
    }
    try:
        for metric, (runs, make) in vbench_meters.items():
            if runs:
                meters[metric] = _one_side(make())
        for side in ("pred", "gt"):
            features: list[FrameMeter] = []
            if models.i3d is not None or models.videomae is not None:
                features.append(ClipFeatures(pair.frames, models.i3d, models.videomae, settings.clip_frames,
                                             settings.clip_stride, settings.max_clips))
            if models.resnet3d is not None:
                features.append(VideoFeature(models.resnet3d))
            for meter in features:
                meters[f"{side}:{type(meter).__name__}"] = _one_side(meter, side)
    except ValueError as error:
        raise UserError(f"{pair.name}: {error} "
                        "(check --max-frames, the strides and --clip-frames, minimum 9)") from error
    return meters


@dataclass(frozen=True)
class _Pair:
    name: str
    pred: VideoInput
    gt: VideoInput
    frames: int  # frames compared
    size: tuple[int, int]  # evaluation size (W, H)

    @property
    def fps(self) -> float:
        return self.pred.fps


def _probe_pairs(pairs: list[tuple[str, Path, Path]], settings: EvalSettings) -> list[_Pair]:
    """Count every video's frames and check the pairs agree, before any model is loaded."""
    checked = []
    for name, pred_path, gt_path in tqdm(pairs, desc="checking videos", unit="pair", leave=False,
                                         disable=not settings.progress):
        pred = probe(name, pred_path, settings.pred_stride, settings.max_frames)
        gt_max = pred.frames if settings.protocol == "tiktok" else settings.max_frames
        gt = probe(name, gt_path, settings.gt_stride, gt_max)
        if pred.frames != gt.frames and not settings.truncate:
            raise UserError(f"{name}: generated video has {pred.frames} frames, ground truth {gt.frames} "
                            f"(after strides {settings.pred_stride}/{settings.gt_stride}); "
                            "fix the strides, or pass --truncate / --max-frames")
        checked.append(_Pair(name, pred, gt, min(pred.frames, gt.frames), settings.size or pred.size))
    return checked


def _evaluate_pair(pair: _Pair, meters: dict[str, _Meter], progress: bool) -> None:
    """Decode both videos once, frame by frame, and feed every meter (at most a clip is held per meter)."""
    frames = zip(stream(pair.pred, pair.size, pair.frames), stream(pair.gt, pair.size, pair.frames),
                 strict=True)
    with tqdm(frames, total=pair.frames, desc=pair.name, unit="frame", leave=False,
              disable=not progress) as bar:
        for pred, gt in bar:
            for key, meter in meters.items():
                bar.set_postfix_str(key, refresh=False)
                start = time.perf_counter()
                meter.update(pred, gt)
                meter.seconds += time.perf_counter() - start


def _results(meters: dict[str, _Meter], features: dict[str, list[dict[str, np.ndarray]]],
             seconds: dict[str, float]) -> dict[str, float]:
    """The pair's metric values; its video features are appended to ``features``, the time of each meter
    added to ``seconds``.  The meters are emptied, so the frames they held are freed."""
    values: dict[str, float] = {}
    for side in ("pred", "gt"):
        features[side].append({})
    while meters:
        key, meter = meters.popitem()
        side, _, metric = key.rpartition(":")
        start = time.perf_counter()
        result = meter.result()
        seconds[key] = seconds.get(key, 0.0) + meter.seconds + time.perf_counter() - start
        if side:
            features[side][-1].update(result if isinstance(result, dict) else {"r3d": result})
        else:
            values[metric] = result
    return values


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


def _set_metrics(wanted: set[str], models: Backbones, features: dict[str, list[dict[str, np.ndarray]]]
                 ) -> tuple[dict[str, float], dict[str, dict]]:
    """FVD, FID-VID, CD-FVD and DisCo's FID-VID over the whole set, with the samples each used."""
    from dispose.evaluation import fvd

    jobs = {"fvd": (models.i3d, fvd.fvd, "logits", "clip"),
            "fid_vid": (models.i3d, fvd.fid_vid, "pool", "video"),
            "cd_fvd": (models.videomae, fvd.cd_fvd, "videomae", "clip"),
            "fid_vid_r3d": (models.resnet3d, fvd.fid_vid_r3d, "r3d", "video")}
    values: dict[str, float] = {}
    samples: dict[str, dict] = {}
    for metric, (model, distance, key, unit) in jobs.items():
        if metric not in wanted or model is None:
            continue
        values[metric] = distance(features["pred"], features["gt"])
        counts = {side: len(features[side]) if unit == "video" else sum(len(f[key]) for f in features[side])
                  for side in ("pred", "gt")}
        samples[metric] = {"unit": unit, **counts, "dims": int(features["pred"][0][key].shape[-1])}
    return values, samples


def _frechet_rule(wanted: set[str], pairs: int, skipped: dict[str, str]) -> set[str]:
    """The one rule for every Fréchet distance: it compares sets of videos, so it needs at least
    ``MIN_FRECHET_PAIRS`` video pairs; with fewer, all of them are skipped alike (before any model loads)."""
    if pairs >= MIN_FRECHET_PAIRS:
        return wanted
    refused = wanted & set(VIDEO_SET_METRICS)
    for metric in sorted(refused):
        skipped[metric] = (f"a Frechet distance compares sets of videos and needs at least "
                           f"{MIN_FRECHET_PAIRS} video pairs, got {pairs} "
                           "(the same rule for FVD, FID-VID, CD-FVD and FID-VID r3d)")
    return wanted - refused


def evaluate(pairs: list[tuple[str, Path, Path]], settings: EvalSettings, weights: EvalWeights) -> dict:
    """Compute the requested metrics; returns the report dict (see :mod:`.report`)."""
    unknown = sorted(set(settings.metrics) - set(ALL_METRICS))
    if unknown:
        raise UserError(f"unknown metrics {unknown}; choose from {', '.join(ALL_METRICS)}")
    skipped: dict[str, str] = {}
    wanted = _frechet_rule(set(settings.metrics), len(pairs), skipped)
    device = resolve_device(settings.device)
    checked = _probe_pairs(pairs, settings)
    models = load_backbones(wanted, weights, settings.lpips_net, device, skipped)
    # _meters refuses short videos now
    meters_per_pair = [_meters(wanted, models, settings, pair) for pair in checked]

    per_video: list[dict] = []
    features: dict[str, list[dict[str, np.ndarray]]] = {"pred": [], "gt": []}
    seconds: dict[str, float] = {}
    for pair, meters in zip(tqdm(checked, desc="videos", unit="video", disable=not settings.progress),
                            meters_per_pair, strict=True):
        video_start = time.perf_counter()
        _evaluate_pair(pair, meters, settings.progress)
        values = _results(meters, features, seconds)
        per_video.append({"name": pair.name, "pred": str(pair.pred.path), "gt": str(pair.gt.path),
                          "frames": pair.frames, "size": list(pair.size), "fps": pair.fps, "metrics": values,
                          "seconds": round(time.perf_counter() - video_start, 3)})

    aggregate = _aggregate(per_video)
    set_values, samples = _set_metrics(wanted, models, features)
    aggregate.update(set_values)
    feature_seconds = sum(value for key, value in seconds.items() if ":" in key)
    clip_counts = [len(f.get("logits", f.get("videomae", []))) for f in features["pred"] + features["gt"]]
    settings_dict = asdict(settings) | {"device": str(device), "metrics": list(settings.metrics)}
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {"dispose": _version("dispose-animate"), "torch": torch.__version__,
                     "numpy": np.__version__},
        "settings": settings_dict,
        "weights": weights.hashes,
        "definitions": {k: v for k, v in DEFINITIONS.items() if k in set(settings.metrics)},
        "aggregate": aggregate,
        "frechet_samples": samples,
        "skipped": skipped,
        "timing": {"feature_clips": sum(clip_counts), "video_feature_seconds": round(feature_seconds, 3),
                   "metric_seconds": {k: round(v, 3) for k, v in seconds.items() if ":" not in k},
                   "seconds_per_video": round(sum(v["seconds"] for v in per_video)
                                              / max(1, len(per_video)), 3)},
        "videos": per_video,
    }


__all__ = ["ALL_METRICS", "EvalSettings", "EvalWeights", "evaluate", "find_weights", "tiktok_pairs"]
