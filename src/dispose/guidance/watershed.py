"""Watershed sampling of sparse guidance from an optical flow field (paper appendix A; Zhan et al. 2019).

At training time DisPose samples the sparse flow ``P_d`` from the forward optical flow of the driving video
(:mod:`dispose.guidance.optical_flow`) with CMP's watershed sampler, so that the guidance vectors sit at
"representative" points of the moving regions.  As CMP's ``flow_sampler(strategy=['watershed'])``:

1. The flow is subsampled by ``ds = max(1, max(H, W) // 400)``.
2. Motion edges: per flow channel the Sobel gradient magnitude (3x3, symmetric border), summed over the
   two channels, divided by ``max(edge.max(), 0.01)`` and thresholded at ``edge_threshold`` = 0.1.
3. The watershed map is the Euclidean distance of every pixel to its nearest motion edge.
4. Non-maximum suppression with a ``nms_kernel`` x ``nms_kernel`` window (``K_f``; 41 in CMP's
   ``semiauto_annot`` config): a pixel is kept when it equals the window maximum and is not on an edge.
   Larger kernels give sparser points.
5. Points on the image border (first/last row and column) are removed, then of every two points closer
   than ``(K_f - 1) / 2`` in both directions one is dropped at random.
6. The flow vectors at the points (scaled back by ``ds``) form the sparse flow; the mask is 1 there in both
   channels: the same ``(2, H, W)`` layout as ``P_d`` (:mod:`dispose.guidance.reference_flow`), so CMP
   (:func:`dispose.guidance.cmp.cmp_dense_flow`) consumes either.

Deliberate differences: the random neighbour elimination uses a seeded generator (``seed``), so sampling
is reproducible; CMP's training config also adds a regular grid of background points (stride
``int(sqrt(1 / 5.74e-5)) = 131``), which is optional here (``grid_stride``; the paper only describes
the watershed points).  When the flow has no motion edge at all (e.g. a constant flow) the distance map is
undefined (scipy then measures from a virtual corner); we use the distance to the image border instead,
which samples the centre.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import distance_transform_edt, maximum_filter

from dispose.guidance.optical_flow import check_flow

#: CMP ``semiauto_annot/resnet50_vip+mpii_liteflow`` config: ``nms_ks``.
NMS_KERNEL = 41


def motion_edges(flow: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Binary motion edges of a ``(H, W, 2)`` flow (CMP's ``get_edge`` + normalisation + threshold)."""
    flow = np.ascontiguousarray(flow, dtype=np.float32)
    edge = np.zeros(flow.shape[:2], np.float32)
    for c in range(flow.shape[2]):
        gx = cv2.Sobel(flow[..., c], cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
        gy = cv2.Sobel(flow[..., c], cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
        edge += np.sqrt(gx * gx + gy * gy)
    edge /= max(float(edge.max()), 0.01)
    return edge > threshold


def watershed_map(edges: np.ndarray) -> np.ndarray:
    """Distance of every pixel to its nearest edge pixel (to the image border when there is no edge)."""
    if edges.any():
        return distance_transform_edt(~edges)
    return distance_transform_edt(np.pad(np.ones(edges.shape, bool), 1, constant_values=False))[1:-1, 1:-1]


def _eliminate_neighbours(rows: np.ndarray, cols: np.ndarray, distance: float,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Of every two points closer than ``distance`` in rows and in columns, drop one at random."""
    valid = np.ones(len(rows), bool)
    close = ((np.abs(rows[:, None] - rows[None, :]) < distance)
             & (np.abs(cols[:, None] - cols[None, :]) < distance))
    for i, j in zip(*np.nonzero(close)):
        if i != j and valid[i] and valid[j]:
            valid[i if rng.random() > 0.5 else j] = False
    return rows[valid], cols[valid]


def watershed_points(flow: np.ndarray, nms_kernel: int = NMS_KERNEL, *, edge_threshold: float = 0.1,
                     grid_stride: int | None = None, seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sampled pixel positions ``(rows, cols)`` (int64) of a float ``(H, W, 2)`` flow (module docstring)."""
    flow = check_flow(flow)
    if nms_kernel < 1 or nms_kernel % 2 == 0:
        raise ValueError(f"nms_kernel must be a positive odd number, got {nms_kernel}")
    h, w = flow.shape[:2]
    ds = max(1, max(h, w) // 400)
    edges = motion_edges(flow[::ds, ::ds], edge_threshold)
    score = watershed_map(edges)
    peaks = (score >= maximum_filter(score, footprint=np.ones((nms_kernel, nms_kernel)))) & (score > 0)
    peaks[[0, -1], :] = False
    peaks[:, [0, -1]] = False
    rows, cols = np.nonzero(peaks)
    rows, cols = _eliminate_neighbours(rows, cols, (nms_kernel - 1) / 2, np.random.default_rng(seed))
    rows, cols = rows * ds, cols * ds
    if grid_stride:
        start_h, start_w = ((h - h // grid_stride * grid_stride) // 2,
                            (w - w // grid_stride * grid_stride) // 2)
        grid_r, grid_c = np.meshgrid(np.arange(start_h, h, grid_stride), np.arange(start_w, w, grid_stride),
                                     indexing="ij")
        rows, cols = np.concatenate([rows, grid_r.ravel()]), np.concatenate([cols, grid_c.ravel()])
    return rows.astype(np.int64), cols.astype(np.int64)


def watershed_sparse_flow(flow: np.ndarray, nms_kernel: int = NMS_KERNEL, *, edge_threshold: float = 0.1,
                          grid_stride: int | None = None,
                          seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sparse flow and mask, each float32 ``(2, H, W)`` (the layout of ``P_d``), sampled from ``(H, W, 2)``.
    """
    flow = check_flow(flow)
    rows, cols = watershed_points(flow, nms_kernel, edge_threshold=edge_threshold, grid_stride=grid_stride,
                                  seed=seed)
    sparse = np.zeros((2, *flow.shape[:2]), np.float32)
    mask = np.zeros_like(sparse)
    sparse[:, rows, cols] = flow[rows, cols].T
    mask[:, rows, cols] = 1.0
    return sparse, mask
