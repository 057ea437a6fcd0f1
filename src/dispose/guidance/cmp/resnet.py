"""CMP's image encoder: a dilated ResNet-50 with output stride 8 (Zhan et al., CVPR 2019, sec. 3.2).

The network is the standard ResNet-50 v1.5 layout (stride on the 3x3 convolution of each stage's first
bottleneck) with the changes the CMP release makes:

* ``layer3`` and ``layer4`` do not downsample: every 3x3 ``conv2`` in them uses dilation 2 (layer3) or
  4 (layer4) with matching padding and stride 1, and their ``downsample`` 1x1 convolutions use stride 1.
  The output stride is therefore 8 (a 384x384 image gives 48x48 features).
* There is no pooling/classifier head; ``conv5`` (1x1, with bias) maps the 2048 channels of ``layer4``
  to ``output_dim`` channels (256 in the ``semiauto_annot/resnet50_vip+mpii_liteflow`` configuration).
* :meth:`ResNet50Encoder.forward` also returns the skip features the decoder uses: the input image
  itself, the stem output after ReLU (64 channels, 1/2) and ``layer1`` (256 channels, 1/4).

Attribute names (``conv1``, ``bn1``, ``layer1.0.conv2``, ``layer1.0.downsample.0``, ``conv5``, ...) are
those of the checkpoint.  No torchvision dependency.
"""

from __future__ import annotations

import torch
from torch import nn

_EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided or dilated) -> 1x1 residual block with a 4x channel expansion."""

    def __init__(self, in_channels: int, width: int, *, stride: int = 1, dilation: int = 1,
                 downsample: nn.Sequential | None = None) -> None:
        super().__init__()
        out_channels = width * _EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _stage(in_channels: int, width: int, blocks: int, *, stride: int, dilation: int) -> nn.Sequential:
    """One ResNet stage; the first block carries the stride and the 1x1 projection shortcut."""
    out_channels = width * _EXPANSION
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )
    layers = [Bottleneck(in_channels, width, stride=stride, dilation=dilation, downsample=downsample)]
    layers += [Bottleneck(out_channels, width, dilation=dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet50Encoder(nn.Module):
    """Dilated ResNet-50 (output stride 8) followed by a 1x1 projection to ``output_dim`` channels."""

    def __init__(self, output_dim: int = 256) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _stage(64, 64, 3, stride=1, dilation=1)
        self.layer2 = _stage(256, 128, 4, stride=2, dilation=1)
        self.layer3 = _stage(512, 256, 6, stride=1, dilation=2)
        self.layer4 = _stage(1024, 512, 3, stride=1, dilation=4)
        self.conv5 = nn.Conv2d(2048, output_dim, kernel_size=1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return ``(features at 1/8, [image, stem at 1/2, layer1 at 1/4])``."""
        stem = self.relu(self.bn1(self.conv1(image)))
        layer1 = self.layer1(self.maxpool(stem))
        deep = self.layer4(self.layer3(self.layer2(layer1)))
        return self.conv5(deep), [image, stem, layer1]
