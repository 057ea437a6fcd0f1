"""LPIPS (Zhang et al. 2018) without torchvision: AlexNet / VGG-16 features in plain PyTorch.

``LPIPS(x, y) = sum_l mean_hw( w_l . (f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)|)^2 )`` over five ReLU
layers of the backbone, with inputs in ``[-1, 1]`` first shifted/scaled by the LPIPS constants
(shift ``(-.030, -.088, -.188)``, scale ``(.458, .448, .450)``) and channel-unit-normalised
features (``eps = 1e-10``), exactly as the ``lpips`` package (v0.1) computes it.

Weights come from two local files, both loaded strictly:

* the backbone: a torchvision ``alexnet``/``vgg16`` ImageNet state dict (``features.N.weight``...).
  Every ``features.*`` tensor must be present with the right shape; the classifier head
  (``classifier.*``), which LPIPS does not use, is dropped explicitly and any other key is an error;
* the linear heads: the ``lpips`` package's ``lpips/weights/v0.1/{alex,vgg}.pth``
  (keys ``lin{0..4}.model.1.weight``, shape ``(1, C, 1, 1)``; ``lin{0..4}.weight`` also accepted).

Layer cuts (torchvision ``features`` indices): AlexNet relu1..relu5 = ``[0:2], [2:5], [5:8], [8:10],
[10:12]``; VGG-16 relu1_2..relu5_3 = ``[0:4], [4:9], [9:16], [16:23], [23:30]``.

Checked against the ``lpips`` package (0.1.4) on the same backbone weights and its shipped heads:
identical distances for AlexNet and VGG (``bench/eval_lpips_vs_reference.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from dispose.checkpoints import load_strict, read_state_dict

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
_CUTS = {"alex": (2, 5, 8, 10, 12), "vgg": (4, 9, 16, 23, 30)}
_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}


def _alexnet_features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
    )


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """LPIPS distance; ``forward(x, y)`` on ``(B, 3, H, W)`` in ``[-1, 1]`` returns ``(B,)``."""

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in _CUTS:
            raise ValueError(f"LPIPS backbone must be 'alex' or 'vgg', got {net!r}")
        self.net = net
        self.features = _alexnet_features() if net == "alex" else _vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS[net])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps, start = [], 0
        for stop in _CUTS[self.net]:
            x = self.features[start:stop](x)
            taps.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
            start = stop
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self._taps((x - self.shift) / self.scale)
        fy = self._taps((y - self.shift) / self.scale)
        return sum(lin((a - b) ** 2).mean(dim=(1, 2, 3)) for lin, a, b in zip(self.lins, fx, fy, strict=True))


def load_lpips(backbone: str | Path, heads: str | Path, net: str = "alex",
               device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS with a torchvision backbone state dict and the lpips v0.1 linear-head file (both strict)."""
    model = LPIPS(net)
    what = f"a torchvision {'alexnet' if net == 'alex' else 'vgg16'} state dict"
    state = read_state_dict(backbone, what=what, source="https://download.pytorch.org/models")
    load_strict(nn.ModuleDict({"features": model.features}),
                {k: v for k, v in state.items() if not k.startswith("classifier.")}, backbone, what=what)
    what = f"an lpips v0.1 {net}.pth linear-head file"
    state = read_state_dict(heads, what=what, source="the lpips package (lpips/weights/v0.1/)")
    load_strict(nn.ModuleDict({f"lin{i}": lin for i, lin in enumerate(model.lins)}),
                {k.replace(".model.1.", "."): v for k, v in state.items()}, heads, what=what)
    return model.eval().to(device)


def frames_to_lpips_input(frames: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) numpy frames -> float (N, 3, H, W) in ``[-1, 1]``."""
    tensor = torch.as_tensor(frames, device=device).permute(0, 3, 1, 2).float()
    return tensor / 127.5 - 1.0


def lpips_distance(model: LPIPS, pred: np.ndarray, gt: np.ndarray, batch: int = 8) -> list[float]:
    """Per-frame LPIPS between two uint8 (N, H, W, 3) arrays."""
    device = model.shift.device
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(pred), batch):
            d = model(frames_to_lpips_input(pred[i:i + batch], device),
                      frames_to_lpips_input(gt[i:i + batch], device))
            out.extend(float(v) for v in d.float().cpu())
    return out


class LpipsMeans:
    """A video's mean LPIPS, fed one frame pair at a time (``batch`` pairs are held at most)."""

    def __init__(self, model: LPIPS, batch: int = 8) -> None:
        self.model, self.batch, self.values = model, batch, []
        self._pred: list[np.ndarray] = []
        self._gt: list[np.ndarray] = []

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self._pred.append(pred)
        self._gt.append(gt)
        if len(self._pred) == self.batch:
            self._flush()

    def _flush(self) -> None:
        if self._pred:
            self.values.extend(lpips_distance(self.model, np.stack(self._pred), np.stack(self._gt),
                                              self.batch))
            self._pred, self._gt = [], []

    def result(self) -> float:
        self._flush()
        return float(np.mean(self.values))


__all__ = ["LPIPS", "LpipsMeans", "load_lpips", "lpips_distance"]
