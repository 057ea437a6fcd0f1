"""Compare dispose's DINO ViT-B/16 port with DINO's ``vit_base`` (VBench's torch.hub model), random weights.

Usage: ``python bench/eval_dino_vs_reference.py DINO_SRC [SHARED_DATA_DIR]`` where ``DINO_SRC`` is a source
checkout of github.com/facebookresearch/dino (Apache-2.0; ``vision_transformer.py`` and ``utils.py`` are
imported).  Both models get the same random state dict (default init plus N(0, 0.02) noise on every
tensor); prints the max abs difference of the CLS feature on dancer frames through VBench's DINO
transform (non-square input: the position grid is resized), and at 224x224.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    data = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[2] / "shared" / "data"
    import vision_transformer

    from dispose.evaluation.dino import DinoViT
    from dispose.evaluation.vbench import dino_input
    from dispose.evaluation.videos import read_frames

    torch.manual_seed(0)
    reference = vision_transformer.vit_base(patch_size=16, num_classes=0).eval()
    with torch.no_grad():
        for param in reference.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    ours = DinoViT().eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    frames = read_frames(data / "musepose_dance.mp4", (288, 512), 1, 2)
    for x in (dino_input(frames), torch.randn(2, 3, 224, 224)):
        with torch.no_grad():
            start = time.perf_counter()
            expected = reference(x)
            ref_time = time.perf_counter() - start
            start = time.perf_counter()
            got = ours(x)
            our_time = time.perf_counter() - start
        print(f"DINO ViT-B/16 on {tuple(x.shape[-2:])}: max|diff| {float((got - expected).abs().max()):.3e} "
              f"(feature scale {float(expected.abs().max()):.2f}); ours {our_time:.2f} s, "
              f"reference {ref_time:.2f} s")


if __name__ == "__main__":
    main()
