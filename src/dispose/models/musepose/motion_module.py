"""MusePose's temporal motion modules (AnimateDiff v2 "Vanilla" modules) on diffusers' building blocks.

A motion module is a temporal transformer inserted after every spatial block of the denoising UNet: each
pixel of each frame is a token, attention runs along the frames.  MusePose (``musepose/models/
motion_module.py``, from AnimateDiff) builds it as GroupNorm -> Linear -> [LayerNorm -> temporal
self-attention (+ sinusoidal position encoding added to the normalised tokens), twice; LayerNorm -> GEGLU
feed-forward] -> Linear, plus the input (residual).  Settings of ``configs/inference_v2.yaml``: 8 heads of
``C / 8`` channels, one transformer block, two ``Temporal_Self`` attentions, position encoding up to 128
frames.

diffusers' :class:`~diffusers.models.unets.unet_motion_model.AnimateDiffTransformer3D` has the same layers
(its :class:`~diffusers.models.attention.BasicTransformerBlock` with ``double_self_attention`` adds the
sinusoid before both attentions, as AnimateDiff does) under other names; :data:`RELEASE_TO_OURS` maps them
(``motion_module.pth`` keys -> ours):

=========================================================  ======================================
release (``down_blocks.0.motion_modules.0.`` + ...)           ours (same prefix + ...)
=========================================================  ======================================
``temporal_transformer.{norm,proj_in,proj_out}.*``           ``{norm,proj_in,proj_out}.*``
``temporal_transformer.transformer_blocks.0.attention_blocks.{0,1}.*``  ``transformer_blocks.0.attn{1,2}.*``
``temporal_transformer.transformer_blocks.0.norms.{0,1}.*``  ``transformer_blocks.0.norm{1,2}.*``
``temporal_transformer.transformer_blocks.0.ff_norm.*``      ``transformer_blocks.0.norm3.*``
``temporal_transformer.transformer_blocks.0.ff.*``           ``transformer_blocks.0.ff.*``
``...attention_blocks.{0,1}.pos_encoder.pe``                 (dropped: the fixed sinusoid table)
=========================================================  ======================================

The ``pe`` buffers are the sinusoid table, not learned; MusePose's own loader deletes them from the file
(``UNet3DConditionModel.from_pretrained_2d``) and uses the table of its configured length, and so do we: the
table is a non-persistent buffer here (recomputed, never read from or written to a state dict).

Deliberate behaviour choice (the release's, not diffusers'): the GroupNorm at the module input normalises
each frame on its own, as MusePose does (``(b f) c h w``); diffusers' ``AnimateDiffTransformer3D``
normalises over all frames of a clip together.  :class:`MusePoseMotionModule` overrides only ``forward``.
"""

from __future__ import annotations

import re

import torch
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

#: Substring replacements turning a ``motion_module.pth`` key into ours (applied in order).
RELEASE_TO_OURS = ((".temporal_transformer.", "."), (".attention_blocks.0.", ".attn1."),
                   (".attention_blocks.1.", ".attn2."), (".norms.0.", ".norm1."), (".norms.1.", ".norm2."),
                   (".ff_norm.", ".norm3."))
#: Groups of the input GroupNorm: the release's ``TemporalTransformer3DModel`` default, whatever the UNet's
#: ``norm_num_groups`` (diffusers uses the UNet's; both are 32 for SD1.5).
NORM_GROUPS = 32
#: Suffix of the position-encoding tables the release saves and drops.
POSITION_TABLE_SUFFIX = ".pos_encoder.pe"


def release_key_to_ours(key: str) -> str | None:
    """Our name of a ``motion_module.pth`` key, or None for a position-encoding table (dropped)."""
    if key.endswith(POSITION_TABLE_SUFFIX):
        return None
    for old, new in RELEASE_TO_OURS:
        key = key.replace(old, new)
    return key


def our_key_to_release(key: str) -> str:
    """The release's name of one of our motion-module keys (inverse of :func:`release_key_to_ours`)."""
    key = re.sub(r"(motion_modules\.\d+\.)", r"\1temporal_transformer.", key, count=1)
    for old, new in RELEASE_TO_OURS[1:]:
        key = key.replace(new, old)
    return key


class MusePoseMotionModule(AnimateDiffTransformer3D):
    """diffusers' AnimateDiff temporal transformer with MusePose's per-frame input GroupNorm."""

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                timestep=None, class_labels=None, num_frames: int = 1,
                cross_attention_kwargs: dict | None = None) -> torch.Tensor:
        """(B*F, C, H, W) frames (batch-major) -> same shape; ``encoder_hidden_states`` is unused (the
        release's motion modules have no cross-attention)."""
        frames_total, channels, height, width = hidden_states.shape
        residual = hidden_states
        tokens = self.norm(hidden_states)  # per frame, as the release
        tokens = (tokens.unflatten(0, (-1, num_frames)).permute(0, 3, 4, 1, 2)
                  .reshape(-1, num_frames, channels))
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, cross_attention_kwargs=cross_attention_kwargs)
        tokens = self.proj_out(tokens)
        tokens = tokens.reshape(-1, height, width, num_frames, channels).permute(0, 3, 4, 1, 2)
        return tokens.reshape(frames_total, channels, height, width) + residual


def adopt_motion_module(module: AnimateDiffTransformer3D) -> MusePoseMotionModule:
    """Turn a diffusers motion module into a :class:`MusePoseMotionModule` in place (same parameters, no
    copy), with the release's :data:`NORM_GROUPS` input groups, and make its position tables non-persistent
    (see module docstring)."""
    module.__class__ = MusePoseMotionModule
    if module.norm.num_groups != NORM_GROUPS:
        module.norm = torch.nn.GroupNorm(NORM_GROUPS, module.norm.num_channels, eps=module.norm.eps,
                                         affine=True)
    for block in module.transformer_blocks:
        table = block.pos_embed.pe
        del block.pos_embed._buffers["pe"]
        block.pos_embed.register_buffer("pe", table, persistent=False)
    return module
