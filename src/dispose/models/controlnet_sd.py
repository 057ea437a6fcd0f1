"""DisPose's hybrid ControlNet for Stable Diffusion 1.5 bases (MusePose; paper sec. 4.3, Eq. 8, sec. 5.1).

``r = F(z_t | F_m, F_c, t)`` for each frame: a trainable copy of the encoder half of an SD1.5
:class:`~diffusers.UNet2DConditionModel` (time embedding, ``conv_in``, the 2D down blocks, the mid block)
with the guidance encoders and zero convolutions every hybrid ControlNet shares
(:mod:`dispose.models.hybrid_controlnet`): the motion features ``F_m`` are added after ``conv_in``, the point
features ``F_c^l`` after down block ``l``, and one residual per skip connection of the UNet (12 for SD1.5)
plus one for the mid block come out.  It runs on every frame on its own (no temporal layers), so its
residuals fit the denoising UNet's per-frame 2D blocks (:mod:`dispose.models.musepose.denoising_unet`).

No official checkpoint or code exists for DisPose on MusePose.  Following the paper it is initialised from
stable-diffusion-v1-5 (:meth:`HybridControlNetSD.from_unet` copies the encoder of any SD1.5-layout UNet: an
SD ``UNet2DConditionModel`` or the 2D part of MusePose's denoising UNet) and trained by ``dispose train``;
the choices below mirror the SVD version:

* Input: the noisy latents (4 channels, the denoising UNet's input), the timestep and the CLIP image
  embedding as cross-attention context (768 wide, as SD1.5's text context); not the pose-guider features.
* ``conditioning_scale`` multiplies every residual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2DCrossAttn, get_down_block
from torch import nn

from dispose.models.hybrid_controlnet import EncodedGuidance, HybridControlNetMixin

#: The encoder parts copied from the UNet by :meth:`HybridControlNetSD.from_unet` (2D layers only).
_COPIED_BLOCK_PARTS = ("resnets", "attentions", "downsamplers")


def sd_encoder_config(unet_config: Mapping) -> dict:
    """Our constructor arguments from an SD1.5 UNet config (diffusers' ``UNet2DConditionModel``, whose
    ``attention_head_dim`` is the number of heads) or from MusePose's denoising UNet config."""
    heads = unet_config.get("num_attention_heads") or unet_config.get("attention_head_dim", 8)
    blocks = len(unet_config.get("block_out_channels", (320, 640, 1280, 1280)))
    config = {key: unet_config[key] for key in ("sample_size", "in_channels", "block_out_channels",
                                                "layers_per_block", "cross_attention_dim", "norm_num_groups",
                                                "norm_eps", "downsample_padding", "use_linear_projection")
              if key in unet_config}
    config["num_attention_heads"] = heads
    config["down_block_types"] = ("CrossAttnDownBlock2D",) * (blocks - 1) + ("DownBlock2D",)
    return config


class HybridControlNetSD(ModelMixin, ConfigMixin, HybridControlNetMixin):
    """Hybrid ControlNet over an SD1.5 UNet encoder (see module docstring); UNet arguments as diffusers'
    ``UNet2DConditionModel`` (SD1.5 defaults, image-variation context width 768)."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 4,
        down_block_types: Sequence[str] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        cross_attention_dim: int = 768,
        num_attention_heads: int = 8,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        downsample_padding: int = 1,
        use_linear_projection: bool = False,
        point_channels: int = 1280,
        point_hidden_channels: int = 128,
        motion_block_out_channels: Sequence[int] = (16, 32, 96, 256),
    ) -> None:
        super().__init__()
        count = len(down_block_types)
        if len(block_out_channels) != count:
            raise ValueError(f"block_out_channels {block_out_channels} and "
                             f"down_block_types {down_block_types} must have the same length")
        time_embed_dim = block_out_channels[0] * 4
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim)
        self.down_blocks = nn.ModuleList()
        in_width = block_out_channels[0]
        for index, block_type in enumerate(down_block_types):
            self.down_blocks.append(get_down_block(
                block_type, num_layers=layers_per_block, in_channels=in_width,
                out_channels=block_out_channels[index], temb_channels=time_embed_dim,
                add_downsample=index < count - 1, resnet_eps=norm_eps, resnet_act_fn="silu",
                num_attention_heads=num_attention_heads,
                attention_head_dim=block_out_channels[index] // num_attention_heads,
                resnet_groups=norm_num_groups, cross_attention_dim=cross_attention_dim,
                downsample_padding=downsample_padding, use_linear_projection=use_linear_projection))
            in_width = block_out_channels[index]
        self.mid_block = UNetMidBlock2DCrossAttn(
            block_out_channels[-1], temb_channels=time_embed_dim, resnet_eps=norm_eps, resnet_act_fn="silu",
            resnet_groups=norm_num_groups, num_attention_heads=num_attention_heads,
            cross_attention_dim=cross_attention_dim, use_linear_projection=use_linear_projection)
        self._build_hybrid_parts(block_out_channels, (layers_per_block,) * count, point_channels,
                                 point_hidden_channels, motion_block_out_channels)

    @classmethod
    def from_unet(cls, unet: ModelMixin, *, load_weights_from_unet: bool = True,
                  **options) -> HybridControlNetSD:
        """A ControlNet shaped after ``unet`` (SD1.5 ``UNet2DConditionModel`` or MusePose's denoising UNet);
        ``options``: the DisPose-specific arguments.  With ``load_weights_from_unet`` the encoder's 2D weights
        are copied (each part strictly) and the result moved to the UNet's device and dtype."""
        controlnet = cls(**sd_encoder_config(unet.config), **options)
        if not load_weights_from_unet:
            return controlnet
        parts = [(getattr(controlnet, name), getattr(unet, name))
                 for name in ("conv_in", "time_embedding", "mid_block")]
        parts += [(getattr(ours, part), getattr(theirs, part))
                  for ours, theirs in zip(controlnet.down_blocks, unet.down_blocks, strict=True)
                  for part in _COPIED_BLOCK_PARTS if getattr(ours, part, None) is not None]
        # MusePose's mid block also holds a motion module: not part of the copy
        return controlnet._copy_encoder(unet, parts, leave_out="motion_modules.")

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        *,
        sparse_flow: torch.Tensor | None = None,
        dense_flow: torch.Tensor | None = None,
        point_features: torch.Tensor | None = None,
        point_mask: torch.Tensor | None = None,
        guidance: EncodedGuidance | None = None,
        conditioning_scale: float = 1.0,
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Residuals for the UNet's skip connections and mid block, frame by frame.

        Args:
            sample: (B, T, 4, h, w) noisy latents (frames of B clips).
            timestep: the diffusion timestep (scalar or (1,) tensor).
            encoder_hidden_states: (B, L, D) CLIP image embeddings, shared by a clip's frames.
            sparse_flow, dense_flow, point_features, point_mask, guidance: the DisPose guidance, as
                :meth:`HybridControlNetSVD.forward
                <dispose.models.controlnet_svd.HybridControlNetSVD.forward>`.
            conditioning_scale: multiplies every residual.

        Returns:
            ``(down_residuals, mid_residual)``: (B*T, C, ., .) tensors, frames batch-major.
        """
        batch, frames, guidance = self._guidance_for(
            sample, guidance, sparse_flow=sparse_flow, dense_flow=dense_flow, point_features=point_features,
            point_mask=point_mask)
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        emb = self.time_embedding(self.time_proj(timesteps).to(sample.dtype)).repeat_interleave(frames, dim=0)
        context = encoder_hidden_states.repeat_interleave(frames, dim=0)

        hidden = self.add_motion(self.conv_in(sample.flatten(0, 1)), guidance)
        skips = [hidden]
        for level, block in enumerate(self.down_blocks):
            extra = {"encoder_hidden_states": context} if getattr(block, "has_cross_attention", False) else {}
            hidden, outputs = block(hidden_states=hidden, temb=emb, **extra)
            hidden = self.add_point_level(hidden, level, guidance)
            skips.extend(outputs)
        hidden = self.mid_block(hidden, emb, encoder_hidden_states=context)
        return self.output_residuals(skips, hidden, conditioning_scale)
