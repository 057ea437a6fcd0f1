"""Compare dispose's RAFT port with RAFT's own model class (as vendored by VBench) on random weights.

Usage: ``python bench/eval_raft_vs_reference.py REF_DIR [SHARED_DATA_DIR]`` where ``REF_DIR`` holds
VBench's ``vbench/third_party/RAFT`` (BSD-3; e.g. ``git archive`` of github.com/Vchitect/VBench with empty
``vbench/__init__.py`` and ``vbench/third_party/__init__.py``).  Both models get the same random state dict
(default init, batch-norm statistics and biases randomised); prints the max abs difference of the
20-iteration flow on two padded frames of the dancer video, as VBench's dynamic degree runs it.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import torch


class _Args(dict):
    """RAFT reads its options both as attributes and with ``in`` (VBench passes an EasyDict)."""

    __getattr__ = dict.__getitem__


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    data = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[2] / "shared" / "data"
    from dispose.evaluation.raft import RAFT, pad_to_8
    from dispose.evaluation.videos import read_frames

    module = importlib.import_module("vbench.third_party.RAFT.core.raft")
    torch.manual_seed(0)
    reference = module.RAFT(_Args(small=False, mixed_precision=False, alternate_corr=False)).eval()
    with torch.no_grad():
        for name, tensor in reference.state_dict().items():
            if name.endswith(("running_mean", "bias")):
                tensor.normal_(0.0, 0.05)
            elif name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
    ours = RAFT().eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    frames = read_frames(data / "musepose_dance.mp4", (288, 500), 3, 2)
    a, b = pad_to_8(*[torch.from_numpy(f).permute(2, 0, 1)[None].float() for f in frames])
    with torch.no_grad():
        start = time.perf_counter()
        _, expected = reference(a, b, iters=20, test_mode=True)
        ref_time = time.perf_counter() - start
        start = time.perf_counter()
        got = ours(a, b, iters=20)
        our_time = time.perf_counter() - start
    print(f"RAFT on {tuple(a.shape[-2:])}: max|flow diff| {float((got - expected).abs().max()):.3e} px "
          f"(flow scale {float(expected.abs().max()):.2f} px); ours {our_time:.1f} s, "
          f"reference {ref_time:.1f} s")


if __name__ == "__main__":
    main()
