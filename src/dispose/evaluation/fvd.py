"""FVD, FID-VID and CD-FVD: Fréchet distances of video features (see :mod:`.frechet`).

Clips (shared by all three): each video is cut into clips of ``clip_frames`` consecutive frames
(default 16, the FVD standard), starting at frame 0 every ``clip_stride`` frames (default:
``clip_frames``, i.e. non-overlapping); frames past the last full clip are dropped; ``max_clips``
caps the clips per video.  A video shorter than one clip is an error.

* **FVD** (Unterthiner et al. 2018): every clip is one sample.  Frames are resized to 224x224
  (``torch.nn.functional.interpolate``, bilinear, ``align_corners=False``, aspect ratio not kept,
  as StyleGAN-V's and cd-fvd's FVD code do) and scaled from ``[0, 255]`` to ``[-1, 1]``; the
  feature is the 400 Kinetics-400 *logits* of I3D (pre-softmax, averaged over time: the output of
  the TF-Hub module of the reference FVD code).  Unbiased covariances (TF-GAN's).
* **FID-VID** (Balaji et al. 2019; "FID-FVD" in the paper's tables): one sample per *video*: the
  mean over the video's clips of the 1024-d I3D features of the final average pool (``Mixed_5c``
  pooled ``(2, 7, 7)``, averaged over time), i.e. the layer below the logits.  Balaji et al. define
  FID-VID as the FID of Kinetics-trained 3D-CNN features of whole videos; the evaluation code the
  human-animation papers share (DisCo's ``tool/metrics``) takes those features from Hara et al.'s
  3D ResNet-50 instead of I3D, so its numbers are on another scale: that variant is
  ``fid_vid_r3d`` (:func:`fid_vid_r3d`, :mod:`.resnet3d`: 112x112 frames, 16-frame segments of the
  whole video, per-video mean of 2048-d features, unbiased covariances).
* **CD-FVD** (Ge et al. 2024): every clip is one sample; VideoMAE-v2 features
  (:mod:`.videomae`: frames resized to 224x224 bilinear, values in ``[0, 1]``), covariances
  divided by ``N`` as the ``cd-fvd`` package computes them.

Clips are collected while the video streams (:class:`ClipFeatures` holds one clip at a time).  Each
distance needs at least two samples per side; ``dispose eval`` applies one rule to all of them (at
least two video pairs, :mod:`.suite`).  With fewer samples than feature dimensions the covariances
are singular and the value is dominated by the sample count, so numbers are only comparable between
runs with the same number of clips/videos.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from dispose.evaluation.frechet import frechet_distance_features
from dispose.evaluation.streaming import FrameMeter

I3D_SIZE = 224


def clip_starts(num_frames: int, clip_frames: int = 16, clip_stride: int | None = None,
                max_clips: int | None = None) -> list[int]:
    stride = clip_stride or clip_frames
    if clip_frames < 9 or stride < 1:
        raise ValueError(f"clip length must be >= 9 frames (I3D) and stride >= 1, "
                         f"got {clip_frames}, {stride}")
    starts = list(range(0, num_frames - clip_frames + 1, stride))
    return starts[:max_clips] if max_clips is not None else starts


def preprocess_clip(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """I3D input: uint8 (T, H, W, 3) -> float (1, 3, T, 224, 224) in ``[-1, 1]``."""
    x = torch.as_tensor(frames, device=device).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False)
    return (x / 127.5 - 1.0).permute(1, 0, 2, 3).unsqueeze(0)


class ClipFeatures(FrameMeter):
    """Per-clip features of one video, computed as each clip completes (at most one clip is held):
    ``logits`` (K, 400) and ``pool`` (K, 1024) with an I3D, ``videomae`` (K, D) with a VideoMAE-v2 encoder.
    The clip starts depend on the video's length, given up front; a video shorter than one clip is refused
    here, before any frame is read."""

    def __init__(self, frame_count: int, i3d: torch.nn.Module | None = None,
                 videomae: torch.nn.Module | None = None, clip_frames: int = 16,
                 clip_stride: int | None = None, max_clips: int | None = None) -> None:
        starts = clip_starts(frame_count, clip_frames, clip_stride, max_clips)
        if not starts:
            raise ValueError(f"the video has {frame_count} frames, fewer than one {clip_frames}-frame clip")
        self.ends = {start + clip_frames for start in starts}
        self.last = max(self.ends)
        self.i3d, self.videomae = i3d, videomae
        self.window: deque[np.ndarray] = deque(maxlen=clip_frames)
        self.seen = 0
        self.features: dict[str, list[np.ndarray]] = {}

    def update(self, frame: np.ndarray) -> None:
        if self.seen >= self.last:
            return
        self.window.append(frame)
        self.seen += 1
        if self.seen in self.ends:
            self._clip(np.stack(self.window))

    def _clip(self, clip: np.ndarray) -> None:
        with torch.no_grad():
            if self.i3d is not None:
                param = next(self.i3d.parameters())
                logits, pool = self.i3d(preprocess_clip(clip, param.device).to(param.dtype))
                self.features.setdefault("logits", []).append(logits.float().cpu().numpy())
                self.features.setdefault("pool", []).append(pool.float().cpu().numpy())
            if self.videomae is not None:
                from dispose.evaluation.videomae import videomae_input

                param = next(self.videomae.parameters())
                features = self.videomae(videomae_input(clip, param.device).to(param.dtype))
                self.features.setdefault("videomae", []).append(features.float().cpu().numpy())

    def result(self) -> dict[str, np.ndarray]:
        return {key: np.concatenate(value) for key, value in self.features.items()}


def clip_features(frames: np.ndarray, i3d: torch.nn.Module | None = None,
                  videomae: torch.nn.Module | None = None, clip_frames: int = 16,
                  clip_stride: int | None = None,
                  max_clips: int | None = None) -> dict[str, np.ndarray]:
    """:class:`ClipFeatures` of a whole ``(N, H, W, 3)`` video."""
    return ClipFeatures(len(frames), i3d, videomae, clip_frames, clip_stride, max_clips).run(frames)


def fvd(pred: list[dict[str, np.ndarray]], gt: list[dict[str, np.ndarray]]) -> float:
    """FVD from :func:`clip_features` of every generated / ground-truth video."""
    return frechet_distance_features(np.concatenate([v["logits"] for v in pred]),
                                     np.concatenate([v["logits"] for v in gt]))


def fid_vid(pred: list[dict[str, np.ndarray]], gt: list[dict[str, np.ndarray]]) -> float:
    """FID-VID: Fréchet distance of per-video mean I3D pool features."""
    return frechet_distance_features(np.stack([v["pool"].mean(axis=0) for v in pred]),
                                     np.stack([v["pool"].mean(axis=0) for v in gt]))


def cd_fvd(pred: list[dict[str, np.ndarray]], gt: list[dict[str, np.ndarray]]) -> float:
    """CD-FVD from VideoMAE-v2 clip features (population covariances, as cd-fvd computes them)."""
    return frechet_distance_features(np.concatenate([v["videomae"] for v in pred]),
                                     np.concatenate([v["videomae"] for v in gt]), ddof=0)


def fid_vid_r3d(pred: list[dict[str, np.ndarray]], gt: list[dict[str, np.ndarray]]) -> float:
    """DisCo's FID-VID: Fréchet distance of per-video 3D ResNet-50 features (``"r3d"``, one row per video)."""
    return frechet_distance_features(np.stack([v["r3d"] for v in pred]), np.stack([v["r3d"] for v in gt]))
