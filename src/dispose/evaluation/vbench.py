"""VBench dimensions (Huang et al. 2024) used in the paper's Tables 1-2.

Scores are in VBench's native ``[0, 1]`` range per video (the paper prints them x100); the set
score is the mean over videos.  Frames are the evaluated frames (after the report's resize), so
they match VBench exactly only when no resize is applied.

Implemented exactly as VBench defines them (no learned model needed):

* ``temporal_flickering``: mean absolute difference between consecutive frames on 0..255 values
  (all pixels and channels), averaged over frame pairs; score ``(255 - mean) / 255``.  VBench
  applies it to static-filtered videos; like the paper's protocol we apply it to every video.

Weights-free substitute (a different metric, hence a different name):

* ``dynamic_degree_dis``: VBench's dynamic-degree rule with OpenCV's DIS optical flow
  (``PRESET_MEDIUM`` on grey frames) instead of RAFT: frames are sub-sampled every
  ``round(fps / 8)`` frames (fps of the source video); for each consecutive pair the score is the
  mean of the top 5% flow magnitudes; the video is dynamic (1) if at least ``round(4 * n / 16)``
  pairs exceed ``6 * max(1, 8 / fps) * min(H, W) / 256`` (``n`` = sub-sampled frame count), else 0.

With a local backbone file:

* ``subject_consistency`` (DINO ViT-B/16, :mod:`.dino`): frames resized so the short side is 224
  (bilinear, no antialias, rounded to 8-bit as torchvision does on uint8 tensors, no crop),
  ImageNet-normalised; with L2-normalised CLS features ``f``, each frame ``t >= 1`` scores
  ``(max(0, cos(f_t, f_t-1)) + max(0, cos(f_t, f_0))) / 2``; the video's score is the mean over
  ``t``.  VBench's set score weights videos by their frame-pair count; ours is the plain mean over
  videos (identical when all videos have the same length).
* ``background_consistency`` (CLIP ViT-B/32): the same formula on CLIP image embeddings
  (``encode_image``, projected), frames resized short side -> 224 (bicubic, no antialias, 8-bit
  rounding), centre-cropped to 224x224, CLIP-normalised.
* ``dynamic_degree`` (RAFT ``raft-things.pth``, :mod:`.raft`): the rule below with RAFT flow,
  as VBench computes it.
* ``aesthetic_quality`` (LAION aesthetic predictor ``sa_0_4_vit_l_14_linear.pth`` on CLIP
  ViT-L/14): mean over frames of ``linear(normalised CLIP embedding) / 10``.

CLIP models are read with ``transformers.CLIPVisionModelWithProjection`` from a local Hugging Face
folder (``openai/clip-vit-base-patch32``, ``openai/clip-vit-large-patch14``), whose
``image_embeds`` equal OpenAI's ``encode_image``; VBench runs OpenAI's ``clip`` package, in fp16
on GPU, so expect differences in the last digits.

Not available (need VBench's learned backbones, whose loaders dispose does not implement): they
are reported as skipped with the reason, never as a number (:data:`BACKBONE_DIMENSIONS`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from dispose.errors import UserError

#: dimension -> the backbone VBench uses for it
BACKBONE_DIMENSIONS = {
    "subject_consistency": "DINO ViT-B/16 (dino_vitbase16_pretrain.pth)",
    "background_consistency": "CLIP ViT-B/32 (Hugging Face folder openai/clip-vit-base-patch32)",
    "motion_smoothness": "AMT-S frame interpolation",
    "dynamic_degree": "RAFT (raft-things.pth)",
    "imaging_quality": "MUSIQ (SPAQ)",
    "aesthetic_quality": "LAION aesthetic predictor sa_0_4_vit_l_14_linear.pth on CLIP ViT-L/14 (Hugging Face "
                         "folder openai/clip-vit-large-patch14)",
}


#: dimensions whose backbone dispose can load from a local file
LOADABLE = {"subject_consistency": "--dino", "background_consistency": "--clip-b32",
            "aesthetic_quality": "--clip-l14 and --aesthetic-head", "dynamic_degree": "--raft"}


def skip_reason(dimension: str) -> str:
    if dimension in LOADABLE:
        return (f"needs VBench's {BACKBONE_DIMENSIONS[dimension]}: pass {LOADABLE[dimension]} or put the "
                "files in --weights")
    return (f"needs VBench's {BACKBONE_DIMENSIONS[dimension]} backbone; loading it is not implemented in "
            f"dispose, so no value is reported")


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


Encoder = Callable[[torch.Tensor], torch.Tensor]
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _resize_short(frames: np.ndarray, size: int, mode: str) -> torch.Tensor:
    """torchvision ``Resize(size, antialias=False)`` on uint8 frames: short side -> size, 8-bit rounding."""
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float()
    height, width = x.shape[2:]
    target = (size, int(size * width / height)) if height <= width else (int(size * height / width), size)
    if target != (height, width):
        x = F.interpolate(x, size=target, mode=mode, align_corners=False, antialias=False).round().clamp(0, 255)
    return x


def _normalise(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    return (x / 255.0 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def dino_input(frames: np.ndarray, size: int = 224) -> torch.Tensor:
    """VBench's DINO transform: short side to ``size`` (bilinear), no crop, ImageNet normalisation."""
    return _normalise(_resize_short(frames, size, "bilinear"), _IMAGENET_MEAN, _IMAGENET_STD)


def clip_input(frames: np.ndarray, size: int = 224) -> torch.Tensor:
    """VBench's CLIP transform: short side to ``size`` (bicubic), centre crop, CLIP normalisation."""
    x = _resize_short(frames, size, "bicubic")
    top, left = round((x.shape[2] - size) / 2.0), round((x.shape[3] - size) / 2.0)
    return _normalise(x[:, :, top:top + size, left:left + size], _CLIP_MEAN, _CLIP_STD)


def _embed(encode: Encoder, prepare: Callable[[np.ndarray], torch.Tensor], frames: np.ndarray,
           param: torch.Tensor, batch: int = 8) -> torch.Tensor:
    features = []
    with torch.no_grad():
        for start in range(0, len(frames), batch):
            x = prepare(frames[start:start + batch]).to(param.device, param.dtype)
            features.append(F.normalize(encode(x).float(), dim=-1).cpu())
    return torch.cat(features)


def _consistency(features: torch.Tensor) -> float:
    if len(features) < 2:
        raise ValueError("consistency needs at least 2 frames")
    previous = (features[1:] * features[:-1]).sum(-1).clamp(min=0)
    first = (features[1:] * features[:1]).sum(-1).clamp(min=0)
    return float(((previous + first) / 2).mean())


def subject_consistency(model: torch.nn.Module, frames: np.ndarray) -> float:
    """VBench subject consistency of one video with a DINO ViT-B/16 (see module docstring)."""
    return _consistency(_embed(model, dino_input, frames, next(model.parameters())))


def load_clip_vision(folder: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """CLIP vision tower + projection from a local Hugging Face folder (no download)."""
    from transformers import CLIPVisionModelWithProjection

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} is not a Hugging Face CLIP folder (no config.json)")
    try:
        model = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load CLIP vision model from {folder}: {error}") from error
    return model.eval().to(device)


def _clip_encoder(model: torch.nn.Module) -> Encoder:
    return lambda x: model(pixel_values=x).image_embeds


def background_consistency(clip_model: torch.nn.Module, frames: np.ndarray) -> float:
    """VBench background consistency of one video with CLIP ViT-B/32 (see module docstring)."""
    return _consistency(_embed(_clip_encoder(clip_model), clip_input, frames, next(clip_model.parameters())))


def load_aesthetic_head(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Linear:
    """LAION aesthetic predictor (a single ``Linear(768, 1)``), strictly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"aesthetic predictor {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or set(state) != {"weight", "bias"} or state["weight"].ndim != 2:
        raise UserError(f"{path} is not the LAION aesthetic predictor (expected a Linear state dict)")
    head = torch.nn.Linear(state["weight"].shape[1], 1)
    head.load_state_dict(state, strict=True)
    return head.eval().to(device)


def aesthetic_quality(clip_model: torch.nn.Module, head: torch.nn.Linear, frames: np.ndarray) -> float:
    """VBench aesthetic quality of one video: mean LAION score / 10 over frames."""
    features = _embed(_clip_encoder(clip_model), clip_input, frames, next(clip_model.parameters()))
    with torch.no_grad():
        scores = head(features.to(head.weight.device)).squeeze(-1) / 10.0
    return float(scores.mean())


def temporal_flickering(frames: np.ndarray) -> float:
    """VBench temporal flickering of uint8 (N, H, W, 3) frames, in ``[0, 1]``."""
    if len(frames) < 2:
        raise ValueError("temporal flickering needs at least 2 frames")
    x = frames.astype(np.float32)
    mae = np.abs(x[1:] - x[:-1]).mean(axis=(1, 2, 3))
    return float((255.0 - mae.mean()) / 255.0)


def _top5_flow_magnitude(flow: np.ndarray) -> float:
    magnitude = np.sqrt((flow ** 2).sum(axis=-1)).ravel()
    count = int(magnitude.size * 0.05)
    return float(np.sort(magnitude)[::-1][:count].mean())


def _is_dynamic(frames: np.ndarray, fps: float, pair_score: Callable[[np.ndarray, np.ndarray], float]) -> float:
    """VBench's dynamic-degree decision (see module docstring) with a pluggable flow score."""
    interval = max(1, round(fps / 8))
    sampled = frames[::interval]
    if len(sampled) < 2:
        raise ValueError(f"dynamic degree needs at least 2 frames after sampling every {interval}")
    height, width = sampled.shape[1:3]
    threshold = max(1.0, 8.0 / fps) * 6.0 * (min(height, width) / 256.0)
    needed = round(4 * (len(sampled) / 16.0))
    moving = 0
    for a, b in itertools.pairwise(sampled):
        if pair_score(a, b) > threshold:
            moving += 1
            if moving >= needed:
                return 1.0
    return 0.0


def dynamic_degree_dis(frames: np.ndarray, fps: float) -> float:
    """1.0 if the video is dynamic by VBench's rule (with DIS flow instead of RAFT), else 0.0."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def score(a: np.ndarray, b: np.ndarray) -> float:
        grey_a, grey_b = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
        return _top5_flow_magnitude(dis.calc(grey_a, grey_b, None))

    return _is_dynamic(frames, fps, score)


def dynamic_degree(raft: torch.nn.Module, frames: np.ndarray, fps: float, iters: int = 20) -> float:
    """VBench dynamic degree with RAFT (:mod:`.raft`, 20 iterations, flow of the padded frames)."""
    from dispose.evaluation.raft import pad_to_8

    param = next(raft.parameters())

    def score(a: np.ndarray, b: np.ndarray) -> float:
        x = [torch.as_tensor(f).permute(2, 0, 1)[None].to(param.device, param.dtype) for f in (a, b)]
        with torch.no_grad():
            flow = raft(*pad_to_8(*x), iters=iters)
        return _top5_flow_magnitude(flow[0].permute(1, 2, 0).float().cpu().numpy())

    return _is_dynamic(frames, fps, score)
