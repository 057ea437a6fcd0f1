"""DisPose's hybrid ControlNet for Stable Video Diffusion / MimicMotion (paper sec. 4.3, Eq. 8, Fig. 2(e)).

``r = F(z_t | F_m, F_c, t)``: a trainable copy of the encoder half of diffusers'
``UNetSpatioTemporalConditionModel`` (time and added-time embeddings, ``conv_in``, spatio-temporal down
blocks, mid block) that takes the same input as the UNet, adds the motion-field features ``F_m`` (Eq. 5)
after ``conv_in`` and the point features ``F_c^l`` (Eq. 7) after each down block, and returns one
residual per UNet skip connection plus one for the mid block (shared parts:
:mod:`dispose.models.hybrid_controlnet`).  diffusers has no SVD ControlNet; this one is built from
diffusers' blocks with the release's parameter names (``ControlNetSVDModel``), so ``DisPose.pth``
loads strictly (its tensor and parameter counts: ``dispose models``).

What the release does, and we reproduce:

* Input: the noisy latents concatenated with the reference-image latent (8 channels), the CLIP image
  embedding and SVD's added time ids, exactly as the UNet; not the skeleton image (the release accepts
  it but never reads it) and not the pose latents, which reach only the UNet.
* Motion: dense field ``F_d`` (CMP) -> the ``flow`` branch, sparse field ``F_s`` (trajectories) -> the
  ``traj`` branch; the reference position 0 of every window carries a zero flow.
* Points: only the 18 body keypoints of the first person; their level-``l`` features are added to the
  hidden state after down block ``l`` (the skip tensors of that block are taken before the addition).
* ``conditioning_scale`` multiplies every residual.

Deliberate differences from the release:

* ``from_unet`` also copies the added-time embedding (``add_embedding``) from the UNet; the release
  copies ``conv_in``, the time embedding, the down and mid blocks and leaves ``add_embedding`` random.
  Only a training run from scratch sees this (the checkpoint overwrites it); ``copy_add_embedding=False``
  reproduces the release.
* Point-feature sizes follow the hidden states (see :mod:`dispose.models.point_encoder`).
* The release's unused inputs (skeleton image, pose latents, second DIFT map) and its training loss mask
  are not part of the interface; the output is a plain ``(down_residuals, mid_residual)`` tuple.

Paper vs release: see :mod:`dispose.models.motion_encoder` (where ``F_m`` enters) and
:mod:`dispose.models.hybrid_controlnet` (where ``F_c`` enters).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_3d_blocks import UNetMidBlockSpatioTemporal, get_down_block
from torch import nn

from dispose.models.hybrid_controlnet import EncodedGuidance, HybridControlNetMixin

#: Configuration keys taken over from the UNet by :meth:`HybridControlNetSVD.from_unet`.
UNET_CONFIG_KEYS = ("sample_size", "in_channels", "down_block_types", "block_out_channels",
                    "addition_time_embed_dim", "projection_class_embeddings_input_dim", "layers_per_block",
                    "cross_attention_dim", "transformer_layers_per_block", "num_attention_heads",
                    "num_frames")


def _per_block(value, count: int) -> tuple:
    return (value,) * count if isinstance(value, int) else tuple(value)


class HybridControlNetSVD(ModelMixin, ConfigMixin, HybridControlNetMixin):
    """Hybrid ControlNet over an SVD UNet encoder (see module docstring).

    The UNet arguments have the meaning (and SVD-xt defaults) of diffusers'
    ``UNetSpatioTemporalConditionModel``; ``point_channels`` is the width of the point embeddings
    (SD1.5 DIFT: 1280), ``point_hidden_channels`` the point MLPs' hidden width and
    ``motion_block_out_channels`` the motion encoder's stage widths.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 8,
        down_block_types: Sequence[str] = (("CrossAttnDownBlockSpatioTemporal",) * 3
                                           + ("DownBlockSpatioTemporal",)),
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        addition_time_embed_dim: int = 256,
        projection_class_embeddings_input_dim: int = 768,
        layers_per_block: int | Sequence[int] = 2,
        cross_attention_dim: int | Sequence[int] = 1024,
        transformer_layers_per_block: int | Sequence[int] = 1,
        num_attention_heads: int | Sequence[int] = (5, 10, 20, 20),
        num_frames: int = 25,
        point_channels: int = 1280,
        point_hidden_channels: int = 128,
        motion_block_out_channels: Sequence[int] = (16, 32, 96, 256),
    ) -> None:
        super().__init__()
        count = len(down_block_types)
        if len(block_out_channels) != count:
            raise ValueError(f"block_out_channels {block_out_channels} and "
                             f"down_block_types {down_block_types} must have the same length")
        heads = _per_block(num_attention_heads, count)
        cross_dims = _per_block(cross_attention_dim, count)
        layers = _per_block(layers_per_block, count)
        transformer_layers = _per_block(transformer_layers_per_block, count)
        time_embed_dim = block_out_channels[0] * 4

        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim)
        self.add_time_proj = Timesteps(addition_time_embed_dim, True, downscale_freq_shift=0)
        self.add_embedding = TimestepEmbedding(projection_class_embeddings_input_dim, time_embed_dim)
        self.down_blocks = nn.ModuleList()
        in_width = block_out_channels[0]
        for index, block_type in enumerate(down_block_types):
            self.down_blocks.append(get_down_block(
                block_type, num_layers=layers[index], transformer_layers_per_block=transformer_layers[index],
                in_channels=in_width, out_channels=block_out_channels[index], temb_channels=time_embed_dim,
                add_downsample=index < count - 1, resnet_eps=1e-5, cross_attention_dim=cross_dims[index],
                num_attention_heads=heads[index], resnet_act_fn="silu"))
            in_width = block_out_channels[index]
        self.mid_block = UNetMidBlockSpatioTemporal(
            block_out_channels[-1], temb_channels=time_embed_dim,
            transformer_layers_per_block=transformer_layers[-1], cross_attention_dim=cross_dims[-1],
            num_attention_heads=heads[-1])
        self._build_hybrid_parts(block_out_channels, layers, point_channels, point_hidden_channels,
                                 motion_block_out_channels)

    @classmethod
    def from_unet(cls, unet: ModelMixin, *, load_weights_from_unet: bool = True,
                  copy_add_embedding: bool = True, **options) -> HybridControlNetSVD:
        """A ControlNet shaped after ``unet``'s config (``options``: the DisPose-specific arguments
        ``point_channels``, ``point_hidden_channels``, ``motion_block_out_channels``).

        With ``load_weights_from_unet`` the UNet's encoder weights are copied and the ControlNet moved to
        the UNet's device and dtype; without, it is returned as constructed (e.g. inside accelerate's
        ``init_empty_weights``, to receive a checkpoint)."""
        config = {key: unet.config[key] for key in UNET_CONFIG_KEYS if key in unet.config}
        controlnet = cls(**config, **options)
        if not load_weights_from_unet:
            return controlnet
        names = ["conv_in", "time_embedding", "down_blocks", "mid_block"]
        names += ["add_embedding"] if copy_add_embedding else []
        parts = ((getattr(controlnet, name), getattr(unet, name)) for name in names)
        return controlnet._copy_encoder(unet, parts)

    def _embedding(self, sample: torch.Tensor, timestep, added_time_ids: torch.Tensor) -> torch.Tensor:
        batch = sample.shape[0]
        if torch.is_tensor(timestep):
            timesteps = timestep.to(sample.device).reshape(-1)
        else:
            timesteps = torch.tensor([timestep], device=sample.device,
                                     dtype=torch.float32 if isinstance(timestep, float) else torch.long)
        emb = self.time_embedding(self.time_proj(timesteps.expand(batch)).to(sample.dtype))
        time_embeds = self.add_time_proj(added_time_ids.flatten()).reshape(batch, -1).to(emb.dtype)
        return emb + self.add_embedding(time_embeds)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        *,
        sparse_flow: torch.Tensor | None = None,
        dense_flow: torch.Tensor | None = None,
        point_features: torch.Tensor | None = None,
        point_mask: torch.Tensor | None = None,
        guidance: EncodedGuidance | None = None,
        conditioning_scale: float = 1.0,
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Residuals for the UNet's skip connections and mid block.

        Args:
            sample: (B, T, 8, h, w) noisy latents + reference latent (the UNet's input).
            timestep: the diffusion timestep (scalar or (1,) tensor).
            encoder_hidden_states: (B, 1, D) CLIP image embeddings.
            added_time_ids: (B, 3) ``[fps - 1, motion_bucket_id, noise_aug_strength]``.
            sparse_flow, dense_flow: (B, T, 2, 8h, 8w) motion fields ``F_s``, ``F_d`` (zero at the reference
                position); None skips the motion encoder when both are None, a single None counts as zero.
            point_features: (B, T, C_p, 8h/16, 8w/16) correspondence grids ``F_p``; None skips the points.
            point_mask: (B, T, 8h/16, 8w/16) their occupancy.
            guidance: instead of the four above, their encoding by :meth:`encode_guidance`, for the B*T frames
                or for T frames shared by every batch element (e.g. both CFG halves); reused across calls.
            conditioning_scale: multiplies every residual.

        Returns:
            ``(down_residuals, mid_residual)``: one (B*T, C, ., .) tensor per skip connection of the UNet
            encoder (12 for SVD), and the (B*T, C, ., .) mid-block residual.
        """
        batch, frames, guidance = self._guidance_for(
            sample, guidance, sparse_flow=sparse_flow, dense_flow=dense_flow, point_features=point_features,
            point_mask=point_mask)
        emb = self._embedding(sample, timestep, added_time_ids).repeat_interleave(frames, dim=0)
        context = encoder_hidden_states.repeat_interleave(frames, dim=0)

        hidden = self.add_motion(self.conv_in(sample.flatten(0, 1)), guidance)
        image_only_indicator = torch.zeros(batch, frames, dtype=hidden.dtype, device=hidden.device)
        skips = [hidden]
        for level, block in enumerate(self.down_blocks):
            extra = {"encoder_hidden_states": context} if getattr(block, "has_cross_attention", False) else {}
            hidden, outputs = block(hidden_states=hidden, temb=emb, image_only_indicator=image_only_indicator,
                                    **extra)
            hidden = self.add_point_level(hidden, level, guidance)
            skips.extend(outputs)
        hidden = self.mid_block(hidden_states=hidden, temb=emb, encoder_hidden_states=context,
                                image_only_indicator=image_only_indicator)
        return self.output_residuals(skips, hidden, conditioning_scale)
