"""Host memory (RAM) one training process needs to build its model: before (frozen base loaded in float32,
then cast to bf16) and after (loaded straight in bf16, the trainer's way: ``spec.load_pipeline(..., frozen
dtype)``).

1. Tiny random models (:mod:`dispose.bases.mimicmotion.tiny`), measured: each variant builds the MimicMotion
   training model in a fresh process; printed is the growth of that process's peak RSS (``ru_maxrss``) over
   its RSS after the imports.  Every rank of a run does the same, so this is per rank. 2. Full size, from the
   real networks built on the meta device (MimicMotion's UNet and PoseNet, SVD's VAE and CLIP, the hybrid
   ControlNet; ``bench/train_memory.py``'s builders): the weight bytes a rank holds on the host when the model
   is built.  Before: the frozen base in float32 (4 B/parameter: ``load_pipeline`` cast every network to
   float32) before the cast to bf16; after: 2 B/parameter throughout.  The ControlNet (float32, the trainable
   master weights) and the checkpoint file's tensors (the UNet is built on meta and takes them, so they are
   not an extra copy) are the same in both.

Run by hand: ``python bench/train_host_memory.py [--ranks 8]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
from pathlib import Path

GIB = 2 ** 30


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _current_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _build(weights: str, variant: str, queue) -> None:
    import torch

    from dispose.bases import get_base, training_base
    from dispose.guidance.tiny import DIFT_CHANNELS
    from dispose.pipelines.weights import resolve_weights
    from dispose.training.config import TrainConfig

    config = TrainConfig.from_dict({"weights": {"dir": weights, "point_channels": DIFT_CHANNELS},
                                    "train": {"mixed_precision": "bf16"}})
    spec = get_base("mimicmotion")
    paths = resolve_weights(weights, {}, spec.required_components(False))
    start = _current_kib()
    if variant == "before":  # the earlier trainer: float32 load, then the cast in freeze()
        base = spec.load_pipeline(paths, False, torch.float32, "cpu")
        for module in (base.vae, base.image_encoder, base.unet, base.pose_net):
            torch.nn.Module.to(module, dtype=torch.bfloat16)
    else:
        training_base("mimicmotion").build(config)
    queue.put((_peak_kib() - start) * 1024)


def tiny(weights: Path) -> dict[str, int]:
    context = multiprocessing.get_context("spawn")
    grown = {}
    for variant in ("before", "after", "before", "after"):  # interleaved; the smaller of two runs each
        queue = context.Queue()
        process = context.Process(target=_build, args=(str(weights), variant, queue))
        process.start()
        value = queue.get()
        process.join()
        grown[variant] = min(grown.get(variant, value), value)
    return grown


def full_size() -> tuple[int, int]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_memory import count, networks

    unet, controlnet, pose_net, vae, clip = networks()
    return sum(count(m) for m in (unet, pose_net, vae, clip)), count(controlnet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=8, help="training processes on one node")
    args = parser.parse_args()

    from dispose.bases.mimicmotion.tiny import build_tiny_weights

    with tempfile.TemporaryDirectory() as work:
        grown = tiny(build_tiny_weights(Path(work) / "weights"))
    print(f"tiny models, peak RSS growth while building the training model (per rank): before "
          f"{grown['before'] / 2 ** 20:.1f} MiB, after {grown['after'] / 2 ** 20:.1f} MiB "
          f"(after / before {grown['after'] / grown['before']:.2f})")

    frozen, trainable = full_size()
    before = frozen * 4 + trainable * 4
    after = frozen * 2 + trainable * 4
    print(f"full size: frozen base {frozen:,} parameters, ControlNet {trainable:,}")
    print(f"  weights on the host per rank while building: before {before / GIB:.1f} GiB (base float32), "
          f"after {after / GIB:.1f} GiB (base bf16); x {args.ranks} ranks: "
          f"{args.ranks * before / GIB:.0f} GiB "
          f"-> {args.ranks * after / GIB:.0f} GiB")


if __name__ == "__main__":
    main()
