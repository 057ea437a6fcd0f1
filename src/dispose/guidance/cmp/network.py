"""Conditional Motion Propagation network (Zhan et al., CVPR 2019), the configuration DisPose uses.

DisPose (paper sec. 4.1) predicts the dense motion field ``F_d = CMP(P_d, I_ref)`` with the public CMP
model ``semiauto_annot/resnet50_vip+mpii_liteflow`` (checkpoint ``ckpt_iter_42000.pth.tar``).  Its
configuration, reproduced by :class:`CMPConfig`'s defaults:

* image encoder: dilated ResNet-50, output stride 8, 1x1 ``conv5`` to ``img_enc_dim=256`` channels
  (:mod:`dispose.guidance.cmp.resnet`);
* sparse-motion encoder ``shallownet8x``: the 4-channel input ``[sparse flow (2), mask (2)]`` goes through
  conv5x5/2 (16) -> BN -> ReLU -> maxpool 2 -> conv3x3 (``sparse_enc_dim=16``) -> BN -> ReLU -> avgpool 2,
  also 1/8 of the input;
* decoder ``MotionDecoderSkipLayer`` on the concatenation (272 channels): four propagation branches at
  1, 1/2, 1/4 and 1/8 of the feature resolution (max-pool, then three conv3x3-BN-ReLU of 128 channels),
  bilinearly upsampled back (``align_corners=True``), fused (512 -> 256), then two skip-fusion steps with
  ``layer1`` (1/4 of the image) and the stem (1/2 of the image), and a 1x1 head with ``output_dim=198``
  channels at half the input resolution;
* the 198 channels are two sets of ``nbins=99`` logits (x bins first, then y bins) over
  ``[-fmax, fmax] = [-50, 50]`` pixels: bin ``i`` has centre ``-fmax + (i + 0.5) * 2 fmax / nbins``.
  :class:`FlowBinFuser` turns them into flow as the softmax-weighted mean of the bin centres (the
  expectation, not the arg-max), exactly like the release's ``Fuser.convert_flow``.  So a predicted flow
  component is always inside ``(-49.5, 49.5)`` pixels.

Attribute names match the checkpoint (after its ``module.`` wrapper prefix is stripped, see
:mod:`dispose.guidance.cmp.checkpoint`); ``nn.Sequential`` indices are kept where the checkpoint needs
them.

Difference from the release (exact in value): :meth:`CMP.encode_image` and :meth:`CMP.decode` are split so
the reference image is encoded once and its features broadcast over all frames; the release re-encodes
the same reference image for every frame.  BatchNorm runs in eval mode, so this is the same computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dispose.guidance.cmp.resnet import ResNet50Encoder


@dataclass(frozen=True)
class CMPConfig:
    """Hyper-parameters of ``semiauto_annot/resnet50_vip+mpii_liteflow/config.yaml``."""

    img_enc_dim: int = 256
    sparse_enc_dim: int = 16
    nbins: int = 99
    fmax: float = 50.0

    @property
    def output_dim(self) -> int:
        return 2 * self.nbins


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


def _propagation_branch(in_channels: int, pool: int) -> nn.Sequential:
    """(max-pool by ``pool``) + three conv3x3-BN-ReLU layers of 128 channels."""
    layers: list[nn.Module] = [nn.MaxPool2d(kernel_size=pool, stride=pool)] if pool > 1 else []
    layers += _conv_bn_relu(in_channels, 128) + _conv_bn_relu(128, 128) + _conv_bn_relu(128, 128)
    return nn.Sequential(*layers)


class SparseFlowEncoder(nn.Module):
    """``shallownet8x``: encodes ``[sparse flow, mask]`` (4 channels) to 1/8 resolution."""

    def __init__(self, output_dim: int = 16, in_channels: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=5, stride=2, padding=2),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(16, output_dim, kernel_size=3, padding=1),
            nn.BatchNorm2d(output_dim),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(kernel_size=2, stride=2),
        )

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        return self.features(sparse)


class MotionDecoderSkipLayer(nn.Module):
    """Multi-scale propagation decoder with skip connections to the image encoder's early features."""

    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.decoder1 = _propagation_branch(input_dim, 1)
        self.decoder2 = _propagation_branch(input_dim, 2)
        self.decoder4 = _propagation_branch(input_dim, 4)
        self.decoder8 = _propagation_branch(input_dim, 8)
        self.fusion8 = nn.Sequential(*_conv_bn_relu(4 * 128, 256))
        self.skipconv4 = nn.Sequential(*_conv_bn_relu(256, 128))
        self.fusion4 = nn.Sequential(*_conv_bn_relu(256 + 128, 128))
        self.skipconv2 = nn.Sequential(*_conv_bn_relu(64, 32))
        self.fusion2 = nn.Sequential(*_conv_bn_relu(128 + 32, 64))
        self.head = nn.Conv2d(64, output_dim, kernel_size=1)

    @staticmethod
    def _upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        _, stem, layer1 = skips  # the raw image (first skip) is not used by this decoder
        x1 = self.decoder1(x)
        branches = [x1] + [self._upsample(branch(x), x1)
                           for branch in (self.decoder2, self.decoder4, self.decoder8)]
        f8 = self.fusion8(torch.cat(branches, dim=1))
        f4 = self.fusion4(torch.cat([self._upsample(f8, layer1), self.skipconv4(layer1)], dim=1))
        f2 = self.fusion2(torch.cat([self._upsample(f4, stem), self.skipconv2(stem)], dim=1))
        return self.head(f2)


class FlowBinFuser(nn.Module):
    """Discrete flow logits ``(B, 2*nbins, h, w)`` -> flow ``(B, 2, h, w)`` by softmax expectation.

    Computed in float32 whatever the logits' dtype (the release runs the softmax in the network's
    half precision; float32 only removes rounding).
    """

    def __init__(self, nbins: int, fmax: float) -> None:
        super().__init__()
        self.nbins = nbins
        self.fmax = fmax

    def bin_centres(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """float32 ``(nbins,)``: ``-fmax + (i + 0.5) * 2 fmax / nbins``."""
        step = 2.0 * self.fmax / self.nbins
        return -self.fmax + step * (torch.arange(self.nbins, dtype=torch.float32, device=device) + 0.5)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        b, c, h, w = logits.shape
        if c != 2 * self.nbins:
            raise ValueError(f"expected {2 * self.nbins} flow logits, got {c}")
        prob = logits.float().view(b, 2, self.nbins, h, w).softmax(dim=2)
        return torch.einsum("bknhw,n->bkhw", prob, self.bin_centres(prob.device))


class CMP(nn.Module):
    """CMP: ``(image, [sparse flow, mask]) -> dense flow``; see the module docstring for the layout."""

    def __init__(self, config: CMPConfig | None = None) -> None:
        super().__init__()
        self.config = config or CMPConfig()
        cfg = self.config
        self.image_encoder = ResNet50Encoder(cfg.img_enc_dim)
        self.flow_encoder = SparseFlowEncoder(cfg.sparse_enc_dim)
        self.flow_decoder = MotionDecoderSkipLayer(cfg.img_enc_dim + cfg.sparse_enc_dim, cfg.output_dim)
        self.fuser = FlowBinFuser(cfg.nbins, cfg.fmax)

    def encode_image(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Image ``(B, 3, H, W)`` (already normalised) -> ``(features 1/8, skip features)``."""
        return self.image_encoder(image)

    def decode(self, image_features: tuple[torch.Tensor, list[torch.Tensor]],
               sparse: torch.Tensor) -> torch.Tensor:
        """Flow logits ``(B, 2*nbins, H/2, W/2)`` from encoded image(s) and ``sparse = [flow, mask]``.

        Image features with batch 1 are broadcast over the batch of ``sparse``.
        """
        feats, skips = image_features
        n = sparse.shape[0]
        if feats.shape[0] != n:
            feats = feats.expand(n, -1, -1, -1)
            skips = [s.expand(n, -1, -1, -1) for s in skips]
        fused = torch.cat([feats, self.flow_encoder(sparse)], dim=1)
        return self.flow_decoder(fused, skips)

    def forward(self, image: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """Flow logits, as the release's ``CMP.forward`` (the module inside its ``module.`` wrapper)."""
        return self.decode(self.encode_image(image), sparse)

    def predict_flow(self, image_features: tuple[torch.Tensor, list[torch.Tensor]],
                     sparse: torch.Tensor) -> torch.Tensor:
        """Dense flow ``(B, 2, H, W)`` float32 in input pixels: fuse the bins at H/2, then upsample.

        As the release: expectation over bins at half resolution, then bilinear upsampling of the flow
        (``align_corners=True``) to the input size with no value rescaling (CMP is trained with targets in
        full-resolution pixels).
        """
        size = image_features[1][0].shape[-2:]
        flow = self.fuser(self.decode(image_features, sparse))
        if flow.shape[-2:] != size:
            flow = F.interpolate(flow, size=size, mode="bilinear", align_corners=True)
        return flow
