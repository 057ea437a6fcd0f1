"""Motion encoder of the hybrid ControlNet (paper sec. 4.1, Eq. 5): ``F_m = F_e(E_s(F_s) + E_d(F_d))``.

Two convolutional branches of the same shape turn the sparse motion field ``F_s`` (keypoint
trajectories) and the dense one ``F_d`` (CMP propagation) into feature maps at latent resolution; a
fusing convolution ``F_e`` mixes their sum.  The result is added to the ControlNet's ``conv_in`` output.

Layout (the release's ``ControlNetConditioningEmbeddingSVD``, parameter names kept so ``DisPose.pth``
loads under ``controlnet_cond_embedding.*``): per branch, ``conv_in_*`` (2 -> 16 channels, 3x3), then for
each pair of consecutive widths of ``block_out_channels`` = (16, 32, 96, 256) a 3x3 conv at the same
width and a 3x3 stride-2 conv to the next width (``blocks_*``, SiLU after every conv), so three
halvings reach 1/8 of the image (the latent size), then a zero-initialised 3x3 ``conv_out_*`` to the
ControlNet's first block width; ``conv_final`` (3x3, default init) fuses the two.  The release names
the dense branch ``flow`` (it receives the CMP field, ``controlnet_flow``) and the sparse branch
``traj`` (it receives the blurred trajectory flow, ``traj_flow``); we keep those names.

Reference frame: the release's encoder prepends a zero flow for the reference frame (position 0 of
every window) itself; here the caller passes flows that already hold that zero flow at position 0
(:mod:`dispose.pipelines.guidance_inputs`), so the encoder maps every frame it is given.  Same numbers.

Paper vs release (we follow the release, whose weights were trained on it):

* The paper describes each stage as Conv-SiLU-ZeroConv; the release has plain conv + SiLU stages and a
  single zero-initialised convolution at the end of each branch.
* The paper adds ``F_m`` "to the noise latent before being input into the hybrid ControlNet"; the release
  adds it to the output of the ControlNet's ``conv_in`` (first block width, latent resolution).
* The release's class takes unused arguments (conditioning channels, DIFT channels, feature widths) that
  create no parameters; they are left out.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _branch(in_channels: int, widths: Sequence[int]) -> tuple[nn.Conv2d, nn.ModuleList]:
    blocks = nn.ModuleList()
    for width, next_width in itertools.pairwise(widths):
        blocks.append(nn.Conv2d(width, width, kernel_size=3, padding=1))
        blocks.append(nn.Conv2d(width, next_width, kernel_size=3, padding=1, stride=2))
    return nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1), blocks


def zero_conv(in_channels: int, out_channels: int, kernel_size: int = 1) -> nn.Conv2d:
    """A convolution whose weight and bias start at zero (ControlNet's "zero convolution")."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class MotionEncoder(nn.Module):
    """``E_s``, ``E_d`` and ``F_e`` of Eq. 5 (see module docstring).

    Args:
        out_channels: width of the ControlNet's first block (320 for SVD).
        flow_channels: channels of a motion field (2: x and y displacement in pixels).
        block_out_channels: widths of the branch stages; ``len - 1`` stride-2 convolutions.
    """

    def __init__(self, out_channels: int, flow_channels: int = 2,
                 block_out_channels: Sequence[int] = (16, 32, 96, 256)) -> None:
        super().__init__()
        widths = tuple(block_out_channels)
        self.conv_in_flow, self.blocks_flow = _branch(flow_channels, widths)
        self.conv_out_flow = zero_conv(widths[-1], out_channels, kernel_size=3)
        self.conv_in_traj, self.blocks_traj = _branch(flow_channels, widths)
        self.conv_out_traj = zero_conv(widths[-1], out_channels, kernel_size=3)
        self.conv_final = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.downscale = 2 ** (len(widths) - 1)

    @staticmethod
    def _encode(field: torch.Tensor, conv_in: nn.Conv2d, blocks: nn.ModuleList,
                conv_out: nn.Conv2d) -> torch.Tensor:
        hidden = F.silu(conv_in(field))
        for conv in blocks:
            hidden = F.silu(conv(hidden))
        return conv_out(hidden)

    def forward(self, sparse_flow: torch.Tensor, dense_flow: torch.Tensor) -> torch.Tensor:
        """``F_m`` of (N, 2, H, W) sparse and dense motion fields -> (N, out_channels, H / 8, W / 8)."""
        if sparse_flow.shape != dense_flow.shape or sparse_flow.dim() != 4:
            raise ValueError(f"sparse_flow and dense_flow must both be (N, 2, H, W), "
                             f"got {tuple(sparse_flow.shape)} and {tuple(dense_flow.shape)}")
        dtype = self.conv_final.weight.dtype
        dense = self._encode(dense_flow.to(dtype), self.conv_in_flow, self.blocks_flow, self.conv_out_flow)
        sparse = self._encode(sparse_flow.to(dtype), self.conv_in_traj, self.blocks_traj, self.conv_out_traj)
        return self.conv_final(dense + sparse)
