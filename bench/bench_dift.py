"""DIFT early stop: time to up block 1 vs the full UNet forward, on an SD1.5-shaped UNet.

Run by hand: ``python bench/bench_dift.py [image_side]`` (default 256).  The UNet has SD1.5's
architecture with random weights (no download); prints both timings and their ratio.
"""

from __future__ import annotations

import sys
import time

import torch
from diffusers import UNet2DConditionModel

from dispose.guidance.dift import _StopForward


def main() -> None:
    side = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64).eval()
    sample = torch.randn(2, 4, side // 8, side // 8)
    embeds = torch.randn(2, 77, 768)
    t = torch.tensor(261)

    def stop(_m, _a, out):
        raise _StopForward(out)

    def early():
        handle = unet.up_blocks[1].register_forward_hook(stop)
        try:
            unet(sample, t, encoder_hidden_states=embeds)
        except _StopForward as stopped:
            return stopped.output
        finally:
            handle.remove()

    def full():
        return unet(sample, t, encoder_hidden_states=embeds).sample

    with torch.no_grad():
        early(), full()  # warm-up
        timings = {}
        for name, fn in (("early", early), ("full", full)):
            start = time.perf_counter()
            for _ in range(2):
                fn()
            timings[name] = (time.perf_counter() - start) / 2
    print(f"{side}px batch 2: up block 1 {timings['early']:.2f} s, full forward {timings['full']:.2f} s, "
          f"full/early x{timings['full'] / timings['early']:.2f}")


if __name__ == "__main__":
    main()
