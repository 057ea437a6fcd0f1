"""MusePose's denoising UNet: SD1.5 2D blocks applied per frame plus temporal motion modules.

MusePose (``musepose/models/unet_3d.py``, Moore-AnimateAnyone's ``UNet3DConditionModel``) inflates the
SD1.5 UNet of ``sd-image-variations-diffusers`` (CLIP image embeddings as cross-attention context, width 768)
to video: every convolution, GroupNorm (``use_inflated_groupnorm``) and spatial transformer runs on each
frame alone, and a motion module (:mod:`.motion_module`) follows every spatial block in all down, mid and
up blocks.  The pose guider's features are added to the ``conv_in`` output; ControlNet residuals (DisPose)
are added to the skip connections and to the mid-block output, as diffusers' UNets do.

Built on diffusers' :class:`~diffusers.models.unets.unet_motion_model.UNetMotionModel`, whose module tree
has the release's 2D parameter names (``denoising_unet.pth`` loads key for key) and AnimateDiff's motion
modules under other names (:mod:`.motion_module` has the map).  Its forward is replaced by
:meth:`MusePoseDenoisingUNet.forward`, which adds the pose features and repeats the CLIP context per frame;
its motion modules are :class:`~.motion_module.MusePoseMotionModule` (per-frame GroupNorm, as the release).

Input layout (the release's): sample (B, C, F, h, w); inside, frames are flattened batch-major to
(B*F, C, h, w), the layout of the ControlNet residuals.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import torch
from diffusers.models.unets.unet_motion_model import (
    AnimateDiffTransformer3D,
    UNetMotionModel,
    UNetMotionOutput,
)

from dispose.models.musepose.motion_module import adopt_motion_module

#: Motion-module settings of MusePose's ``configs/inference_v2.yaml``.
MOTION_SETTINGS = {"motion_num_attention_heads": 8, "motion_max_seq_length": 128,
                   "use_motion_mid_block": True}
#: SD UNet config entries that must have the value the release's 3D UNet supports.
_FIXED = {"flip_sin_to_cos": True, "freq_shift": 0, "center_input_sample": False, "class_embed_type": None,
          "num_class_embeds": None, "only_cross_attention": False, "dual_cross_attention": False,
          "upcast_attention": False, "resnet_time_scale_shift": "default"}


def motion_config_from_sd(sd_config: Mapping, **motion) -> dict:
    """:class:`MusePoseDenoisingUNet` config from an SD1.5 ``unet/config.json`` (as the release's
    ``from_pretrained_2d`` inflates it) plus motion-module settings (default :data:`MOTION_SETTINGS`)."""
    for key, value in _FIXED.items():
        if sd_config.get(key, value) != value:
            raise ValueError(f"UNet config {key}={sd_config[key]!r} is not supported by MusePose's 3D UNet "
                             f"(expected {value!r})")
    count = len(sd_config.get("block_out_channels", (320, 640, 1280, 1280)))
    config = {key: sd_config[key] for key in ("sample_size", "in_channels", "out_channels",
                                              "block_out_channels", "layers_per_block", "downsample_padding",
                                              "mid_block_scale_factor", "act_fn", "norm_num_groups",
                                              "norm_eps", "cross_attention_dim", "use_linear_projection")
              if key in sd_config}
    # diffusers' SD1.5 configs call the number of heads "attention_head_dim" (8); so does the release.
    config["num_attention_heads"] = sd_config.get("attention_head_dim", 8)
    config["down_block_types"] = ("CrossAttnDownBlockMotion",) * (count - 1) + ("DownBlockMotion",)
    config["up_block_types"] = ("UpBlockMotion",) + ("CrossAttnUpBlockMotion",) * (count - 1)
    return {**config, **MOTION_SETTINGS, **motion}


class MusePoseDenoisingUNet(UNetMotionModel):
    """SD1.5 UNet with motion modules, pose-feature input and ControlNet residuals (module docstring)."""

    @functools.wraps(UNetMotionModel.__init__)  # keeps the signature diffusers reads the config keys from
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for module in self.modules():
            if type(module) is AnimateDiffTransformer3D:
                adopt_motion_module(module)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float,
                encoder_hidden_states: torch.Tensor, pose_features: torch.Tensor | None = None,
                down_block_additional_residuals: Sequence[torch.Tensor] | None = None,
                mid_block_additional_residual: torch.Tensor | None = None,
                return_dict: bool = True) -> UNetMotionOutput | tuple:
        """Noise prediction (B, C_out, F, h, w) for ``sample`` (B, C_in, F, h, w).

        Args:
            timestep: scalar or (B,) diffusion timestep.
            encoder_hidden_states: (B, L, D) CLIP image embeddings, shared by the frames of a clip.
            pose_features: (B, C_0, F, h, w) pose-guider output, added after ``conv_in``.
            down_block_additional_residuals: one (B*F, C, ., .) tensor per skip connection (12 for SD1.5).
            mid_block_additional_residual: (B*F, C, ., .), added to the mid-block output.
        """
        batch, _, frames = sample.shape[:3]
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        emb = self.time_embedding(self.time_proj(timesteps).to(self.dtype))
        emb = emb.repeat_interleave(frames, dim=0)
        context = encoder_hidden_states.repeat_interleave(frames, dim=0)

        hidden = self.conv_in(sample.transpose(1, 2).flatten(0, 1))
        if pose_features is not None:
            hidden = hidden + pose_features.transpose(1, 2).flatten(0, 1).to(hidden.dtype)
        skips = [hidden]
        for block in self.down_blocks:
            extra = {"encoder_hidden_states": context} if getattr(block, "has_cross_attention", False) else {}
            hidden, outputs = block(hidden_states=hidden, temb=emb, num_frames=frames, **extra)
            skips.extend(outputs)
        if down_block_additional_residuals is not None:
            if len(down_block_additional_residuals) != len(skips):
                raise ValueError(f"got {len(down_block_additional_residuals)} down-block residuals, "
                                 f"the UNet has {len(skips)} skip connections")
            skips = [skip + residual for skip, residual in zip(skips, down_block_additional_residuals)]
        hidden = self.mid_block(hidden, emb, encoder_hidden_states=context, num_frames=frames)
        if mid_block_additional_residual is not None:
            hidden = hidden + mid_block_additional_residual
        for block in self.up_blocks:
            count = len(block.resnets)
            outputs, skips = tuple(skips[-count:]), skips[:-count]
            extra = {"encoder_hidden_states": context} if getattr(block, "has_cross_attention", False) else {}
            hidden = block(hidden_states=hidden, temb=emb, res_hidden_states_tuple=outputs, num_frames=frames,
                           **extra)
        hidden = self.conv_out(self.conv_act(self.conv_norm_out(hidden)))
        out = hidden.unflatten(0, (batch, frames)).transpose(1, 2)
        return UNetMotionOutput(sample=out) if return_dict else (out,)
