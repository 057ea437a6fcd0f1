"""GPU memory of DisPose training in the paper's MimicMotion setting, per GPU, from the real full-size networks.

Every network is built at full size on the meta device (no weights, no memory): MimicMotion's SVD-xt UNet
and PoseNet, SVD's temporal VAE and CLIP ViT-H/14 image encoder (frozen), and the hybrid ControlNet
(``HybridControlNetSVD.from_unet``, trainable).  The table sums, per GPU:

* frozen weights in bf16 (2 bytes per parameter; the trainer casts the base to the mixed-precision dtype);
* trainable ControlNet: fp32 master weights (4 B), their bf16 autocast copies (2 B), fp32 gradients (4 B),
  AdamW states (8 B; bitsandbytes AdamW8bit: 2 B), EMA copy (4 B, optional).  DeepSpeed ZeRO-2 shards the
  gradients and optimiser states over the GPUs;
* activations kept for the backward pass of one clip (micro-batch 1): measured, not scaled, by running the
  training forward (ControlNet with its motion encoder -> residuals -> UNet) on meta tensors of the real
  size (16 frames, 768x1024, latents 128x96) under ``torch.autograd.graph.saved_tensors_hooks`` and adding
  up the bytes of every tensor autograd saves (parameters excluded, each tensor once).  Attention is
  counted as a fused (Flash/memory-efficient) kernel, which saves q, k, v, the output and the log-sum-exp,
  never the L x L matrix.  With gradient checkpointing (the trainer's, :func:`dispose.bases.mimicmotion.training.
  checkpoint_blocks`: every spatio-temporal resnet and transformer of both networks), what stays is what is saved outside the checkpointed blocks plus each block's inputs, and the
  backward pass recomputes one block at a time, whose own saved tensors are added once (the largest);
* the point encoder's per-level maps (N, C_l, h_l, w_l) in bf16 (its MLPs run on 18 cells per frame:
  negligible; its gather depends on the data, so it is not run on meta tensors).

Not counted: the CUDA context and allocator fragmentation (add ~1-2 GiB), the VAE encoder's transient peak
(printed separately: it runs under no_grad before the denoiser, so it does not add to the activations), and
the gradient buffers of activations during backward (of the order of the largest saved tensor).

Run by hand: ``python bench/train_memory.py [--frames 16 --width 768 --height 1024 --gpus 8]``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dispose.bases.mimicmotion.training import checkpoint_blocks
from dispose.models.controlnet_svd import HybridControlNetSVD
from dispose.models.hybrid_controlnet import EncodedGuidance
from dispose.models.pose_net import PoseNet
from dispose.models.unet_mimicmotion import SVD_XT_UNET_CONFIG, MimicMotionUNet

HALF = torch.bfloat16
GIB = 2 ** 30
#: SVD-xt-1.1's ``vae/config.json`` and ``image_encoder/config.json`` (the parts the sizes depend on).
SVD_VAE = {"block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
           "layers_per_block": 2, "latent_channels": 4}
SVD_CLIP = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
            "patch_size": 14, "image_size": 224, "projection_dim": 1024, "hidden_act": "gelu"}


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
        """A checkpoint function: the block's inputs stay, its saved tensors are recomputed (counted per block)."""
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


def activations(unet, controlnet, frames: int, height: int, width: int, checkpointing: str) -> SavedBytes:
    """Saved-for-backward bytes of one clip's training forward (module docstring); ``checkpointing``: "off",
    "diffusers" (diffusers' ``enable_gradient_checkpointing``) or "blocks" (the trainer's; run it last)."""
    unet.requires_grad_(False)
    controlnet.requires_grad_(True)
    tally = SavedBytes([unet, controlnet])
    for module in (unet, controlnet):
        module.disable_gradient_checkpointing()
        if checkpointing == "diffusers":
            module.enable_gradient_checkpointing(gradient_checkpointing_func=tally.checkpoint)
        elif checkpointing == "blocks":
            checkpoint_blocks(module, tally.checkpoint)
        module.train()
    h, w = height // 8, width // 8
    sample, timestep = meta(1, frames, 8, h, w), meta(1, dtype=torch.float32)
    context, time_ids = meta(1, 1, 1024), meta(1, 3)
    with FusedAttention(), torch.autograd.graph.saved_tensors_hooks(tally.pack, lambda tensor: tensor):
        motion = controlnet.controlnet_cond_embedding(meta(frames, 2, height, width), meta(frames, 2, height, width))
        down, mid = controlnet(sample, timestep, context, time_ids, guidance=EncodedGuidance(frames, motion, None))
        out = unet(sample, timestep, context, time_ids, pose_latents=meta(frames, 320, h, w),
                   down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False)[0]
        out.float().square().mean()
    return tally


def point_maps_bytes(controlnet, frames: int, height: int, width: int) -> int:
    """The point encoder's per-level maps, each added to a hidden state (sizes of the hidden states)."""
    widths = [m.mlp[2].out_features for m in controlnet.point_adapter.model_list]
    sizes = [(height // d, width // d) for d in (16, 32, 64, 64)]
    return sum(frames * c * a * b * 2 for c, (a, b) in zip(widths, sizes))


def vae_encoder_peak(vae, frames: int, height: int, width: int) -> int:
    """Largest input + output of one layer of the VAE encoder over ``frames`` frames (no_grad transient)."""
    peak = 0

    def hook(_module, args, output):
        nonlocal peak
        tensors = [a for a in args if isinstance(a, torch.Tensor)] + [output]
        peak = max(peak, sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)))

    handles = [m.register_forward_hook(hook) for m in vae.encoder.modules() if not list(m.children())]
    with torch.no_grad(), FusedAttention():
        vae.encoder(meta(frames, 3, height, width))
    for handle in handles:
        handle.remove()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs for the ZeRO-2 column")
    parser.add_argument("--vae-chunk", type=int, default=8, help="frames per VAE encoder call (train.vae_encode_chunk)")
    args = parser.parse_args()

    unet, controlnet, pose_net, vae, clip = networks()
    frozen = count(unet) + count(pose_net) + count(vae) + count(clip)
    trainable = count(controlnet)
    print(f"parameters: UNet {count(unet):,}  PoseNet {count(pose_net):,}  VAE {count(vae):,}  CLIP {count(clip):,}"
          f"  -> frozen {frozen:,};  hybrid ControlNet (trainable) {trainable:,} ({len(controlnet.state_dict())} "
          "tensors)")
    measured = {}
    for checkpointing in ("off", "diffusers", "blocks"):
        tally = activations(unet, controlnet, args.frames, args.height, args.width, checkpointing)
        points = point_maps_bytes(controlnet, args.frames, args.height, args.width)
        total = tally.kept + tally.inputs + (max(tally.blocks) if tally.blocks else 0) + points
        measured[checkpointing] = total
        print(f"activations, checkpointing {checkpointing}: kept {tally.kept / GIB:.2f} GiB, "
              f"block inputs {tally.inputs / GIB:.2f} GiB, largest block recompute "
              f"{(max(tally.blocks) if tally.blocks else 0) / GIB:.2f} GiB, point maps {points / GIB:.2f} GiB "
              f"-> {total / GIB:.2f} GiB; largest saved tensor {tally.largest / GIB:.2f} GiB")
    print(f"checkpointing every block (trainer) vs diffusers' enable_gradient_checkpointing: "
          f"{measured['blocks'] / GIB:.1f} GiB vs {measured['diffusers'] / GIB:.1f} GiB of activations "
          f"(ratio {measured['blocks'] / measured['diffusers']:.2f}); vs none {measured['off'] / GIB:.1f} GiB "
          f"(ratio {measured['blocks'] / measured['off']:.2f})")
    vae_peak = vae_encoder_peak(vae, args.vae_chunk, args.height, args.width)
    print(f"VAE encoder transient (no_grad, {args.vae_chunk} frames per call): {vae_peak / GIB:.2f} GiB")

    rows = [("frozen base weights (bf16)", frozen * 2, frozen * 2),
            ("ControlNet fp32 weights + bf16 autocast copies", trainable * 6, trainable * 6),
            ("ControlNet gradients (fp32)", trainable * 4, trainable * 4 / args.gpus),
            ("AdamW states (fp32 m, v)", trainable * 8, trainable * 8 / args.gpus),
            ("activations, gradient checkpointing on", measured["blocks"], measured["blocks"]),
            ("activations, gradient checkpointing off", measured["off"], measured["off"])]
    header = f"| per GPU, 1 clip / forward, {args.frames} x {args.width}x{args.height} | DDP (any GPU count) | " \
             f"ZeRO-2 on {args.gpus} GPUs |"
    print("\n" + header + "\n|---|---:|---:|")
    for label, ddp, zero in rows:
        print(f"| {label} | {ddp / GIB:.1f} GiB | {zero / GIB:.1f} GiB |")
    static = [sum(row[i] for row in rows[:4]) for i in (1, 2)]
    for label, act in (("total, checkpointing on", measured["blocks"]), ("total, checkpointing off", measured["off"])):
        print(f"| **{label}** | **{(static[0] + act) / GIB:.1f} GiB** | **{(static[1] + act) / GIB:.1f} GiB** |")
    print(f"| 8-bit AdamW instead saves | {trainable * 6 / GIB:.1f} GiB | {trainable * 6 / args.gpus / GIB:.1f} GiB |")
    print(f"| EMA (optional) adds | {trainable * 4 / GIB:.1f} GiB | {trainable * 4 / GIB:.1f} GiB |")


if __name__ == "__main__":
    main()
