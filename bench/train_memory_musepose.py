"""Activation memory of DisPose training on MusePose (SD1.5) per GPU, from the real full-size networks on the
meta device, with the accounting of ``bench/train_memory.py`` (saved-for-backward bytes under
``saved_tensors_hooks``, fused attention, each checkpointed block's inputs kept and its own saved tensors
recomputed one block at a time).

Networks: MusePose's denoising UNet (SD1.5 of sd-image-variations inflated with motion modules,
:class:`dispose.models.musepose.denoising_unet.MusePoseDenoisingUNet`) frozen, and the trainable SD1.5 hybrid
ControlNet (``HybridControlNetSD.from_unet``).  The reference attention is left out (its extra keys and values
are the same in every setting).  Compared, for one clip of ``--frames`` denoised frames at ``--size``:

* ``off``: no gradient checkpointing;
* ``diffusers``: diffusers' ``enable_gradient_checkpointing`` (what the trainer used before: the resnets of
  the motion blocks only);
* ``blocks``: the trainer's :func:`dispose.bases.training.checkpoint_blocks` with
  :data:`dispose.bases.musepose.training.CHECKPOINTED_BLOCKS` (resnets, spatial transformers, motion modules).

Run by hand from ``bench/``: ``python train_memory_musepose.py [--frames 15 16] [--size 512]``.
"""

from __future__ import annotations

import argparse

import torch
from train_memory import GIB

from dispose.bases.musepose.training import CHECKPOINTED_BLOCKS
from dispose.bases.musepose.weights import SD_IMAGE_VARIATIONS_UNET_CONFIG
from dispose.benchmark.train_memory import HALF, FusedAttention, meta, tally_training
from dispose.models.controlnet_sd import HybridControlNetSD
from dispose.models.hybrid_controlnet import EncodedGuidance
from dispose.models.musepose.denoising_unet import MusePoseDenoisingUNet, motion_config_from_sd


def networks():
    with torch.device("meta"):
        unet = MusePoseDenoisingUNet.from_config(motion_config_from_sd(SD_IMAGE_VARIATIONS_UNET_CONFIG))
        controlnet = HybridControlNetSD.from_unet(unet, load_weights_from_unet=False)
    return tuple(torch.nn.Module.to(module, dtype=HALF) for module in (unet, controlnet))  # no fp32 modules


def activations(unet, controlnet, frames: int, size: int, checkpointing: str) -> int:
    """Saved-for-backward bytes of one clip's training forward (kept + block inputs + largest recompute)."""
    tally = tally_training(unet, controlnet, checkpointing, CHECKPOINTED_BLOCKS)
    latent = size // 8
    timestep, context = meta(1, dtype=torch.float32), meta(1, 1, 768)
    with FusedAttention(), torch.autograd.graph.saved_tensors_hooks(tally.pack, lambda tensor: tensor):
        flow = meta(frames, 2, size, size)
        motion = controlnet.controlnet_cond_embedding(flow, flow)
        down, mid = controlnet(meta(1, frames, 4, latent, latent), timestep, context,
                               guidance=EncodedGuidance(frames, motion, None))
        out = unet(meta(1, 4, frames, latent, latent), timestep, context,
                   pose_features=meta(1, 320, frames, latent, latent), down_block_additional_residuals=down,
                   mid_block_additional_residual=mid, return_dict=False)[0]
        out.float().square().mean()
    return tally.kept + tally.inputs + (max(tally.blocks) if tally.blocks else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[15, 16])
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    unet, controlnet = networks()
    for frames in args.frames:
        measured = {}
        for checkpointing in ("off", "diffusers", "blocks"):  # "blocks" wraps for good: last
            measured[checkpointing] = activations(unet, controlnet, frames, args.size, checkpointing)
        print(f"{frames} frames at {args.size}x{args.size}: activations off {measured['off'] / GIB:.2f} GiB, "
              f"diffusers' checkpointing {measured['diffusers'] / GIB:.2f} GiB, every block (trainer) "
              f"{measured['blocks'] / GIB:.2f} GiB (ratio to diffusers' "
              f"{measured['blocks'] / measured['diffusers']:.2f})")
        unet, controlnet = networks()


if __name__ == "__main__":
    main()
