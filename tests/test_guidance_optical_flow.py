"""Training-time forward optical flow (DIS by default, pluggable) feeding the watershed sampler."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dispose.guidance.optical_flow import DISFlowEstimator, forward_flows
from dispose.guidance.watershed import watershed_sparse_flow


def textured(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC), (0, 0), 1.0)


def test_dis_recovers_a_translation_and_pairs() -> None:
    base = textured(136, 168)
    # the scene moves +3, +2
    frames = np.stack([base[20 - 2 * t: 116 - 2 * t, 20 - 3 * t: 148 - 3 * t] for t in range(3)])
    flows = forward_flows(frames, progress=False)
    assert flows.shape == (2, 96, 128, 2) and flows.dtype == np.float32
    centre = flows[:, 24:72, 32:96]
    assert np.median(centre[..., 0]) == pytest.approx(3.0, abs=0.3)
    assert np.median(centre[..., 1]) == pytest.approx(2.0, abs=0.3)
    reference = forward_flows(frames, pairs="reference", progress=False)
    assert np.median(reference[1, 24:72, 32:96, 0]) == pytest.approx(6.0, abs=0.5)
    sparse, mask = watershed_sparse_flow(flows[0])
    assert sparse.shape == mask.shape == (2, 96, 128)


def test_custom_estimator_and_bad_input() -> None:
    frames = np.stack([textured(seed=s) for s in range(3)])

    def constant(source: np.ndarray, target: np.ndarray) -> np.ndarray:
        return np.ones((*source.shape[:2], 2), np.float32)

    assert (forward_flows(frames, constant, progress=False) == 1.0).all()

    def broken(source: np.ndarray, target: np.ndarray) -> np.ndarray:
        return np.full((*source.shape[:2], 2), np.nan, np.float32)

    with pytest.raises(ValueError, match="flow 0->1 contains"):
        forward_flows(frames, broken, progress=False)
    with pytest.raises(ValueError, match="at least 2 frames"):
        forward_flows(frames[:1], progress=False)
    with pytest.raises(ValueError, match="uint8"):
        forward_flows(frames.astype(np.float32), progress=False)
    with pytest.raises(ValueError, match="pairs"):
        forward_flows(frames, pairs="backward", progress=False)
    with pytest.raises(ValueError, match="unknown DIS preset"):
        DISFlowEstimator("slow")
