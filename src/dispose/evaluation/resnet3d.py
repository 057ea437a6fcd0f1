"""3D ResNet-50 (Hara et al. 2018, Kinetics-400) in plain PyTorch, for DisCo's FID-VID.

The evaluation code the human-animation papers share (DisCo's ``tool/metrics``; the paper's
"FID-FVD" values, 10-16, are on the scale of the FID-VID those papers report) computes FID-VID with
Hara et al.'s ``resnet-50-kinetics.pth`` (github.com/kenshohara/3D-ResNets-PyTorch, MIT): bottleneck blocks
``[3, 4, 6, 3]``, type-B (projection) shortcuts, a 7x7x7 stem with stride ``(1, 2, 2)``, a 3x3x3
stride-2 max-pool, and the classifier removed (``last_fc=False``): the feature is the 2048-d
output of the final average pool (kernel ``(ceil(T / 16), ceil(S / 32), ceil(S / 32))``,
stride 1).  Parameter names follow that checkpoint (``{"state_dict": {"module.conv1.weight": ...}}``),
so it loads strictly; its unused ``fc.*`` classifier is required and then dropped, and batch-norm
step counters (absent from files saved before PyTorch 0.4.1) are filled in, as PyTorch does for
old checkpoints (:func:`dispose.checkpoints.load_strict`).

Video preprocessing, as DisCo's ``DatasetFVDVideoResize`` does it for this model
(:func:`disco_segments`): every frame resized to 112x112 with Pillow's bicubic filter on float
values (DisCo's unquantised "PIL" resizer: one ``"F"``-mode image per channel, the bicubic
overshoot not clipped), the video padded to a multiple of 16 frames by repeating its last frame,
the ActivityNet mean ``(114.7748, 107.7354, 99.4750)`` subtracted (no scaling), and cut into
consecutive 16-frame segments.  A video's feature is the mean of its segments' features.

Checked against DisCo's ``resnet3d.resnet50`` and ``make_resizer`` with one random state dict:
identical input tensor and matching features (``bench/eval_resnet3d_vs_reference.py`` prints the largest
difference).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dispose.checkpoints import load_strict, read_state_dict, strip_prefix
from dispose.errors import UserError
from dispose.evaluation.streaming import BatchedMeter

_WHAT = "a 3D ResNet-50 (Hara et al.) Kinetics checkpoint (resnet-50-kinetics.pth)"
_SOURCE = "https://github.com/kenshohara/3D-ResNets-PyTorch"
SIZE = 112
SEGMENT = 16
MEAN = (114.7748, 107.7354, 99.4750)


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.downsample = (nn.Sequential(nn.Conv3d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                         nn.BatchNorm3d(planes * 4))
                           if stride != 1 or inplanes != planes * 4 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class ResNet3D(nn.Module):
    """``forward(clips (B, 3, T, 112, 112), mean-subtracted 0..255) -> (B, 2048)`` pooled features."""

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 64, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        inplanes = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True), 1):
            stride = 1 if index == 1 else 2
            stage = ([Bottleneck(inplanes, planes, stride)]
                     + [Bottleneck(planes * 4, planes) for _ in range(blocks - 1)])
            self.add_module(f"layer{index}", nn.Sequential(*stage))
            inplanes = planes * 4

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        frames, size = clips.shape[2], clips.shape[-1]
        x = F.max_pool3d(F.relu(self.bn1(self.conv1(clips))), 3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        kernel = (math.ceil(frames / 16), math.ceil(size / 32), math.ceil(size / 32))
        return F.avg_pool3d(x, kernel, stride=1).flatten(1)


def _resize_bicubic(frame: np.ndarray) -> np.ndarray:
    """DisCo's unquantised Pillow bicubic resize of one uint8 RGB frame to 112x112 (float32, not clipped)."""
    channels = [np.asarray(Image.fromarray(frame[:, :, c].astype(np.float32), mode="F")
                           .resize((SIZE, SIZE), resample=Image.Resampling.BICUBIC)) for c in range(3)]
    return np.stack(channels, axis=-1).astype(np.float32)


def disco_segments(frames: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> (ceil(N / 16), 3, 16, 112, 112) model input (see module docstring)."""
    video = np.stack([_resize_bicubic(f) for f in frames])
    if len(video) % SEGMENT:
        video = np.concatenate([video, np.repeat(video[-1:], SEGMENT - len(video) % SEGMENT, axis=0)])
    # float64 like DisCo's
    video = (torch.from_numpy(video) - torch.tensor(MEAN, dtype=torch.float64)).float()
    return video.view(-1, SEGMENT, SIZE, SIZE, 3).permute(0, 4, 1, 2, 3).contiguous()


class VideoFeature(BatchedMeter):
    """DisCo's FID-VID feature of one video, one 16-frame segment at a time: the mean 2048-d feature of
    its segments (the last one padded with its last frame)."""

    def __init__(self, model: ResNet3D) -> None:
        super().__init__(SEGMENT)
        self.model, self.param, self.features = model, next(model.parameters()), []

    def process(self, frames: np.ndarray) -> None:
        with torch.no_grad():
            self.features.append(self.model(disco_segments(frames).to(self.param.device,
                                                                      self.param.dtype)).float())

    def summary(self) -> np.ndarray:
        return torch.cat(self.features).mean(dim=0).cpu().numpy()


def video_feature(model: ResNet3D, frames: np.ndarray) -> np.ndarray:
    """:class:`VideoFeature` of a whole ``(N, H, W, 3)`` video."""
    return VideoFeature(model).run(frames)


def load_resnet3d(path: str | Path, device: str | torch.device = "cpu") -> ResNet3D:
    """3D ResNet-50 from Hara et al.'s ``resnet-50-kinetics.pth``, strictly (see module docstring)."""
    state, prefix = strip_prefix(read_state_dict(path, what=_WHAT, source=_SOURCE), "module.", path)
    if "fc.weight" not in state:
        raise UserError(f"{path} is not a 3D ResNet Kinetics checkpoint (resnet-50-kinetics.pth): it has no "
                        f"{prefix}fc.weight")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    layers = tuple(1 + max((int(k.split(".")[1]) for k in state if k.startswith(f"layer{i}.")), default=-1)
                   for i in range(1, 5))
    if min(layers) < 1:
        raise UserError(f"{path} is not a 3D ResNet-50 checkpoint (stages of {layers} blocks)")
    model = ResNet3D(layers)
    load_strict(model, state, path, what=_WHAT, file_prefix=prefix, fill_batchnorm_counters=True)
    return model.eval().to(device)
