"""MimicMotion's PoseNet: skeleton images -> latents added after the UNet's ``conv_in``.

The layout of ``mimicmotion/modules/pose_net.py`` (Tencent MimicMotion, reused unchanged by DisPose),
with its parameter names so ``MimicMotion_1-1.pth`` loads under ``pose_net.*``: ``conv_layers`` is a
Sequential of eight 3x3 / 4x4 convolutions with SiLU after each (3 -> 3 -> 16 -> 16 -> 32 -> 32 -> 64 ->
64 -> 128 channels; the three 4x4 ones have stride 2, so the output is at 1/8 of the image, the latent
size), ``final_proj`` a zero-initialised 1x1 convolution to the UNet's first block width, and ``scale`` a
learned scalar (initially 2) multiplying the output.  Input: (N, 3, H, W) or (B, T, 3, H, W) skeleton
images in [-1, 1]; output (N, C, H / 8, W / 8).

Initialisation as the release (He-normal convolutions with zero biases, zero projection), which only
matters for training; inference loads the checkpoint.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

#: (in, out, kernel, stride) of the convolutions of ``conv_layers``.
_CONVS = ((3, 3, 3, 1), (3, 16, 4, 2), (16, 16, 3, 1), (16, 32, 4, 2), (32, 32, 3, 1), (32, 64, 4, 2),
          (64, 64, 3, 1), (64, 128, 3, 1))


class PoseNet(ModelMixin, ConfigMixin):
    """Skeleton-image encoder of MimicMotion (see module docstring)."""

    @register_to_config
    def __init__(self, noise_latent_channels: int = 320) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for in_channels, out_channels, kernel, stride in _CONVS:
            conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel, stride=stride, padding=1)
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (kernel * kernel * in_channels)))
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.SiLU()]
        self.conv_layers = nn.Sequential(*layers)
        self.final_proj = nn.Conv2d(128, noise_latent_channels, kernel_size=1)
        nn.init.zeros_(self.final_proj.weight)
        nn.init.zeros_(self.final_proj.bias)
        self.scale = nn.Parameter(torch.full((1,), 2.0))

    def forward(self, pose_images: torch.Tensor) -> torch.Tensor:
        if pose_images.dim() == 5:
            pose_images = pose_images.flatten(0, 1)
        return self.final_proj(self.conv_layers(pose_images)) * self.scale
