"""The optical flow estimators ``dispose prepare`` can use: the project's RAFT port or OpenCV DIS.

Both follow :class:`dispose.guidance.optical_flow.FlowEstimator`: uint8 RGB ``(H, W, 3)`` source and target
in, float32 ``(H, W, 2)`` forward flow out (channel 0 = x, pixels of the input, defined at the source's
pixels).

* RAFT (:mod:`dispose.evaluation.raft`, ``raft-things.pth`` loaded strictly through
  :mod:`dispose.checkpoints`): the paper's estimator (Teed & Deng 2020).  Frames are replicate-padded to
  multiples of 8 as RAFT's ``InputPadder`` does, 20 iterations, and the padding is cut off the flow again.
  Needs at least 128 px per side.
* DIS (:class:`dispose.guidance.optical_flow.DISFlowEstimator`, ``medium`` preset): weight-free and far
  less accurate on large displacements, the fallback when no RAFT file is given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dispose.guidance.optical_flow import DISFlowEstimator, FlowEstimator


class RaftFlowEstimator:
    """RAFT (full, raft-things) on one device; 20 refinement iterations."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", iters: int = 20) -> None:
        from dispose.evaluation.raft import load_raft

        self.model = load_raft(path, device=device)
        self.iters = iters

    @torch.no_grad()
    def __call__(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        from dispose.evaluation.raft import pad_to_8

        device = next(self.model.parameters()).device
        h, w = source.shape[:2]
        images = [torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1)[None].float().to(device)
                  for f in (source, target)]
        padded = pad_to_8(*images)
        flow = self.model(padded[0], padded[1], iters=self.iters)[0]
        top, left = (flow.shape[1] - h) // 2, (flow.shape[2] - w) // 2
        return flow[:, top:top + h, left:left + w].permute(1, 2, 0).float().cpu().numpy()


def load_flow_estimator(raft: Path | None, device: str | torch.device = "cpu") -> tuple[FlowEstimator, str]:
    """RAFT from ``raft`` when given, else DIS; with the name the manifest records."""
    if raft is not None:
        return RaftFlowEstimator(raft, device), f"RAFT ({Path(raft).name}, 20 iterations)"
    return DISFlowEstimator("medium"), "OpenCV DIS (medium preset)"
