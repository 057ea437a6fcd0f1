"""GPU memory of DisPose training in the paper's MimicMotion setting, per GPU, from the real
full-size networks.

Every network is built at full size on the meta device (no weights, no memory): MimicMotion's SVD-xt UNet
and PoseNet, SVD's temporal VAE and CLIP ViT-H/14 image encoder (frozen), and the hybrid ControlNet
(``HybridControlNetSVD.from_unet``, trainable).  The table sums, per GPU:

* frozen weights in bf16 (2 bytes per parameter; the trainer casts the base to the mixed-precision dtype);
* trainable ControlNet: fp32 master weights (4 B), their bf16 autocast copies (2 B), fp32 gradients (4 B),
  AdamW states (8 B; bitsandbytes AdamW8bit: 2 B), EMA copy (4 B, optional).  DeepSpeed ZeRO-2 shards the
  gradients and optimiser states over the GPUs;
* activations kept for the backward pass of one clip (micro-batch 1): measured, not scaled, by running the
  training forward (ControlNet with its motion encoder -> residuals -> UNet) on meta tensors of the real size
  (16 frames, 768x1024, latents 128x96) under ``torch.autograd.graph.saved_tensors_hooks`` and adding up the
  bytes of every tensor autograd saves (parameters excluded, each tensor once).  Attention is counted as a
  fused (Flash/memory-efficient) kernel, which saves q, k, v, the output and the log-sum-exp, never the L x L
  matrix.  With gradient checkpointing (the trainer's, :func:`dispose.bases.training.checkpoint_blocks`: every
  spatio-temporal resnet and transformer of both networks), what stays is what is saved outside the
  checkpointed blocks plus each block's inputs, and the backward pass recomputes one block at a time, whose
  own saved tensors are added once (the largest);
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

from dispose.benchmark.train_memory import (
    FusedAttention,
    activations,
    count,
    meta,
    networks,
    point_maps_bytes,
)

GIB = 2 ** 30

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
    parser.add_argument("--vae-chunk", type=int, default=8,
                        help="frames per VAE encoder call (train.vae_encode_chunk)")
    args = parser.parse_args()

    unet, controlnet, pose_net, vae, clip = networks()
    frozen = count(unet) + count(pose_net) + count(vae) + count(clip)
    trainable = count(controlnet)
    print(f"parameters: UNet {count(unet):,}  PoseNet {count(pose_net):,}  VAE {count(vae):,}  "
          f"CLIP {count(clip):,}  -> frozen {frozen:,};  hybrid ControlNet (trainable) {trainable:,} "
          f"({len(controlnet.state_dict())} tensors)")
    measured = {}
    for checkpointing in ("off", "diffusers", "blocks"):
        tally = activations(unet, controlnet, args.frames, args.height, args.width, checkpointing)
        points = point_maps_bytes(controlnet, args.frames, args.height, args.width)
        total = tally.kept + tally.inputs + (max(tally.blocks) if tally.blocks else 0) + points
        measured[checkpointing] = total
        print(f"activations, checkpointing {checkpointing}: "
              f"kept {tally.kept / GIB:.2f} GiB, block inputs {tally.inputs / GIB:.2f} GiB, "
              f"largest block recompute {(max(tally.blocks) if tally.blocks else 0) / GIB:.2f} GiB, "
              f"point maps {points / GIB:.2f} GiB -> {total / GIB:.2f} GiB; "
              f"largest saved tensor {tally.largest / GIB:.2f} GiB")
    print(f"checkpointing every block (trainer) vs diffusers' enable_gradient_checkpointing: "
          f"{measured['blocks'] / GIB:.1f} GiB vs {measured['diffusers'] / GIB:.1f} GiB of activations "
          f"(ratio {measured['blocks'] / measured['diffusers']:.2f}); "
          f"vs none {measured['off'] / GIB:.1f} GiB (ratio {measured['blocks'] / measured['off']:.2f})")
    vae_peak = vae_encoder_peak(vae, args.vae_chunk, args.height, args.width)
    print(f"VAE encoder transient (no_grad, {args.vae_chunk} frames per call): {vae_peak / GIB:.2f} GiB")

    rows = [("frozen base weights (bf16)", frozen * 2, frozen * 2),
            ("ControlNet fp32 weights + bf16 autocast copies", trainable * 6, trainable * 6),
            ("ControlNet gradients (fp32)", trainable * 4, trainable * 4 / args.gpus),
            ("AdamW states (fp32 m, v)", trainable * 8, trainable * 8 / args.gpus),
            ("activations, gradient checkpointing on", measured["blocks"], measured["blocks"]),
            ("activations, gradient checkpointing off", measured["off"], measured["off"])]
    header = (f"| per GPU, 1 clip / forward, {args.frames} x {args.width}x{args.height} | "
              f"DDP (any GPU count) | ZeRO-2 on {args.gpus} GPUs |")
    print("\n" + header + "\n|---|---:|---:|")
    for label, ddp, zero in rows:
        print(f"| {label} | {ddp / GIB:.1f} GiB | {zero / GIB:.1f} GiB |")
    static = [sum(row[i] for row in rows[:4]) for i in (1, 2)]
    for label, act in (("total, checkpointing on", measured["blocks"]),
                       ("total, checkpointing off", measured["off"])):
        print(f"| **{label}** | **{(static[0] + act) / GIB:.1f} GiB** | "
              f"**{(static[1] + act) / GIB:.1f} GiB** |")
    print(f"| 8-bit AdamW instead saves | {trainable * 6 / GIB:.1f} GiB | "
          f"{trainable * 6 / args.gpus / GIB:.1f} GiB |")
    print(f"| EMA (optional) adds | {trainable * 4 / GIB:.1f} GiB | {trainable * 4 / GIB:.1f} GiB |")


if __name__ == "__main__":
    main()
