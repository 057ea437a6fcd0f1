"""What every DisPose hybrid ControlNet shares, whatever its base animation UNet (paper sec. 4.3, Eq. 8).

A hybrid ControlNet is a trainable copy of the base UNet's encoder (time embeddings, ``conv_in``, down
blocks, mid block) with two guidance encoders and zero-initialised 1x1 output convolutions:

* the motion encoder (Eq. 5, :class:`~dispose.models.motion_encoder.MotionEncoder`, parameters under
  ``controlnet_cond_embedding.*``), whose output is added to the ``conv_in`` output;
* the point encoder (Eq. 7, :class:`~dispose.models.point_encoder.PointEncoder`, under
  ``point_adapter.*``), whose level ``l`` is added to the hidden state after down block ``l``;
* ``controlnet_down_blocks`` (one 1x1 conv per skip connection of the encoder: the ``conv_in`` output and
  every output of every down block) and ``controlnet_mid_block``; their outputs, times
  ``conditioning_scale``, are the residuals ``r`` of Eq. 8 that the frozen UNet adds to its skip
  connections and to its mid-block output.

:class:`HybridControlNetMixin` holds these shared parts (and reads their widths from a checkpoint) so the
SVD version (:class:`~dispose.models.controlnet_svd.HybridControlNetSVD`) and the SD1.5 version for MusePose
(:class:`~dispose.models.controlnet_sd.HybridControlNetSD`) differ only in their encoder blocks and time
conditioning.

The guidance encoders see only the guidance (flows, correspondence grids), never the noisy latent, the
timestep or the CFG half, so :meth:`HybridControlNetMixin.encode_guidance` can run them once per window
of frames and the result (:class:`EncodedGuidance`) be passed to every later forward call of that window
(same numbers; the release reruns them at every step for both CFG halves).

Paper vs release (we follow the release): the paper adds the point features "to the input of the
convolutional layer" of each block; the release adds them once after each down block, and because
the skip tensors are taken before that addition, level ``l`` reaches the residuals only through the
blocks after ``l`` (the last level only through the mid block).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from dispose.models.motion_encoder import MotionEncoder, zero_conv
from dispose.models.point_encoder import OccupiedCells, PointEncoder


def flatten_frames(tensor: torch.Tensor | None, name: str, batch: int, frames: int) -> torch.Tensor | None:
    """(B, T, ...) -> (B * T, ...), checking the leading dimensions."""
    if tensor is None:
        return None
    if tuple(tensor.shape[:2]) != (batch, frames):
        raise ValueError(f"{name}: expected leading dimensions (batch, frames) = {(batch, frames)}, got "
                         f"{tuple(tensor.shape)}")
    return tensor.flatten(0, 1)


@dataclass
class EncodedGuidance:
    """The guidance encoders' output for N frames: ``F_m`` and the point features ``F_c^l``.

    Attributes:
        frames: N.
        motion: (N, C_0, h, w) motion features, or None without flows.
        cells: the occupied cells of the correspondence grids, or None without points.
        levels: point features per level, (N, C_l, h_l, w_l), filled at each level's first use (its size is
            that of the hidden state it is added to) and reused by later calls.
    """

    frames: int
    motion: torch.Tensor | None
    cells: OccupiedCells | None
    levels: dict[int, torch.Tensor] = field(default_factory=dict)


def add_per_frame(hidden: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``hidden`` (B*N, C, h, w) plus per-frame ``features`` given for all B*N rows or for N frames (then
    the same for every batch element, broadcast without copies)."""
    features = features.to(hidden.dtype)
    if features.shape[0] == hidden.shape[0]:
        return hidden + features
    frames = features.shape[0]
    if hidden.shape[0] % frames:
        raise ValueError(f"guidance of {frames} frames does not fit a batch of {hidden.shape[0]} frames")
    return (hidden.unflatten(0, (-1, frames)) + features).flatten(0, 1)


class HybridControlNetMixin:
    """Builds and applies the guidance encoders and output convolutions of a hybrid ControlNet.

    The host class is an ``nn.Module`` whose encoder has ``down_blocks`` with diffusers' block layout
    (``resnets`` and optional ``downsamplers``); it calls :meth:`_build_hybrid_parts` in ``__init__``.
    """

    controlnet_cond_embedding: MotionEncoder
    point_adapter: PointEncoder
    controlnet_down_blocks: nn.ModuleList
    controlnet_mid_block: nn.Conv2d

    def _build_hybrid_parts(self, block_out_channels: Sequence[int], layers_per_block: Sequence[int],
                            point_channels: int, point_hidden_channels: int,
                            motion_block_out_channels: Sequence[int]) -> None:
        widths = tuple(block_out_channels)
        self.point_adapter = PointEncoder(point_channels, widths, point_hidden_channels)
        self.controlnet_cond_embedding = MotionEncoder(widths[0],
                                                       block_out_channels=motion_block_out_channels)
        convs = [zero_conv(widths[0], widths[0])]  # conv_in output
        for index, (width, layers) in enumerate(zip(widths, layers_per_block)):
            has_downsampler = index < len(widths) - 1
            convs += [zero_conv(width, width) for _ in range(layers + int(has_downsampler))]
        self.controlnet_down_blocks = nn.ModuleList(convs)
        self.controlnet_mid_block = zero_conv(widths[-1], widths[-1])

    def _copy_encoder(self, unet: nn.Module, parts: Iterable[tuple[nn.Module, nn.Module]],
                      leave_out: str | None = None):
        """Load each ``(ours, the UNet's)`` pair of ``parts`` strictly with the UNet part's weights (keys
        starting with ``leave_out`` left out), then move this ControlNet to the UNet's device and dtype;
        ``parts`` is read only after the check that the UNet holds weights (not the meta device)."""
        param = next(unet.parameters())
        if param.is_meta:
            raise ValueError("cannot copy weights from a UNet on the meta device; load its checkpoint first")
        for ours, theirs in parts:
            state = theirs.state_dict()
            if leave_out is not None:
                state = {key: value for key, value in state.items() if not key.startswith(leave_out)}
            ours.load_state_dict(state)
        # nn.Module.to: diffusers' ModelMixin.to logs a spurious fp32-modules warning on every dtype cast.
        return nn.Module.to(self, param.device, param.dtype)

    def _guidance_for(self, sample: torch.Tensor, guidance: EncodedGuidance | None,
                      **raw: torch.Tensor | None) -> tuple[int, int, EncodedGuidance]:
        """``(batch, frames, encoded guidance)`` of a forward call on ``sample`` (B, T, C, h, w): ``guidance``
        as given (checked to cover T or B*T frames), or the ``raw`` per-frame tensors (``sparse_flow``,
        ``dense_flow``, ``point_features``, ``point_mask``; (B, T, ...)) encoded now; not both."""
        if sample.dim() != 5:
            raise ValueError(f"sample: expected (batch, frames, channels, height, width), got "
                             f"{tuple(sample.shape)}")
        batch, frames = sample.shape[:2]
        if guidance is None:
            return batch, frames, self.encode_guidance(
                **{name: flatten_frames(tensor, name, batch, frames) for name, tensor in raw.items()})
        if any(tensor is not None for tensor in raw.values()):
            raise ValueError("give either the raw guidance tensors or their encoding (guidance=...), "
                             "not both")
        if guidance.frames not in (frames, batch * frames):
            raise ValueError(f"encoded guidance covers {guidance.frames} frames, the sample has "
                             f"{batch} x {frames}")
        return batch, frames, guidance

    @staticmethod
    def options_from_state_dict(state: dict[str, torch.Tensor]) -> dict:
        """The DisPose-specific constructor arguments (``point_channels``, ``point_hidden_channels``,
        ``motion_block_out_channels``) implied by a checkpoint's tensor shapes (defaults for whatever is
        absent; a checkpoint that lacks those keys then fails the strict load, naming them)."""
        options = {}
        first = state.get("point_adapter.model_list.0.mlp.0.weight")
        if first is not None:
            options["point_hidden_channels"], options["point_channels"] = first.shape
        widths = []
        conv = state.get("controlnet_cond_embedding.conv_in_flow.weight")
        index = 1
        while conv is not None:
            widths.append(conv.shape[0])
            conv = state.get(f"controlnet_cond_embedding.blocks_flow.{index}.weight")
            index += 2
        if widths:
            options["motion_block_out_channels"] = tuple(widths)
        return options

    @apply_forward_hook  # under model CPU offload, moves the ControlNet in as its forward would
    def encode_guidance(self, sparse_flow: torch.Tensor | None = None, dense_flow: torch.Tensor | None = None,
                        point_features: torch.Tensor | None = None,
                        point_mask: torch.Tensor | None = None) -> EncodedGuidance:
        """Run the guidance encoders on per-frame inputs: flows (N, 2, H, W) (a single missing one counts as
        zero), correspondence grids (N, C_p, H/16, W/16) and their masks (N, H/16, W/16).  The result can be
        reused for any number of forward calls over those N frames (any batch, timestep, CFG half)."""
        frames = next((t.shape[0] for t in (sparse_flow, dense_flow, point_features) if t is not None), 0)
        motion = None
        if sparse_flow is not None or dense_flow is not None:
            if sparse_flow is None:
                sparse_flow = torch.zeros_like(dense_flow)
            if dense_flow is None:
                dense_flow = torch.zeros_like(sparse_flow)
            motion = self.controlnet_cond_embedding(sparse_flow, dense_flow)
        cells = None
        if point_features is not None:
            if point_mask is None:
                raise ValueError("point_features given without point_mask")
            if point_features.shape[0] != frames:
                raise ValueError(f"point_features cover {point_features.shape[0]} frames, the flows {frames}")
            cells = self.point_adapter.gather(point_features, point_mask)
        return EncodedGuidance(frames, motion, cells)

    def add_motion(self, hidden: torch.Tensor, guidance: EncodedGuidance | None) -> torch.Tensor:
        """The ``conv_in`` output plus ``F_m`` (Eq. 5)."""
        if guidance is None or guidance.motion is None:
            return hidden
        return add_per_frame(hidden, guidance.motion)

    def add_point_level(self, hidden: torch.Tensor, level: int,
                        guidance: EncodedGuidance | None) -> torch.Tensor:
        """Hidden state after down block ``level`` plus that level's point features (Eq. 7)."""
        if guidance is None or guidance.cells is None:
            return hidden
        size = tuple(hidden.shape[-2:])
        features = guidance.levels.get(level)
        if features is None or tuple(features.shape[-2:]) != size:
            features = self.point_adapter.level(level, guidance.cells, size)
            guidance.levels[level] = features
        return add_per_frame(hidden, features)

    def output_residuals(self, skips: Sequence[torch.Tensor], mid: torch.Tensor,
                         conditioning_scale: float) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The residuals ``r`` of Eq. 8: zero convs of the skips and the mid-block output, scaled."""
        if len(skips) != len(self.controlnet_down_blocks):
            raise RuntimeError(f"the encoder produced {len(skips)} skip tensors, the ControlNet has "
                               f"{len(self.controlnet_down_blocks)} output convolutions")
        down = tuple(conv(skip) * conditioning_scale
                     for conv, skip in zip(self.controlnet_down_blocks, skips))
        return down, self.controlnet_mid_block(mid) * conditioning_scale
