"""MimicMotion's denoising UNet: SVD's ``UNetSpatioTemporalConditionModel`` plus pose latents and ControlNet
residuals (paper Fig. 2(e): the frozen animation model that DisPose's hybrid ControlNet steers).

:class:`MimicMotionUNet` is a thin subclass of diffusers' class: the parameters, their names and the
forward computation are diffusers'; three hooks (installed at the first call, idle outside
:meth:`MimicMotionUNet.forward`) add

* ``pose_latents`` (PoseNet output, (B*T, 320, h, w)) to the output of ``conv_in`` (MimicMotion);
* the ControlNet's down residuals to the skip tensors handed to the up blocks, and the mid residual to
  the mid block's output (DisPose).

Residual accounting (``residual_mode``):

* ``"release"`` (default): the release's UNet (``mimicmotion/modules/unet.py`` of DisPose) adds the
  residuals inside its down-block loop to every skip collected so far, so skip ``i`` receives its
  residual once per down block that runs after it was created: for SVD residuals 0-3 four times, 4-6
  three times, 7-9 twice, 10-11 once; the mid residual once.  DisPose.pth was trained with it.  The
  additions are done one after another as there (``((s + r) + r) + r``), so fp16 rounding matches too.
* ``"paper"``: each residual added once (ControlNet's usual scheme, as Eq. 8 describes).

In both modes the residuals change only the skip connections read by the up blocks, never the
hidden states flowing through the encoder (as in the release).

``MimicMotion_1-1.pth`` holds this UNet's weights under ``unet.*`` (names as diffusers') next to
``pose_net.*`` (:mod:`dispose.models.pose_net`); see :mod:`dispose.bases.mimicmotion.weights`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import UNetSpatioTemporalConditionModel

ResidualMode = Literal["release", "paper"]

#: ``unet/config.json`` of stabilityai/stable-video-diffusion-img2vid-xt-1-1 (the MimicMotion 1.1 base).
SVD_XT_UNET_CONFIG = {
    "sample_size": 96, "in_channels": 8, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
    "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
    "block_out_channels": [320, 640, 1280, 1280], "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 768, "layers_per_block": 2, "cross_attention_dim": 1024,
    "transformer_layers_per_block": 1, "num_attention_heads": [5, 10, 20, 20], "num_frames": 25,
}


@dataclass
class _Conditioning:
    """What one forward call adds: pose latents, (residual, additions) per skip (consumed), mid residual."""

    pose_latents: torch.Tensor | None
    down: list[tuple[torch.Tensor, int]] | None
    mid: torch.Tensor | None


def skip_counts(down_blocks: Sequence[torch.nn.Module], mode: ResidualMode) -> list[int]:
    """How many times each skip tensor receives its residual: conv_in output first, then each block's
    resnet outputs and downsampler output, in the order the encoder produces them."""
    if mode not in ("release", "paper"):
        raise ValueError(f"residual_mode must be 'release' or 'paper', got {mode!r}")
    per_block = [len(block.resnets) + (1 if getattr(block, "downsamplers", None) else 0)
                 for block in down_blocks]
    num_blocks = len(per_block)
    counts = [num_blocks]  # the conv_in output exists before the first block ends
    for index, produced in enumerate(per_block):
        counts += [num_blocks - index] * produced
    return counts if mode == "release" else [1] * len(counts)


class MimicMotionUNet(UNetSpatioTemporalConditionModel):
    """``UNetSpatioTemporalConditionModel`` with ``pose_latents`` and ControlNet residuals (module docstring).

    Same constructor and config as diffusers' class; the residual accounting is an attribute,
    ``residual_mode`` ("release" by default), set with :meth:`set_residual_mode`.
    """

    residual_mode: ResidualMode = "release"

    def set_residual_mode(self, mode: ResidualMode) -> None:
        """Switch between the release's repeated additions and the paper's single addition."""
        skip_counts(self.down_blocks, mode)  # validates
        self.residual_mode = mode

    @property
    def residual_counts(self) -> list[int]:
        """Additions of each down residual in the current mode."""
        return skip_counts(self.down_blocks, self.residual_mode)

    def _install_hooks(self) -> None:
        """Hooks that apply the conditioning of the running call (``self._pending``); installed once, so
        their identity stays stable (``torch.compile`` guards on it)."""
        self._pending: _Conditioning | None = None
        self.conv_in.register_forward_hook(self._add_pose_latents)
        for block in self.up_blocks:
            block.register_forward_pre_hook(self._add_skip_residuals, with_kwargs=True)
        self.mid_block.register_forward_hook(self._add_mid_residual)
        self._hooks_installed = True

    def _add_pose_latents(self, _module, _args, output: torch.Tensor) -> torch.Tensor:
        pending = self._pending
        return output if pending is None or pending.pose_latents is None else output + pending.pose_latents

    def _add_skip_residuals(self, _module, args, kwargs):
        pending = self._pending
        if pending is None or not pending.down:
            return None
        skips = kwargs["res_hidden_states_tuple"]
        taken = pending.down[len(pending.down) - len(skips):]  # the up blocks read the skips backwards
        del pending.down[len(pending.down) - len(skips):]
        updated = []
        for skip, (residual, count) in zip(skips, taken):
            for _ in range(count):
                skip = skip + residual
            updated.append(skip)
        return args, {**kwargs, "res_hidden_states_tuple": tuple(updated)}

    def _add_mid_residual(self, _module, _args, output: torch.Tensor) -> torch.Tensor:
        pending = self._pending
        return output if pending is None or pending.mid is None else output + pending.mid

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float,
                encoder_hidden_states: torch.Tensor, added_time_ids: torch.Tensor,
                pose_latents: torch.Tensor | None = None,
                down_block_additional_residuals: Sequence[torch.Tensor] | None = None,
                mid_block_additional_residual: torch.Tensor | None = None, return_dict: bool = True):
        """diffusers' forward with ``pose_latents`` (B*T, C0, h, w) added after ``conv_in`` and the
        ControlNet's residuals (one per skip connection, plus the mid one) added as the release does
        (class docstring)."""
        if not getattr(self, "_hooks_installed", False):
            self._install_hooks()
        down = None
        if down_block_additional_residuals is not None:
            counts = self.residual_counts
            if len(down_block_additional_residuals) != len(counts):
                raise ValueError(f"expected {len(counts)} down residuals, "
                                 f"got {len(down_block_additional_residuals)}")
            down = list(zip(down_block_additional_residuals, counts))
        self._pending = _Conditioning(pose_latents, down, mid_block_additional_residual)
        try:
            return super().forward(sample, timestep, encoder_hidden_states, added_time_ids,
                                   return_dict=return_dict)
        finally:
            self._pending = None
