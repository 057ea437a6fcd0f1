"""Tiny components for the pipeline tests (CPU, random, built in code), and sanity checks of them.

Real diffusers/transformers classes for the SVD parts (VAE, CLIP image encoder, Euler scheduler);
small stand-ins with the model contracts of ``dispose.models`` for the UNet / PoseNet / ControlNet so the
pipeline's sampling logic is tested on its own (temporal mixing inside the stand-in UNet makes tiling
matter).  The end-to-end test (test_pipeline_cli.py) uses the real ``dispose.models`` classes.
"""

from __future__ import annotations

import math

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from dispose.bases.mimicmotion.pipeline import DisPoseMimicMotionPipeline
from dispose.bases.mimicmotion.tiny import SVD_SCHEDULER
from dispose.bases.mimicmotion.weights import image_processor_class

CHANNELS = 8  # first block width of the tiny UNet (PoseNet's output channels)
EMBED = 16  # CLIP projection / cross-attention width
TIME_DIM = 4  # addition_time_embed_dim


def _sinusoid(values: torch.Tensor, dim: int) -> torch.Tensor:
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, device=values.device) / (dim // 2))
    angles = values.float()[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], -1)


class StandInUNet(ModelMixin, ConfigMixin):
    """MimicMotion-UNet contract: (B, T, 8, h, w) -> (B, T, 4, h, w), pose latents after conv_in,
    ControlNet residuals on the skip (down) and the bottleneck (mid)."""

    @register_to_config
    def __init__(self, in_channels: int = 8, out_channels: int = 4, block_out_channels: tuple = (CHANNELS,),
                 addition_time_embed_dim: int = TIME_DIM, cross_attention_dim: int = EMBED) -> None:
        super().__init__()
        width = block_out_channels[0]
        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1)
        self.time_embedding = nn.Linear(8, width)
        self.add_embedding = nn.Module()
        self.add_embedding.linear_1 = nn.Linear(3 * addition_time_embed_dim, width)
        self.context = nn.Linear(cross_attention_dim, width)
        self.down = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(width, width, 4, stride=2, padding=1)
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, pose_latents=None,
                down_block_additional_residuals=None, mid_block_additional_residual=None, return_dict=True):
        batch, frames = sample.shape[:2]
        x = self.conv_in(sample.flatten(0, 1))
        if pose_latents is not None:
            x = x + pose_latents
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1)[:1].expand(batch)
        emb = (self.time_embedding(_sinusoid(t, 8).to(x.dtype))
               + self.add_embedding.linear_1(_sinusoid(added_time_ids, self.config.addition_time_embed_dim)
                                             .flatten(1).to(x.dtype))
               + self.context(encoder_hidden_states[:, 0]))
        x = x + emb.repeat_interleave(frames, 0)[..., None, None]
        skip = x if down_block_additional_residuals is None else x + down_block_additional_residuals[0]
        h = self.down(torch.nn.functional.silu(x))
        h = h.unflatten(0, (batch, frames))
        h = (h + h.mean(1, keepdim=True)).flatten(0, 1)  # temporal mixing: tiles matter
        if mid_block_additional_residual is not None:
            h = h + mid_block_additional_residual
        out = self.conv_out(torch.nn.functional.silu(self.up(torch.nn.functional.silu(h)) + skip))
        return (out.unflatten(0, (batch, frames)),)


class StandInPoseNet(ModelMixin, ConfigMixin):
    """PoseNet contract: (N, 3, H, W) -> (N, C, H/8, W/8)."""

    @register_to_config
    def __init__(self, noise_latent_channels: int = CHANNELS) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 4, 2, 1), nn.SiLU(), nn.Conv2d(4, 4, 4, 2, 1), nn.SiLU(),
                                 nn.Conv2d(4, noise_latent_channels, 4, 2, 1))

    def forward(self, x):
        return self.net(x)


class StandInControlNet(ModelMixin, ConfigMixin):
    """Hybrid-ControlNet contract: ``encode_guidance`` of a tile's per-frame guidance, reused by forward calls
    that return (down residuals, mid residual); zero output convs when ``zero``.  Counts the encodings."""

    @register_to_config
    def __init__(self, width: int = CHANNELS, point_channels: int = 32, zero: bool = False) -> None:
        super().__init__()
        self.flow = nn.Conv2d(4, width, 3, padding=1)
        self.points = nn.Linear(point_channels, width)
        self.conv_in = nn.Conv2d(8, width, 3, padding=1)
        self.down = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.out_down = nn.Conv2d(width, width, 1)
        self.out_mid = nn.Conv2d(width, width, 1)
        self.encodings = 0
        if zero:
            for conv in (self.out_down, self.out_mid):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def encode_guidance(self, sparse_flow, dense_flow, point_features, point_mask):
        self.encodings += 1
        flows = torch.nn.functional.avg_pool2d(torch.cat([sparse_flow, dense_flow], 1), 8)
        points = self.points(point_features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) * point_mask.unsqueeze(1)
        return {"flows": self.flow(flows), "points": points}

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, *, guidance,
                conditioning_scale=1.0):
        batch = sample.shape[0]
        x = self.conv_in(sample.flatten(0, 1)) + guidance["flows"].repeat(batch, 1, 1, 1)
        h = self.down(torch.nn.functional.silu(x))
        points = torch.nn.functional.interpolate(guidance["points"], size=h.shape[-2:], mode="nearest")
        h = h + points.repeat(batch, 1, 1, 1)
        return (self.out_down(x) * conditioning_scale,), self.out_mid(h) * conditioning_scale


def tiny_vae() -> AutoencoderKLTemporalDecoder:
    return AutoencoderKLTemporalDecoder(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=4)


def tiny_image_encoder() -> CLIPVisionModelWithProjection:
    config = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                              num_attention_heads=2, image_size=224, patch_size=32, projection_dim=EMBED)
    return CLIPVisionModelWithProjection(config)


def tiny_pipeline(*, controlnet: str | None = "random", seed: int = 0) -> DisPoseMimicMotionPipeline:
    """Pipeline of tiny components; ``controlnet`` "random", "zero" or None."""
    torch.manual_seed(seed)
    control = None if controlnet is None else StandInControlNet(zero=controlnet == "zero")
    pipe = DisPoseMimicMotionPipeline(
        vae=tiny_vae(), image_encoder=tiny_image_encoder(), unet=StandInUNet(), pose_net=StandInPoseNet(),
        scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER), controlnet=control,
        feature_extractor=image_processor_class()()).to("cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_stand_ins_follow_the_contract_shapes():
    unet, pose_net, control = StandInUNet(), StandInPoseNet(), StandInControlNet()
    sample = torch.randn(2, 3, 8, 8, 8)
    pose = pose_net(torch.randn(6, 3, 64, 64))
    assert pose.shape == (6, CHANNELS, 8, 8)
    guidance = control.encode_guidance(torch.randn(3, 2, 64, 64), torch.randn(3, 2, 64, 64),
                                       torch.randn(3, 32, 4, 4), torch.ones(3, 4, 4))
    down, mid = control(sample, 1.0, torch.randn(2, 1, EMBED), torch.ones(2, 3), guidance=guidance)
    out = unet(sample, 1.0, torch.randn(2, 1, EMBED), torch.ones(2, 3), pose_latents=pose,
               down_block_additional_residuals=down, mid_block_additional_residual=mid)[0]
    assert out.shape == (2, 3, 4, 8, 8)
