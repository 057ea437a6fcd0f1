"""Memory of one DisPose training step on MimicMotion, predicted from the networks on the meta device.

The activations autograd keeps for the backward pass of one clip are measured, not scaled: the training
forward (ControlNet with its motion encoder -> residuals -> UNet) runs on meta tensors of the real size under
``torch.autograd.graph.saved_tensors_hooks`` and the bytes of every saved tensor are added up (parameters
excluded, each tensor once); attention is counted as a fused kernel (q, k, v, output, log-sum-exp saved).
With gradient checkpointing, what stays is what is saved outside the checkpointed blocks plus each block's
inputs, and the backward pass recomputes one block at a time (the largest is added once).  The per-GPU
table of ``bench/train_memory.py`` and the prediction ``dispose benchmark train`` prints beside its
measurement (:func:`predicted_bytes`) both come from here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dispose.bases.mimicmotion.random_weights import SVD_CLIP, SVD_VAE
from dispose.bases.mimicmotion.training import CHECKPOINTED_BLOCKS
from dispose.bases.training import checkpoint_blocks
from dispose.models.controlnet_svd import HybridControlNetSVD
from dispose.models.hybrid_controlnet import EncodedGuidance
from dispose.models.pose_net import PoseNet
from dispose.models.unet_mimicmotion import SVD_XT_UNET_CONFIG, MimicMotionUNet

HALF = torch.bfloat16


class _FlashAttention(torch.autograd.Function):
    """A fused attention kernel's autograd footprint: saves q, k, v, out and the fp32 log-sum-exp."""

    @staticmethod
    def forward(ctx, query, key, value):
        out = query.new_empty((*query.shape[:-1], value.shape[-1]))
        lse = query.new_empty(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # never run: the measurement stops after the forward pass
        query, key, value, _, _ = ctx.saved_tensors
        return torch.zeros_like(query), torch.zeros_like(key), torch.zeros_like(value)


class FusedAttention(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            return _FlashAttention.apply(*args[:3])
        return func(*args, **(kwargs or {}))


class SavedBytes:
    """Bytes autograd saves for backward, each tensor (or its base) once, parameters excluded; with gradient
    checkpointing, the blocks' saved tensors go to per-block tallies and their inputs to ``inputs``."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self.params = {id(p) for module in modules for p in module.parameters()}
        self.seen: dict[int, torch.Tensor] = {}
        self.kept = 0  # saved outside checkpointed blocks
        self.inputs = 0  # inputs of checkpointed blocks
        self.blocks: list[int] = []  # saved inside each checkpointed block
        self.largest = 0
        self._block: int | None = None

    def _count(self, tensor: torch.Tensor) -> int:
        base = tensor._base if tensor._base is not None else tensor
        if id(base) in self.params or id(base) in self.seen:
            return 0
        self.seen[id(base)] = base  # kept alive so that ids stay unique
        size = base.numel() * base.element_size()
        self.largest = max(self.largest, size)
        return size

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        size = self._count(tensor)
        if self._block is None:
            self.kept += size
        else:
            self.blocks[self._block] += size
        return tensor

    def checkpoint(self, forward, *args, **kwargs):
        """A checkpoint function: the block's inputs stay, its saved tensors are recomputed (counted per
        block)."""
        tensors = [arg for arg in (*args, *kwargs.values()) if isinstance(arg, torch.Tensor)]
        self.inputs += sum(self._count(arg) for arg in tensors)
        self.blocks.append(0)
        outer, self._block = self._block, len(self.blocks) - 1
        seen = dict(self.seen)  # a block's tensors are freed after its backward: counted per block
        try:
            return forward(*args, **kwargs)
        finally:
            self._block = outer
            self.seen = seen


def build(cls, *args, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        module = cls(*args, **kwargs)
    return module.to("meta", HALF)


def meta(*shape: int, dtype: torch.dtype = HALF) -> torch.Tensor:
    return torch.empty(*shape, device="meta", dtype=dtype)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def networks():
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = build(MimicMotionUNet.from_config, SVD_XT_UNET_CONFIG)
    with torch.device("meta"):
        controlnet = HybridControlNetSVD.from_unet(unet, load_weights_from_unet=False)
    controlnet = controlnet.to("meta", HALF)
    pose_net = build(PoseNet, noise_latent_channels=320)
    vae = build(AutoencoderKLTemporalDecoder, **SVD_VAE)
    clip = build(CLIPVisionModelWithProjection, CLIPVisionConfig(**SVD_CLIP))
    return unet, controlnet, pose_net, vae, clip


def tally_training(unet, controlnet, checkpointing: str, blocks: tuple[str, ...]) -> SavedBytes:
    """A :class:`SavedBytes` for one training forward of ``controlnet`` (trainable) into the frozen ``unet``,
    both in training mode with ``checkpointing``: "off", "diffusers" (diffusers' own) or "blocks" (the
    trainer's :func:`dispose.bases.training.checkpoint_blocks` of ``blocks``; run it last)."""
    unet.requires_grad_(False)
    controlnet.requires_grad_(True)
    tally = SavedBytes([unet, controlnet])
    for module in (unet, controlnet):
        module.disable_gradient_checkpointing()
        if checkpointing == "diffusers":
            module.enable_gradient_checkpointing(gradient_checkpointing_func=tally.checkpoint)
        elif checkpointing == "blocks":
            checkpoint_blocks(module, blocks, tally.checkpoint)
        module.train()
    return tally


def activations(unet, controlnet, frames: int, height: int, width: int, checkpointing: str) -> SavedBytes:
    """Saved-for-backward bytes of one clip's training forward (module docstring); ``checkpointing``: "off",
    "diffusers" (diffusers' ``enable_gradient_checkpointing``) or "blocks" (the trainer's; run it last)."""
    tally = tally_training(unet, controlnet, checkpointing, CHECKPOINTED_BLOCKS)
    h, w = height // 8, width // 8
    config = unet.config
    sample, timestep = meta(1, frames, config.in_channels, h, w), meta(1, dtype=torch.float32)
    context, time_ids = meta(1, 1, config.cross_attention_dim), meta(1, 3)
    pose_latents = meta(frames, config.block_out_channels[0], h, w)
    flows = meta(frames, 2, height, width), meta(frames, 2, height, width)
    with FusedAttention(), torch.autograd.graph.saved_tensors_hooks(tally.pack, lambda tensor: tensor):
        motion = controlnet.controlnet_cond_embedding(*flows)
        down, mid = controlnet(
            sample, timestep, context, time_ids, guidance=EncodedGuidance(frames, motion, None)
        )
        out = unet(
            sample,
            timestep,
            context,
            time_ids,
            pose_latents=pose_latents,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0]
        out.float().square().mean()
    return tally


def point_maps_bytes(controlnet, frames: int, height: int, width: int) -> int:
    """The point encoder's per-level maps, each added to a hidden state (sizes of the hidden states)."""
    widths = [m.mlp[2].out_features for m in controlnet.point_adapter.model_list]
    sizes = [(height // d, width // d) for d in (16, 32, 64, 64)]
    return sum(frames * c * a * b * 2 for c, (a, b) in zip(widths, sizes))


def activation_bytes(unet, controlnet, frames: int, height: int, width: int, checkpointing: str) -> int:
    """Activations kept for the backward pass of one clip (module docstring), point maps included."""
    tally = activations(unet, controlnet, frames, height, width, checkpointing)
    return (
        tally.kept
        + tally.inputs
        + (max(tally.blocks) if tally.blocks else 0)
        + point_maps_bytes(controlnet, frames, height, width)
    )


def predicted_bytes(
    frozen: int, trainable: int, activations_per_clip: int, micro_batch: int = 1, adam_bytes: int = 8
) -> dict[str, int]:
    """One process's training memory (DDP): frozen weights in bf16, the ControlNet's fp32 weights + bf16
    autocast copies, fp32 gradients, optimiser states (8 B per parameter for AdamW, 2 for 8-bit AdamW) and the
    activations of ``micro_batch`` clips."""
    parts = {
        "frozen weights": frozen * 2,
        "trainable weights + autocast copies": trainable * 6,
        "gradients": trainable * 4,
        "optimiser states": trainable * adam_bytes,
        "activations": activations_per_clip * micro_batch,
    }
    return {**parts, "total": sum(parts.values())}
