"""AMT-S frame interpolation (Li et al. 2023, "AMT: All-Pairs Multi-Field Transforms") in plain PyTorch.

VBench's motion smoothness interpolates the middle frame between frames ``2k`` and ``2k + 2`` with
AMT-S (``amt-s.pth``, config ``AMT-S.yaml``: correlation radius 3, 4 levels, 3 flow fields,
channels 20/32/44/56) and compares it with the real frame ``2k + 1`` (:func:`dispose.evaluation.
vbench.motion_smoothness`).  This is a re-implementation written from the model's description and
the checkpoint's parameter names (AMT's code is CC BY-NC 4.0, so none of it is copied); the
module tree matches the checkpoint, so ``amt-s.pth`` (``{"state_dict": ...}``) loads strictly.

Network, at input resolution ``H x W`` (multiples of 16; :func:`pad_to_16` pads like AMT's
``InputPadder``):

* both frames minus their joint mean intensity; a RAFT-style feature encoder (instance-norm
  bottlenecks, 84 channels at 1/8) builds a bidirectional all-pairs correlation pyramid
  (RAFT's :class:`~dispose.evaluation.raft.CorrPyramid`, radius 3: the same window order);
* a 4-level context pyramid per frame (stride-2 conv + PReLU pairs, channels 20/32/44/56);
* a coarse-to-fine decoder predicts the two flows from the middle frame to each input (1/8, 1/4,
  1/2) plus a feature map; after each of the three coarse decoders an update block looks up the
  correlation at ``coord + flow_1 / t`` and ``coord + flow_0 / (1 - t)`` (``t = 0.5``, flows
  taken at 1/8 resolution) and refines flows and features;
* the last decoder outputs 3 flow pairs, 3 blend masks and 3 residual images at full resolution;
  each pair warps both frames (bilinear, border padding), the 3 candidates are averaged and
  corrected by a small conv block, and the result is clamped to ``[0, 1]``.

Inputs are ``(B, 3, H, W)`` float RGB in ``[0, 1]``.  VBench's memory-driven down-scaling
(``scale_factor < 1`` on small GPUs) is not reproduced: we always run at full resolution, which is
what VBench does on CPU and on GPUs with enough memory for the frame size.

Checked against AMT's own ``Model`` class (VBench's copy) with one random state dict: identical
output (``bench/eval_amt_vs_reference.py`` prints the largest difference).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dispose.checkpoints import load_strict, read_state_dict
from dispose.evaluation.raft import CorrPyramid, coords_grid, pad_to_multiple

_WHAT = "an AMT-S checkpoint (VBench's amt-s.pth)"
_SOURCE = "https://huggingface.co/lalala125/AMT (amt-s.pth)"


def _resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` at ``pixel + flow`` (bilinear, border padding, pixel-centre corners)."""
    b, _, h, w = flow.shape
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype).view(1, 1, w).expand(b, h, w)
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype).view(1, h, 1).expand(b, h, w)
    grid = torch.stack([xs + flow[:, 0] / ((w - 1.0) / 2.0), ys + flow[:, 1] / ((h - 1.0) / 2.0)], dim=-1)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border",
                         align_corners=True)


class _Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 with instance norm; projected shortcut when strided."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes // 4, 1)
        self.conv2 = nn.Conv2d(planes // 4, planes // 4, 3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(planes // 4, planes, 1)
        self.downsample = (nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride),
                                         nn.InstanceNorm2d(planes))
                           if stride != 1 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(F.instance_norm(self.conv1(x)))
        y = F.relu(F.instance_norm(self.conv2(y)))
        y = F.relu(F.instance_norm(self.conv3(y)))
        return F.relu((self.downsample(x) if self.downsample is not None else x) + y)


class FeatureEncoder(nn.Module):
    """Correlation features at 1/8 resolution (AMT's "small" encoder, instance norm)."""

    def __init__(self, output_dim: int = 84) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2, padding=3)
        self.layer1 = nn.Sequential(_Bottleneck(32, 32), _Bottleneck(32, 32))
        self.layer2 = nn.Sequential(_Bottleneck(32, 64, 2), _Bottleneck(64, 64))
        self.layer3 = nn.Sequential(_Bottleneck(64, 96, 2), _Bottleneck(96, 96))
        self.conv2 = nn.Conv2d(96, output_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.instance_norm(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


def _conv_prelu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1), nn.PReLU(out_channels))


class ContextPyramid(nn.Module):
    """Four stride-2 stages; returns the features at 1/2, 1/4, 1/8, 1/16."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        previous = 3
        for index, width in enumerate(channels, 1):
            self.register_module(f"pyramid{index}", nn.Sequential(_conv_prelu(previous, width, 2),
                                                                  _conv_prelu(width, width)))
            previous = width
        self.levels = len(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index in range(1, self.levels + 1):
            x = getattr(self, f"pyramid{index}")(x)
            features.append(x)
        return features


class SideResBlock(nn.Module):
    """Residual block whose last ``side`` channels get two extra convolutions of their own."""

    def __init__(self, channels: int, side: int) -> None:
        super().__init__()
        self.side = side
        self.conv1 = _conv_prelu(channels, channels)
        self.conv2 = _conv_prelu(side, side)
        self.conv3 = _conv_prelu(channels, channels)
        self.conv4 = _conv_prelu(side, side)
        self.conv5 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.prelu = nn.PReLU(channels)

    def _side(self, x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
        return torch.cat([x[:, :-self.side], conv(x[:, -self.side:])], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self._side(self.conv1(x), self.conv2))
        out = self.conv5(self._side(out, self.conv4))
        return self.prelu(x + out)


def _decoder_block(in_channels: int, width: int, side: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(_conv_prelu(in_channels, width), SideResBlock(width, side),
                         nn.ConvTranspose2d(width, out_channels, 4, 2, 1))


class InitDecoder(nn.Module):
    """Coarsest decoder: both 1/16 features + the time step -> flows and features at 1/8."""

    def __init__(self, in_ch: int, out_ch: int, side: int) -> None:
        super().__init__()
        self.convblock = _decoder_block(2 * in_ch + 1, 2 * in_ch, side, out_ch + 4)

    def forward(self, f0: torch.Tensor, f1: torch.Tensor,
                embt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = embt.expand(f0.shape[0], 1, *f0.shape[2:])
        out = self.convblock(torch.cat([f0, f1, t], dim=1))
        return out[:, 0:2], out[:, 2:4], out[:, 4:]


class IntermediateDecoder(nn.Module):
    """Warps both context features with the current flows and doubles the resolution."""

    def __init__(self, in_ch: int, out_ch: int, side: int) -> None:
        super().__init__()
        self.convblock = _decoder_block(3 * in_ch + 4, 3 * in_ch, side, out_ch + 4)

    def forward(self, feat: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor, flow0: torch.Tensor,
                flow1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.convblock(torch.cat([feat, warp(f0, flow0), warp(f1, flow1), flow0, flow1], dim=1))
        return (out[:, 0:2] + 2.0 * _resize(flow0, 2.0), out[:, 2:4] + 2.0 * _resize(flow1, 2.0), out[:, 4:])


class MultiFlowDecoder(nn.Module):
    """Finest decoder: ``num_flows`` flow pairs, blend masks and residual images at full size."""

    def __init__(self, in_ch: int, side: int, num_flows: int = 3) -> None:
        super().__init__()
        self.num_flows = num_flows
        self.convblock = _decoder_block(3 * in_ch + 4, 3 * in_ch, side, 8 * num_flows)

    def forward(self, feat: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor, flow0: torch.Tensor,
                flow1: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.num_flows
        out = self.convblock(torch.cat([feat, warp(f0, flow0), warp(f1, flow1), flow0, flow1], dim=1))
        delta0, delta1, mask, residual = torch.split(out, [2 * n, 2 * n, n, 3 * n], dim=1)
        flow0 = delta0 + 2.0 * _resize(flow0, 2.0).repeat(1, n, 1, 1)
        flow1 = delta1 + 2.0 * _resize(flow1, 2.0).repeat(1, n, 1, 1)
        return flow0, flow1, torch.sigmoid(mask), residual


class UpdateBlock(nn.Module):
    """Correlation-guided residual update of both flows and the decoder features (at 1/8)."""

    def __init__(self, cdim: int, corr_planes: int, scale: int | None = None, hidden: int = 76,
                 flow_dim: int = 20, corr_dim: int = 64, fc_dim: int = 68) -> None:
        super().__init__()
        self.scale = scale
        self.convc1 = nn.Conv2d(2 * corr_planes, corr_dim, 1)
        self.convf1 = nn.Conv2d(4, 2 * flow_dim, 7, padding=3)
        self.convf2 = nn.Conv2d(2 * flow_dim, flow_dim, 3, padding=1)
        self.conv = nn.Conv2d(corr_dim + flow_dim, fc_dim, 3, padding=1)
        self.gru = nn.Sequential(nn.Conv2d(fc_dim + 4 + cdim, hidden, 3, padding=1), nn.LeakyReLU(0.1),
                                 nn.Conv2d(hidden, hidden, 3, padding=1))
        self.feat_head = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.1),
                                       nn.Conv2d(hidden, cdim, 3, padding=1))
        self.flow_head = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.1),
                                       nn.Conv2d(hidden, 4, 3, padding=1))

    def forward(self, feat: torch.Tensor, flow: torch.Tensor,
                corr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scale is not None:
            feat = _resize(feat, 1 / self.scale)
        cor = F.leaky_relu(self.convc1(corr), 0.1)
        flo = F.leaky_relu(self.convf2(F.leaky_relu(self.convf1(flow), 0.1)), 0.1)
        motion = F.leaky_relu(self.conv(torch.cat([cor, flo], dim=1)), 0.1)
        out = self.gru(torch.cat([motion, flow, feat], dim=1))
        delta_feat, delta_flow = self.feat_head(out), self.flow_head(out)
        if self.scale is not None:
            delta_feat = _resize(delta_feat, self.scale)
            delta_flow = self.scale * _resize(delta_flow, self.scale)
        return delta_feat, delta_flow


class AMT(nn.Module):
    """AMT-S; ``forward(img0, img1, t=0.5) -> (B, 3, H, W)`` interpolated frame in ``[0, 1]``."""

    def __init__(self, corr_radius: int = 3, corr_levels: int = 4, num_flows: int = 3,
                 channels: tuple[int, int, int, int] = (20, 32, 44, 56), skip_channels: int = 20) -> None:
        super().__init__()
        self.radius, self.levels = corr_radius, corr_levels
        corr_planes = corr_levels * (2 * corr_radius + 1) ** 2
        self.feat_encoder = FeatureEncoder(84)
        self.encoder = ContextPyramid(channels)
        self.decoder4 = InitDecoder(channels[3], channels[2], skip_channels)
        self.decoder3 = IntermediateDecoder(channels[2], channels[1], skip_channels)
        self.decoder2 = IntermediateDecoder(channels[1], channels[0], skip_channels)
        self.decoder1 = MultiFlowDecoder(channels[0], skip_channels, num_flows)
        self.update4 = UpdateBlock(channels[2], corr_planes)
        self.update3 = UpdateBlock(channels[1], corr_planes, 2)
        self.update2 = UpdateBlock(channels[0], corr_planes, 4)
        self.comb_block = nn.Sequential(nn.Conv2d(3 * num_flows, 6 * num_flows, 3, 1, 1),
                                        nn.PReLU(6 * num_flows), nn.Conv2d(6 * num_flows, 3, 3, 1, 1))

    def _refine(self, update: UpdateBlock, corr: tuple[CorrPyramid, CorrPyramid], coord: torch.Tensor,
                flow0: torch.Tensor, flow1: torch.Tensor, feat: torch.Tensor, embt: torch.Tensor,
                downsample: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        small0, small1 = flow0, flow1
        if downsample != 1:
            small0 = _resize(flow0, 1 / downsample) / downsample
            small1 = _resize(flow1, 1 / downsample) / downsample
        # linear motion: the t->1 flow scaled by 1/t gives 0->1, the t->0 flow scaled by 1/(1-t) gives 1->0
        looked = torch.cat([corr[0](coord + small1 / embt), corr[1](coord + small0 / (1.0 - embt))], dim=1)
        delta_feat, delta_flow = update(feat, torch.cat([small0, small1], dim=1), looked)
        return flow0 + delta_flow[:, 0:2], flow1 + delta_flow[:, 2:4], feat + delta_feat

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: float = 0.5) -> torch.Tensor:
        if img0.shape[-2] % 16 or img0.shape[-1] % 16:
            raise ValueError(f"AMT needs frame sides that are multiples of 16, got {tuple(img0.shape[-2:])}")
        smallest = 8 * 2 ** self.levels  # the coarsest correlation level needs >= 2 cells per side
        if min(img0.shape[-2:]) < smallest:
            raise ValueError(f"AMT needs frames of at least {smallest} px per side, "
                             f"got {tuple(img0.shape[-2:])}")
        mean = torch.cat([img0, img1], dim=2).mean(dim=(1, 2, 3), keepdim=True)
        img0, img1 = img0 - mean, img1 - mean
        embt = torch.full((1, 1, 1, 1), t, device=img0.device, dtype=img0.dtype)
        b, _, h, w = img0.shape
        coord = coords_grid(b, h // 8, w // 8, img0.device).to(img0.dtype)
        fmap0, fmap1 = self.feat_encoder(torch.cat([img0, img1])).chunk(2)
        corr = (CorrPyramid(fmap0, fmap1, self.levels, self.radius),
                CorrPyramid(fmap1, fmap0, self.levels, self.radius))
        f0 = self.encoder(img0)
        f1 = self.encoder(img1)

        flow0, flow1, feat = self.decoder4(f0[3], f1[3], embt)
        flow0, flow1, feat = self._refine(self.update4, corr, coord, flow0, flow1, feat, embt, 1)
        flow0, flow1, feat = self.decoder3(feat, f0[2], f1[2], flow0, flow1)
        flow0, flow1, feat = self._refine(self.update3, corr, coord, flow0, flow1, feat, embt, 2)
        flow0, flow1, feat = self.decoder2(feat, f0[1], f1[1], flow0, flow1)
        flow0, flow1, feat = self._refine(self.update2, corr, coord, flow0, flow1, feat, embt, 4)
        flow0, flow1, mask, residual = self.decoder1(feat, f0[0], f1[0], flow0, flow1)
        return _combine(self.comb_block, img0, img1, flow0, flow1, mask, residual, mean).clamp(0, 1)


def _combine(comb_block: nn.Module, img0: torch.Tensor, img1: torch.Tensor, flow0: torch.Tensor,
             flow1: torch.Tensor, mask: torch.Tensor, residual: torch.Tensor,
             mean: torch.Tensor) -> torch.Tensor:
    """Blend the frames warped by each flow pair, average the candidates, add a learned correction."""
    b, c, h, w = flow0.shape
    n = c // 2
    candidates = []
    for k in range(n):
        warped0 = warp(img0, flow0[:, 2 * k:2 * k + 2])
        warped1 = warp(img1, flow1[:, 2 * k:2 * k + 2])
        m = mask[:, k:k + 1]
        candidates.append(m * warped0 + (1 - m) * warped1 + mean + residual[:, 3 * k:3 * k + 3])
    stacked = torch.stack(candidates, dim=1)
    return stacked.mean(dim=1) + comb_block(stacked.view(b, 3 * n, h, w))


def pad_to_16(*images: torch.Tensor) -> list[torch.Tensor]:
    """AMT's ``InputPadder`` (divisor 16): replicate-pad, the odd pixel at the end."""
    return pad_to_multiple(images, 16)


def load_amt(path: str | Path, device: str | torch.device = "cpu") -> AMT:
    """AMT-S from ``amt-s.pth`` (``{"state_dict": ...}`` or a bare state dict), strictly."""
    model = AMT()
    load_strict(model, read_state_dict(path, what=_WHAT, source=_SOURCE), path, what=_WHAT)
    return model.eval().to(device)
