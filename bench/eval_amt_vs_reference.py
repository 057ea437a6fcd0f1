"""Compare dispose's AMT-S port with AMT's own model class (as vendored by VBench) on random weights.

Usage: ``python bench/eval_amt_vs_reference.py REF_DIR [SHARED_DATA_DIR]`` where ``REF_DIR`` holds
VBench's ``vbench/third_party/amt`` package (e.g. ``git archive`` of github.com/Vchitect/VBench with
empty ``vbench/__init__.py`` and ``vbench/third_party/__init__.py``).  Both models get the same random
state dict (the reference's default init plus random PReLU slopes and biases); prints the max abs difference
of the interpolated frame on two frames of the dancer video, and the time of each model.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    data = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[2] / "shared" / "data"
    from dispose.evaluation.amt import AMT, pad_to_16
    from dispose.evaluation.videos import read_frames

    torch.manual_seed(0)
    reference = importlib.import_module("vbench.third_party.amt.networks.AMT-S").Model().eval()
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if param.ndim == 1 and "weight" in name:  # PReLU slopes
                param.uniform_(0.0, 0.5)
            elif name.endswith("bias"):
                param.normal_(0.0, 0.02)
    ours = AMT().eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    frames = read_frames(data / "musepose_dance.mp4", (288, 512), 1, 3)
    x0, x1 = pad_to_16(*[torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255
                         for f in (frames[0], frames[2])])
    embt = torch.tensor(0.5).view(1, 1, 1, 1)
    with torch.no_grad():
        start = time.perf_counter()
        expected = reference(x0, x1, embt, scale_factor=1.0, eval=True)["imgt_pred"]
        ref_time = time.perf_counter() - start
        start = time.perf_counter()
        got = ours(x0, x1)
        our_time = time.perf_counter() - start
    params = sum(p.numel() for p in ours.parameters())
    print(f"AMT-S ({params} parameters) on 288x512: max|diff| {np.abs((got - expected).numpy()).max():.3e} "
          f"({float(((expected > 0) & (expected < 1)).float().mean()):.1%} of the values inside (0, 1)); "
          f"ours {our_time:.2f} s, reference {ref_time:.2f} s")


if __name__ == "__main__":
    main()
