"""VBench dimensions (Huang et al. 2024) used in the paper's Tables 1-2, as VBench's code defines them.

Scores are in VBench's native ``[0, 1]`` range per video (the paper prints them x100).  Frames are
the evaluated frames (after the report's resize and frame stride), so they match VBench exactly
only when the videos are evaluated at their own size and frame rate.  Definitions follow VBench's
repository (github.com/Vchitect/VBench, Apache-2.0), checked against its current code:

Without a learned model:

* ``temporal_flickering``: mean absolute difference between consecutive frames on 0..255 values
  (all pixels and channels), averaged over frame pairs; score ``(255 - mean) / 255``.  VBench
  applies it to static-filtered videos; like the paper's protocol we apply it to every video.

With a local backbone file (missing file -> the dimension is reported as skipped):

* ``subject_consistency`` (DINO ViT-B/16, :mod:`.dino`): frames resized so the short side is 224
  (bilinear, no antialias, on float values: VBench's ``load_video`` yields float tensors, so there
  is no 8-bit rounding), no crop, ImageNet-normalised; with L2-normalised CLS features ``f`` each
  frame ``t >= 1`` scores ``(max(0, cos(f_t, f_t-1)) + max(0, cos(f_t, f_0))) / 2``.  The video's
  score is the mean over ``t``; the set score is the mean over *all frame pairs* of all videos
  (VBench's ``sim / cnt``), see :func:`frame_weighted_mean`.
* ``background_consistency`` (CLIP ViT-B/32): the same rule on CLIP image embeddings, frames
  resized short side -> 224 (bicubic, no antialias, float), centre-cropped to 224x224,
  CLIP-normalised; set score frame-weighted as above.
* ``motion_smoothness`` (AMT-S ``amt-s.pth``, :mod:`.amt`): the even frames ``0, 2, 4, ...`` are
  kept (``/255``, replicate-padded to multiples of 16); AMT-S interpolates the middle of each pair;
  the interpolation is cropped back, turned to 8 bits by *truncation* (``(x * 255).clip(0, 255)
  .astype(uint8)``, as VBench does) and compared with the real odd frame: the score is
  ``(255 - mean |real - interpolated|) / 255`` over all pairs, pixels and channels.
* ``dynamic_degree`` (RAFT ``raft-things.pth``, :mod:`.raft`): frames sub-sampled every
  ``max(1, round(fps / 8))`` frames; for each consecutive pair, the mean of the top 5% flow
  magnitudes (RAFT, 20 iterations, on the frames padded to multiples of 8); the video is dynamic
  (1) once ``round(4 * n / 16)`` pairs exceed ``6 * min(H, W) / 256`` (``n`` = sub-sampled frame
  count, ``H, W`` before padding), else 0; the set score is the fraction of dynamic videos.  (An
  older VBench multiplied the threshold by ``max(1, 8 / fps)``; the current code does not.)  With
  two sub-sampled frames ``round(4 * 2 / 16) == 0`` and the video counts as dynamic whatever its
  flow, as in VBench, whose check runs before its count test.
* ``imaging_quality`` (MUSIQ trained on SPAQ, ``musiq_spaq_ckpt-358bb6af.pth``, :mod:`.musiq`):
  VBench's default "longer" preprocessing: frames whose longer side exceeds 512 are resized to
  ``(int(s * H), int(s * W))`` with ``s = 512 / max(H, W)`` (bilinear, no antialias, float values),
  then ``/255``; the video's score is the mean MUSIQ score over its frames divided by 100 (VBench
  divides only the set score by 100; we divide per video so both are in ``[0, 1]``).
* ``aesthetic_quality`` (LAION aesthetic predictor ``sa_0_4_vit_l_14_linear.pth`` on CLIP
  ViT-L/14): mean over frames of ``linear(normalised CLIP embedding) / 10``, CLIP transform as above.

Weights-free substitute (a different metric, hence a different name):

* ``dynamic_degree_dis``: the dynamic-degree rule above with OpenCV's DIS optical flow
  (``PRESET_MEDIUM`` on grey frames, no padding) instead of RAFT.

Every dimension is a :class:`~dispose.evaluation.streaming.FrameMeter` fed one frame at a time (the
functions below feed a whole sequence), so a video is never held in memory: temporal flickering keeps
the previous frame and sums absolute differences exactly in integers (VBench: float32 on the whole
video), the consistency rules keep the first and previous embeddings, dynamic degree is told the frame
count up front (its threshold needs the sampled count) and stops computing flow once decided, as VBench
does.

CLIP models are read with ``transformers.CLIPVisionModelWithProjection`` from a local Hugging Face
folder (``openai/clip-vit-base-patch32``, ``openai/clip-vit-large-patch14``), whose
``image_embeds`` equal OpenAI's ``encode_image``; VBench runs OpenAI's ``clip`` package, in fp16
on GPU, so expect differences in the last digits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from dispose.checkpoints import load_strict, read_state_dict
from dispose.errors import UserError
from dispose.evaluation.streaming import BatchedMeter, FrameMeter

#: dimension -> (the backbone VBench uses, the option(s) that give it)
BACKBONES = {
    "subject_consistency": ("DINO ViT-B/16 (dino_vitbase16_pretrain.pth)", "--dino"),
    "background_consistency": ("CLIP ViT-B/32 (Hugging Face folder openai/clip-vit-base-patch32)",
                               "--clip-b32"),
    "motion_smoothness": ("AMT-S frame interpolation (amt-s.pth)", "--amt"),
    "dynamic_degree": ("RAFT (raft-things.pth)", "--raft"),
    "imaging_quality": ("MUSIQ trained on SPAQ (musiq_spaq_ckpt-358bb6af.pth)", "--musiq"),
    "aesthetic_quality": (("LAION aesthetic predictor sa_0_4_vit_l_14_linear.pth on CLIP ViT-L/14 (Hugging "
                           "Face folder openai/clip-vit-large-patch14)"), "--clip-l14 and --aesthetic-head"),
}


def skip_reason(dimension: str) -> str:
    backbone, options = BACKBONES[dimension]
    return f"needs VBench's {backbone}: pass {options} or put the files in --weights"


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Encoder = Callable[[torch.Tensor], torch.Tensor]


def _float_frames(frames: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(frames).permute(0, 3, 1, 2).float()


def _resize_short(frames: np.ndarray, size: int, mode: str) -> torch.Tensor:
    """torchvision ``Resize(size, antialias=False)`` on float frames (0..255): short side -> size."""
    x = _float_frames(frames)
    height, width = x.shape[2:]
    target = (size, int(size * width / height)) if height <= width else (int(size * height / width), size)
    if target != (height, width):
        x = F.interpolate(x, size=target, mode=mode, align_corners=False, antialias=False)
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


def musiq_input(frames: np.ndarray, longest: int = 512) -> torch.Tensor:
    """VBench's "longer" imaging-quality transform: longer side capped at ``longest``, values in [0, 1]."""
    x = _float_frames(frames)
    height, width = x.shape[2:]
    if max(height, width) > longest:
        scale = longest / max(height, width)
        x = F.interpolate(x, size=(int(scale * height), int(scale * width)), mode="bilinear",
                          align_corners=False, antialias=False)
    return x / 255.0


class Embedding(BatchedMeter):
    """L2-normalised per-frame embeddings, batch by batch; :meth:`take` hands each batch to a subclass."""

    def __init__(self, encode: Encoder, prepare: Callable[[np.ndarray], torch.Tensor], param: torch.Tensor,
                 batch: int = 8) -> None:
        super().__init__(batch)
        self.encode, self.prepare, self.param = encode, prepare, param

    def process(self, frames: np.ndarray) -> None:
        with torch.no_grad():
            x = self.prepare(frames).to(self.param.device, self.param.dtype)
            self.take(F.normalize(self.encode(x).float(), dim=-1).cpu())

    def take(self, features: torch.Tensor) -> None:
        raise NotImplementedError


class Consistency(Embedding):
    """VBench's consistency rule over the embeddings of one video (see module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.first: torch.Tensor | None = None
        self.previous: torch.Tensor | None = None
        self.total, self.pairs = 0.0, 0

    def take(self, features: torch.Tensor) -> None:
        if self.first is None:
            self.first, self.previous = features[:1], features[:1]
            features = features[1:]
        before = torch.cat([self.previous, features[:-1]])
        scores = ((features * before).sum(-1).clamp(min=0) + (features * self.first).sum(-1).clamp(min=0)) / 2
        self.total += float(scores.double().sum())
        self.pairs += len(features)
        if len(features):
            self.previous = features[-1:]

    def summary(self) -> float:
        if not self.pairs:
            raise ValueError("consistency needs at least 2 frames")
        return self.total / self.pairs


def frame_weighted_mean(scores: list[float], frame_counts: list[int]) -> float:
    """VBench's set score for the consistency dimensions: every frame pair weighs the same."""
    pairs = [count - 1 for count in frame_counts]
    return float(sum(s * p for s, p in zip(scores, pairs, strict=True)) / sum(pairs))


def subject_consistency_meter(model: torch.nn.Module) -> Consistency:
    return Consistency(model, dino_input, next(model.parameters()))


def subject_consistency(model: torch.nn.Module, frames: Iterable[np.ndarray]) -> float:
    """VBench subject consistency of one video with a DINO ViT-B/16 (see module docstring)."""
    return subject_consistency_meter(model).run(frames)


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


def background_consistency_meter(clip_model: torch.nn.Module) -> Consistency:
    return Consistency(_clip_encoder(clip_model), clip_input, next(clip_model.parameters()))


def background_consistency(clip_model: torch.nn.Module, frames: Iterable[np.ndarray]) -> float:
    """VBench background consistency of one video with CLIP ViT-B/32 (see module docstring)."""
    return background_consistency_meter(clip_model).run(frames)


def load_aesthetic_head(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Linear:
    """LAION aesthetic predictor (a single ``Linear(768, 1)``), strictly."""
    what = "the LAION aesthetic predictor (a Linear state dict: sa_0_4_vit_l_14_linear.pth)"
    state = read_state_dict(path, what=what, source="https://github.com/LAION-AI/aesthetic-predictor")
    weight = state.get("weight")
    if weight is None or weight.ndim != 2:
        raise UserError(f"{path} is not {what}: it has no 2-d 'weight'")
    head = torch.nn.Linear(weight.shape[1], 1)
    load_strict(head, state, path, what=what)
    return head.eval().to(device)


class Aesthetic(Embedding):
    """Mean LAION score / 10 over the CLIP ViT-L/14 embeddings of one video's frames."""

    def __init__(self, clip_model: torch.nn.Module, head: torch.nn.Linear) -> None:
        super().__init__(_clip_encoder(clip_model), clip_input, next(clip_model.parameters()))
        self.head, self.scores = head, []

    def take(self, features: torch.Tensor) -> None:
        with torch.no_grad():
            self.scores.extend((self.head(features.to(self.head.weight.device)).squeeze(-1) / 10.0).tolist())

    def summary(self) -> float:
        return float(np.mean(self.scores))


def aesthetic_quality(clip_model: torch.nn.Module, head: torch.nn.Linear,
                      frames: Iterable[np.ndarray]) -> float:
    """VBench aesthetic quality of one video: mean LAION score / 10 over frames."""
    return Aesthetic(clip_model, head).run(frames)


class ImagingQuality(BatchedMeter):
    """Mean MUSIQ (SPAQ) score / 100 over one video's frames."""

    def __init__(self, musiq: torch.nn.Module, batch: int = 4) -> None:
        super().__init__(batch)
        self.musiq, self.param, self.scores = musiq, next(musiq.parameters()), []

    def process(self, frames: np.ndarray) -> None:
        with torch.no_grad():
            x = musiq_input(frames).to(self.param.device, self.param.dtype)
            self.scores.extend(float(s) for s in self.musiq(x).float().cpu())

    def summary(self) -> float:
        return float(np.mean(self.scores)) / 100.0


def imaging_quality(musiq: torch.nn.Module, frames: Iterable[np.ndarray], batch: int = 4) -> float:
    """VBench imaging quality of one video: mean MUSIQ (SPAQ) score over frames, / 100."""
    return ImagingQuality(musiq, batch).run(frames)


class MotionSmoothness(FrameMeter):
    """AMT-S interpolation error of every odd frame from its even neighbours (see module docstring)."""

    def __init__(self, amt: torch.nn.Module) -> None:
        self.amt, self.param = amt, next(amt.parameters())
        self.index, self.even, self.odd, self.errors = 0, None, None, []

    def _tensor(self, frame: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(frame).to(self.param.device).permute(2, 0, 1)[None].float() / 255.0
        return x.to(self.param.dtype)

    def update(self, frame: np.ndarray) -> None:
        from dispose.evaluation.amt import pad_to_16

        if self.index % 2:
            self.odd = frame
        else:
            if self.even is not None:
                height, width = frame.shape[:2]
                padded = pad_to_16(self._tensor(self.even), self._tensor(frame))
                top, left = (padded[0].shape[2] - height) // 2, (padded[0].shape[3] - width) // 2
                with torch.no_grad():
                    middle = self.amt(*padded)[0, :, top:top + height, left:left + width]
                middle = (middle.float() * 255.0).permute(1, 2, 0).cpu().numpy().clip(0, 255).astype(np.uint8)
                self.errors.append(float(np.mean(cv2.absdiff(self.odd, middle))))
            self.even = frame
        self.index += 1

    def result(self) -> float:
        if self.index < 3:
            raise ValueError("motion smoothness needs at least 3 frames")
        return float((255.0 - np.mean(self.errors)) / 255.0)


def motion_smoothness(amt: torch.nn.Module, frames: Iterable[np.ndarray]) -> float:
    """VBench motion smoothness of one video with AMT-S (see module docstring)."""
    return MotionSmoothness(amt).run(frames)


class TemporalFlickering(FrameMeter):
    """Mean absolute difference of consecutive frames, summed exactly in integers."""

    def __init__(self) -> None:
        self.previous: np.ndarray | None = None
        self.pair_means: list[float] = []

    def update(self, frame: np.ndarray) -> None:
        if self.previous is not None:
            self.pair_means.append(int(cv2.absdiff(frame, self.previous).sum(dtype=np.int64)) / frame.size)
        self.previous = frame

    def result(self) -> float:
        if not self.pair_means:
            raise ValueError("temporal flickering needs at least 2 frames")
        return float((255.0 - np.mean(self.pair_means)) / 255.0)


def temporal_flickering(frames: Iterable[np.ndarray]) -> float:
    """VBench temporal flickering of uint8 (H, W, 3) frames, in ``[0, 1]``."""
    return TemporalFlickering().run(frames)


def _top5_flow_magnitude(flow: np.ndarray) -> float:
    magnitude = np.sqrt((flow ** 2).sum(axis=-1)).ravel()
    count = int(magnitude.size * 0.05)
    return float(np.sort(magnitude)[::-1][:count].mean())


PairScore = Callable[[np.ndarray, np.ndarray], float]


class DynamicDegree(FrameMeter):
    """VBench's dynamic-degree decision (see module docstring) with a pluggable flow score.

    The rule needs the number of sub-sampled frames, so the meter is told the video's frame count
    up front; once the video is judged dynamic no more flow is computed, as in VBench.
    """

    def __init__(self, pair_score: PairScore, fps: float, frame_count: int) -> None:
        self.step = max(1, round(fps / 8))
        sampled = -(-frame_count // self.step)
        if sampled < 2:
            raise ValueError(f"dynamic degree needs at least 2 frames after sampling every {self.step}")
        self.needed = round(4 * sampled / 16.0)
        self.pair_score, self.index, self.previous, self.moving, self.dynamic = pair_score, 0, None, 0, False

    def update(self, frame: np.ndarray) -> None:
        if self.index % self.step == 0 and not self.dynamic:
            if self.previous is not None:
                if self.pair_score(self.previous, frame) > 6.0 * min(frame.shape[:2]) / 256.0:
                    self.moving += 1
                self.dynamic = self.moving >= self.needed
            self.previous = frame
        self.index += 1

    def result(self) -> float:
        return 1.0 if self.dynamic else 0.0


def _is_dynamic(frames: np.ndarray, fps: float, pair_score: PairScore) -> float:
    return DynamicDegree(pair_score, fps, len(frames)).run(frames)


def dis_score() -> PairScore:
    """Top-5% DIS optical-flow magnitude of two RGB frames (``PRESET_MEDIUM`` on grey frames)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def score(a: np.ndarray, b: np.ndarray) -> float:
        grey_a, grey_b = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
        return _top5_flow_magnitude(dis.calc(grey_a, grey_b, None))

    return score


def dynamic_degree_dis(frames: np.ndarray, fps: float) -> float:
    """1.0 if the video is dynamic by VBench's rule (with DIS flow instead of RAFT), else 0.0."""
    return _is_dynamic(frames, fps, dis_score())


def raft_score(raft: torch.nn.Module, iters: int = 20) -> PairScore:
    """Top-5% RAFT flow magnitude of two RGB frames (20 iterations, flow of the frames padded to 8)."""
    from dispose.evaluation.raft import pad_to_8

    param = next(raft.parameters())

    def score(a: np.ndarray, b: np.ndarray) -> float:
        x = [torch.as_tensor(f).permute(2, 0, 1)[None].to(param.device, param.dtype) for f in (a, b)]
        with torch.no_grad():
            flow = raft(*pad_to_8(*x), iters=iters)
        return _top5_flow_magnitude(flow[0].permute(1, 2, 0).float().cpu().numpy())

    return score


def dynamic_degree(raft: torch.nn.Module, frames: np.ndarray, fps: float, iters: int = 20) -> float:
    """VBench dynamic degree with RAFT (:mod:`.raft`, 20 iterations, flow of the padded frames)."""
    return _is_dynamic(frames, fps, raft_score(raft, iters))
