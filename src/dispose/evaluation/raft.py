"""RAFT optical flow (Teed & Deng 2020) in plain PyTorch, for VBench's dynamic degree.

Layout and parameter names follow the official RAFT (full model, not "small") so that the
``raft-things.pth`` checkpoint VBench uses loads strictly (its ``module.`` prefix from
``DataParallel`` is stripped): feature encoder with instance norm (``fnet``), context encoder with
batch norm (``cnet``), 4-level correlation pyramid with radius 4, separable ConvGRU update block,
convex 8x upsampling.  Inputs are 0..255 RGB; :func:`raft_flow` pads to a multiple of 8 with
RAFT's ``InputPadder`` ("sintel" mode: replicate, split evenly) and runs 20 iterations, as VBench
does, returning the flow of the *padded* frame (VBench scores the padded flow).

Reproduced quirk: the correlation look-up window offsets are built from ``meshgrid(dy, dx)``, so
the first window axis shifts the x coordinate (the official code's order).

Checked against RAFT's own class (VBench's copy, BSD-3) with one random state dict: identical
20-iteration flow on dancer frames (``bench/eval_raft_vs_reference.py`` prints the largest difference).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dispose.checkpoints import load_strict, read_state_dict, strip_prefix

_WHAT = "a RAFT (full, raft-things) checkpoint"
_SOURCE = "https://github.com/princeton-vl/RAFT (models.zip: raft-things.pth)"


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.InstanceNorm2d(channels)


class ResidualBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, norm: str, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.norm1, self.norm2 = _norm(norm, planes), _norm(norm, planes)
        self.downsample = None
        if stride != 1:
            self.norm3 = _norm(norm, planes)  # shared with downsample[1], as in the checkpoint
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x))))))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


class BasicEncoder(nn.Module):
    def __init__(self, output_dim: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.norm1 = _norm(norm, 64)
        self.layer1 = nn.Sequential(ResidualBlock(64, 64, norm), ResidualBlock(64, 64, norm))
        self.layer2 = nn.Sequential(ResidualBlock(64, 96, norm, 2), ResidualBlock(96, 96, norm))
        self.layer3 = nn.Sequential(ResidualBlock(96, 128, norm, 2), ResidualBlock(128, 128, norm))
        self.conv2 = nn.Conv2d(128, output_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class MotionEncoder(nn.Module):
    def __init__(self, corr_planes: int) -> None:
        super().__init__()
        self.convc1 = nn.Conv2d(corr_planes, 256, 1)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(64 + 192, 128 - 2, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc2(F.relu(self.convc1(corr))))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat([F.relu(self.conv(torch.cat([cor, flo], dim=1))), flow], dim=1)


class SepConvGRU(nn.Module):
    def __init__(self, hidden: int = 128, inputs: int = 256) -> None:
        super().__init__()
        both = hidden + inputs
        for suffix, kernel, pad in (("1", (1, 5), (0, 2)), ("2", (5, 1), (2, 0))):
            for gate in ("z", "r", "q"):
                setattr(self, f"conv{gate}{suffix}", nn.Conv2d(both, hidden, kernel, padding=pad))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for suffix in ("1", "2"):
            hx = torch.cat([h, x], dim=1)
            z = torch.sigmoid(getattr(self, f"convz{suffix}")(hx))
            r = torch.sigmoid(getattr(self, f"convr{suffix}")(hx))
            q = torch.tanh(getattr(self, f"convq{suffix}")(torch.cat([r * h, x], dim=1)))
            h = (1 - z) * h + z * q
        return h


class FlowHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(128, 256, 3, padding=1)
        self.conv2 = nn.Conv2d(256, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    def __init__(self, corr_planes: int) -> None:
        super().__init__()
        self.encoder = MotionEncoder(corr_planes)
        self.gru = SepConvGRU(128, 128 + 128)
        self.flow_head = FlowHead()
        self.mask = nn.Sequential(nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 64 * 9, 1))

    def forward(self, net: torch.Tensor, inp: torch.Tensor, corr: torch.Tensor,
                flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        net = self.gru(net, torch.cat([inp, self.encoder(flow, corr)], dim=1))
        return net, 0.25 * self.mask(net), self.flow_head(net)


def coords_grid(batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device),
                            indexing="ij")
    return torch.stack([xs, ys]).float().unsqueeze(0).expand(batch, -1, -1, -1)


class CorrPyramid:
    """All-pairs correlation volume, average-pooled into ``levels`` levels, sampled in a window."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, levels: int = 4, radius: int = 4) -> None:
        b, c, h, w = fmap1.shape
        corr = torch.einsum("bci,bcj->bij", fmap1.flatten(2), fmap2.flatten(2)) / c ** 0.5
        corr = corr.reshape(b * h * w, 1, h, w)
        self.pyramid = [corr]
        for _ in range(levels - 1):
            corr = F.avg_pool2d(corr, 2, stride=2)
            self.pyramid.append(corr)
        self.radius = radius
        steps = torch.linspace(-radius, radius, 2 * radius + 1, device=fmap1.device)
        first, second = torch.meshgrid(steps, steps, indexing="ij")
        self.delta = torch.stack([first, second], dim=-1).view(1, 2 * radius + 1, 2 * radius + 1, 2)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        b, _, h, w = coords.shape
        centre = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
        out = []
        for level, corr in enumerate(self.pyramid):
            points = centre / 2 ** level + self.delta
            height, width = corr.shape[-2:]
            grid = torch.stack([2 * points[..., 0] / (width - 1) - 1, 2 * points[..., 1] / (height - 1) - 1],
                               -1)
            sampled = F.grid_sample(corr, grid, align_corners=True)
            out.append(sampled.view(b, h, w, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous().float()


class RAFT(nn.Module):
    """``forward(image1, image2) -> flow (B, 2, H, W)``; images 0..255, H and W multiples of 8."""

    def __init__(self, levels: int = 4, radius: int = 4) -> None:
        super().__init__()
        self.levels, self.radius = levels, radius
        self.fnet = BasicEncoder(256, "instance")
        self.cnet = BasicEncoder(256, "batch")
        self.update_block = UpdateBlock(levels * (2 * radius + 1) ** 2)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iters: int = 20) -> torch.Tensor:
        smallest = 8 * 2 ** self.levels  # the coarsest correlation level needs >= 2 cells per side
        if min(image1.shape[-2:]) < smallest:
            raise ValueError(f"RAFT needs frames of at least {smallest} px per side, "
                             f"got {tuple(image1.shape[-2:])}")
        image1, image2 = 2 * (image1 / 255.0) - 1, 2 * (image2 / 255.0) - 1
        fmap1, fmap2 = self.fnet(torch.cat([image1, image2])).float().chunk(2)
        corr = CorrPyramid(fmap1, fmap2, self.levels, self.radius)
        net, inp = self.cnet(image1).split([128, 128], dim=1)
        net, inp = torch.tanh(net), F.relu(inp)
        b, _, h, w = fmap1.shape
        coords0 = coords_grid(b, h, w, image1.device)
        coords1 = coords0.clone()
        mask = None
        for _ in range(iters):
            net, mask, delta = self.update_block(net, inp, corr(coords1), coords1 - coords0)
            coords1 = coords1 + delta
        return _upsample(coords1 - coords0, mask)


def _upsample(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Convex 8x upsampling: each fine pixel is a softmax-weighted mix of a 3x3 coarse neighbourhood."""
    n, _, h, w = flow.shape
    weights = torch.softmax(mask.view(n, 1, 9, 8, 8, h, w), dim=2)
    patches = F.unfold(8 * flow, [3, 3], padding=1).view(n, 2, 9, 1, 1, h, w)
    up = (weights * patches).sum(dim=2).permute(0, 1, 4, 2, 5, 3)
    return up.reshape(n, 2, 8 * h, 8 * w)


def pad_to_multiple(images: tuple[torch.Tensor, ...] | list[torch.Tensor],
                    divisor: int) -> list[torch.Tensor]:
    """RAFT's ``InputPadder`` ("sintel" mode; AMT's is the same): replicate-pad H and W to multiples of
    ``divisor``, half of the padding on each side (the odd pixel at the end)."""
    h, w = images[0].shape[-2:]
    pad_h, pad_w = (-h) % divisor, (-w) % divisor
    pads = [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]
    return [F.pad(x, pads, mode="replicate") for x in images]


def pad_to_8(*images: torch.Tensor) -> list[torch.Tensor]:
    """RAFT's padding to multiples of 8."""
    return pad_to_multiple(images, 8)


def load_raft(path: str | Path, device: str | torch.device = "cpu") -> RAFT:
    """RAFT from ``raft-things.pth`` (strict; a ``module.`` prefix is stripped, absent BatchNorm step
    counters are filled: they are unused at inference)."""
    state, prefix = strip_prefix(read_state_dict(path, what=_WHAT, source=_SOURCE), "module.", path)
    model = RAFT()
    load_strict(model, state, path, what=_WHAT, file_prefix=prefix, fill_batchnorm_counters=True)
    return model.eval().to(device)
