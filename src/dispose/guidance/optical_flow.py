"""Training-time optical flow of the driving video (paper sec. 4.1 "to ensure motion estimation accuracy
during training", appendices A and D).

DisPose extracts forward optical flow from the driving video with a learned estimator (RAFT, Teed & Deng
2020, or GMFlow/UniMatch, Xu et al. 2023) and samples the sparse flow ``P_d`` from it with the watershed
sampler (:mod:`dispose.guidance.watershed`).  The estimator is pluggable (:class:`FlowEstimator`); the
built-in one is OpenCV's DIS (Kroeger et al., ECCV 2016), which needs no weights.

Deliberate differences:

* The default estimator is DIS with the ``medium`` preset (``cv2.DISOPTICAL_FLOW_PRESET_MEDIUM``: the most
  accurate of OpenCV's three presets) on grey frames, not RAFT/GMFlow, whose weights we do not ship.
  Any callable with the :class:`FlowEstimator` signature can be passed instead.
* The paper says "forward optical flow" without saying between which frames.  ``pairs="consecutive"``
  (default) gives frame ``t -> t+1`` for every ``t``; ``pairs="reference"`` gives frame ``0 -> t``
  (the reference-based direction of ``P_d``, Eq. 4).

Flow layout everywhere: float32 ``(H, W, 2)`` per pair, channel 0 = dx (columns), 1 = dy (rows), in pixels
of the input frames, defined at the source frame's pixels (OpenCV convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import cv2
import numpy as np
from tqdm.auto import tqdm

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class FlowEstimator(Protocol):
    """Forward flow from ``source`` to ``target`` (uint8 RGB ``(H, W, 3)``) as float32 ``(H, W, 2)``."""

    def __call__(self, source: np.ndarray, target: np.ndarray) -> np.ndarray: ...


class DISFlowEstimator:
    """OpenCV Dense Inverse Search flow on grey-scale frames."""

    def __init__(self, preset: str = "medium") -> None:
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose one of {', '.join(DIS_PRESETS)}")
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

    def __call__(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in (source, target)]
        return self._dis.calc(grey[0], grey[1], None).astype(np.float32, copy=False)


def check_flow(flow: np.ndarray, name: str = "flow", shape: tuple[int, int] | None = None) -> np.ndarray:
    """Return ``flow`` as float32 ``(H, W, 2)``; raise ValueError on a wrong shape or NaN/inf values."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"{name} must be (H, W, 2), got shape {flow.shape}")
    if shape is not None and flow.shape[:2] != shape:
        raise ValueError(f"{name} is {flow.shape[1]}x{flow.shape[0]}, expected {shape[1]}x{shape[0]}")
    bad = ~np.isfinite(flow)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} NaN/inf values")
    return flow.astype(np.float32, copy=False)


def forward_flows(frames: Sequence[np.ndarray] | np.ndarray, estimator: FlowEstimator | None = None, *,
                  pairs: Literal["consecutive", "reference"] = "consecutive",
                  progress: bool = True) -> np.ndarray:
    """Forward flows of a clip, float32 ``(N-1, H, W, 2)``.

    ``frames``: N >= 2 uint8 RGB frames of one size.  ``pairs``: ``"consecutive"`` (t -> t+1) or
    ``"reference"`` (0 -> t).  ``estimator`` defaults to :class:`DISFlowEstimator` (medium preset).
    """
    if len(frames) < 2:
        raise ValueError(f"need at least 2 frames for optical flow, got {len(frames)}")
    if pairs not in ("consecutive", "reference"):
        raise ValueError(f"pairs must be 'consecutive' or 'reference', got {pairs!r}")
    shape = np.asarray(frames[0]).shape
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or frame.shape != shape:
            raise ValueError(f"frame {i} must be uint8 {shape}, got {frame.dtype} {frame.shape}")
    estimator = estimator or DISFlowEstimator()
    out = np.empty((len(frames) - 1, shape[0], shape[1], 2), np.float32)
    for t in tqdm(range(1, len(frames)), desc="optical flow", unit="frame", disable=not progress):
        source = frames[0] if pairs == "reference" else frames[t - 1]
        flow = estimator(np.asarray(source), np.asarray(frames[t]))
        src_index = 0 if pairs == "reference" else t - 1
        out[t - 1] = check_flow(flow, f"flow {src_index}->{t}", shape[:2])
    return out
