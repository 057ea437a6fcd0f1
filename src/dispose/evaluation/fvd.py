"""FVD and FID-VID from Kinetics-400 I3D features (see :mod:`.i3d`, :mod:`.frechet`).

Pre-processing (shared by both metrics):

* each video is cut into clips of ``clip_frames`` consecutive frames (default 16, the FVD
  standard), starting at frame 0 every ``clip_stride`` frames (default: ``clip_frames``, i.e.
  non-overlapping); frames past the last full clip are dropped; ``max_clips`` caps clips per video.
  Every clip is one sample of the distribution.  A video shorter than one clip is an error;
* frames are resized to 224x224 (``torch.nn.functional.interpolate``, bilinear,
  ``align_corners=False``, aspect ratio not kept, as StyleGAN-V's FVD port does) and scaled
  from ``[0, 255]`` to ``[-1, 1]``.

Metrics:

* **FVD** (Unterthiner et al. 2018): Fréchet distance of the 400 Kinetics *logits* (pre-softmax,
  averaged over time) -- the output of the TF-Hub I3D module that the reference FVD code uses.
* **FID-VID** (Balaji et al. 2019, "FID-FVD" in the paper's tables): Balaji et al. define it as
  the Fréchet distance of I3D (Kinetics) features of whole video clips.  We use the 1024-d
  final average-pool features (``Mixed_5c`` after the ``(2, 7, 7)`` average pool, averaged over
  time), the layer below the logits.  This layer choice is our reading of that definition.

Both distances need at least two clips per side; with fewer clips than feature dimensions the
covariances are singular and the distance is dominated by the sample size, so values are only
comparable between runs with the same number of clips.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dispose.evaluation.frechet import frechet_distance_features
from dispose.evaluation.i3d import I3D

I3D_SIZE = 224


def clip_starts(num_frames: int, clip_frames: int = 16, clip_stride: int | None = None,
                max_clips: int | None = None) -> list[int]:
    stride = clip_stride or clip_frames
    if clip_frames < 9 or stride < 1:
        raise ValueError(f"clip length must be >= 9 frames (I3D) and stride >= 1, got {clip_frames}, {stride}")
    starts = list(range(0, num_frames - clip_frames + 1, stride))
    return starts[:max_clips] if max_clips is not None else starts


def preprocess_clip(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (1, 3, T, 224, 224) in ``[-1, 1]``."""
    x = torch.as_tensor(frames, device=device).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False)
    return (x / 127.5 - 1.0).permute(1, 0, 2, 3).unsqueeze(0)


def i3d_features(model: I3D, videos: Sequence[np.ndarray], clip_frames: int = 16, clip_stride: int | None = None,
                 max_clips: int | None = None, progress: bool = True, desc: str = "I3D") -> dict[str, np.ndarray]:
    """``{"logits": (K, 400), "pool": (K, 1024)}`` for the clips of all videos."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    jobs = []
    for index, frames in enumerate(videos):
        starts = clip_starts(len(frames), clip_frames, clip_stride, max_clips)
        if not starts:
            raise ValueError(f"video {index} has {len(frames)} frames, fewer than one {clip_frames}-frame clip")
        jobs.extend((index, s) for s in starts)
    logits, pool = [], []
    with torch.no_grad():
        for index, start in tqdm(jobs, desc=desc, unit="clip", disable=not progress):
            clip = preprocess_clip(videos[index][start:start + clip_frames], device).to(dtype)
            out_logits, out_pool = model(clip)
            logits.append(out_logits.float().cpu().numpy())
            pool.append(out_pool.float().cpu().numpy())
    return {"logits": np.concatenate(logits), "pool": np.concatenate(pool)}


def fvd_scores(pred: dict[str, np.ndarray], gt: dict[str, np.ndarray]) -> dict[str, float]:
    """``{"fvd": ..., "fid_vid": ...}`` from :func:`i3d_features` outputs of both sets."""
    return {"fvd": frechet_distance_features(pred["logits"], gt["logits"]),
            "fid_vid": frechet_distance_features(pred["pool"], gt["pool"])}
