"""Watershed sampling of sparse guidance (appendix A) on synthetic flows."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
from scipy import signal

from dispose.guidance.cmp import CMP, cmp_dense_flow
from dispose.guidance.watershed import motion_edges, watershed_points, watershed_sparse_flow


def two_regions(height: int = 160, width: int = 240) -> np.ndarray:
    """Two rigid regions on a still background: the left one moves right, the right one moves up."""
    flow = np.zeros((height, width, 2), np.float32)
    flow[height // 4: 3 * height // 4, width // 8: 3 * width // 8] = [3.0, 0.0]
    flow[height // 4: 3 * height // 4, 5 * width // 8: 7 * width // 8] = [0.0, -2.0]
    return flow


def smooth_random_flow(seed: int = 0, size: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 5, (6, 6, 2)).astype(np.float32)
    rows = np.linspace(0, 5, size).astype(int)
    return np.ascontiguousarray(coarse[rows][:, rows])  # piecewise-constant patches: many motion edges


def test_edges_match_cmp_sobel() -> None:
    flow = smooth_random_flow(3)
    sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32)
    edge = sum(np.sqrt(signal.convolve2d(flow[..., k], sobel, boundary="symm", mode="same") ** 2
                       + signal.convolve2d(flow[..., k], sobel.T, boundary="symm", mode="same") ** 2)
               for k in range(2))
    edge /= max(edge.max(), 0.01)
    np.testing.assert_array_equal(motion_edges(flow), edge > 0.1)


def test_two_rigid_regions_get_points_and_none_on_borders() -> None:
    flow = two_regions()
    rows, cols = watershed_points(flow, nms_kernel=41)
    moving = np.abs(flow[rows, cols]).sum(axis=1) > 0
    # points on both regions
    assert (flow[rows, cols, 0] == 3.0).any() and (flow[rows, cols, 1] == -2.0).any()
    assert moving.sum() >= 2
    edges = motion_edges(flow)
    assert not edges[rows, cols].any()  # none on a motion edge
    assert rows.min() > 0 and cols.min() > 0 and rows.max() < 159 and cols.max() < 239  # none on the border
    # a region touching the border has its distance maximum on the border, which is removed: a moving
    # object inside the frame is where the points go (appendix A: "distributed on the moving objects")
    half = np.zeros((160, 240, 2), np.float32)
    half[:, 120:] = [1.0, 1.0]
    assert len(watershed_points(half, 41)[0]) == 0
    sparse, mask = watershed_sparse_flow(flow, nms_kernel=41)
    assert sparse.shape == mask.shape == (2, 160, 240) and sparse.dtype == mask.dtype == np.float32
    assert mask[0].sum() == len(rows) and np.array_equal(mask[0], mask[1])
    np.testing.assert_array_equal(sparse[:, rows, cols], flow[rows, cols].T)
    assert np.count_nonzero(sparse[:, mask[0] == 0]) == 0


def test_larger_kernel_is_sparser() -> None:
    counts = {}
    for seed in range(3):
        flow = smooth_random_flow(seed)
        for kernel in (5, 11, 21, 41, 81):
            counts.setdefault(kernel, 0)
            counts[kernel] += len(watershed_points(flow, kernel)[0])
    values = [counts[k] for k in sorted(counts)]
    assert all(a >= b for a, b in pairwise(values)) and values[0] > 2 * values[-1], counts


def test_reproducible_grid_and_no_edge() -> None:
    flow = smooth_random_flow(1)
    first = watershed_points(flow, 11, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(first, watershed_points(flow, 11, seed=5)))
    rows, cols = watershed_points(flow, 41, grid_stride=50)
    base = watershed_points(flow, 41)[0]
    assert len(rows) == len(base) + 16 and {0, 50, 100, 150} <= set(rows.tolist())
    # a constant flow has no motion edge: the distance to the border puts the point(s) in the middle
    rows, cols = watershed_points(np.full((81, 81, 2), 2.0, np.float32), 41)
    assert rows.tolist() == [40] and cols.tolist() == [40]


def test_large_frames_are_subsampled() -> None:
    flow = two_regions(600, 900)  # ds = 2
    rows, cols = watershed_points(flow, 41)
    assert len(rows) > 0 and (rows % 2 == 0).all() and (cols % 2 == 0).all()
    assert (flow[rows, cols, 0] == 3.0).any() and (flow[rows, cols, 1] == -2.0).any()


def test_bad_flows_are_rejected() -> None:
    flow = two_regions(40, 40)
    flow[3, 4, 0] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        watershed_points(flow)
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        watershed_sparse_flow(np.zeros((40, 40, 3), np.float32))
    with pytest.raises(ValueError, match="odd"):
        watershed_points(two_regions(40, 40), nms_kernel=40)


@torch.no_grad()
def test_cmp_consumes_watershed_samples() -> None:
    flow = two_regions(64, 64)
    sparse, mask = watershed_sparse_flow(flow, nms_kernel=11)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    dense = cmp_dense_flow(CMP().eval(), image, sparse[None], mask[None])
    assert dense.shape == (1, 2, 64, 64) and torch.isfinite(dense).all()
