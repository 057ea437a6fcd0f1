"""The sparse motion field ``F_s`` (paper sec. 4.1, Eq. 3): filtered keypoint displacements.

Eq. 3: ``P_s = {(x_n^k - x_{n-1}^k, y_n^k - y_{n-1}^k) | n = 1..N}``, then a Gaussian filter gives
``F_s`` in ``R^{N x 2 x H x W}`` (frame 0 of ``P_traj`` is the reference, so ``F_s[0]`` is the step
reference -> first driving frame).  What the release computes (``points_to_flows`` + ``cv2.filter2D``
with ``bivariate_Gaussian(199, 20, 20, isotropic)``), reproduced here:

* For every step ``n`` and keypoint ``k`` the displacement ``(dx, dy)`` is written at the start pixel
  ``(row, col) = (int(y_n), int(x_n))`` of an all-zero ``(H, W, 2)`` map (coordinates are already clipped
  to the image, see :mod:`.trajectories`).  Keypoints are written in order, so when two fall on one pixel
  the later keypoint wins.
* Each map is filtered with the normalised ``kernel_size`` x ``kernel_size`` Gaussian (``sigma`` in pixels,
  grid ``-(k//2) .. k//2``) by ``cv2.filter2D`` with its default border ``BORDER_REFLECT_101``.  The
  values are therefore tiny: a 5 px step gives at most ``5 / (2 pi sigma^2) ~ 0.002`` with the defaults.

How missing keypoints are handled (``release_missing_points``):

* ``False`` (default): a step is written only when the keypoint is visible in both of its frames, so
  missing points contribute nothing.
* ``True``: the release's rule.  The write is gated by the visibility of the *start* frame only, and a
  missing point's coordinates are ``(0, 0)``.  So when a keypoint disappears, a displacement
  ``(-x_n, -y_n)`` pointing to the top-left image corner is written at its last visible position; when it
  reappears nothing is written (its start is missing).

The filter is computed exactly but not by a 2-D convolution: the Gaussian is separable and a map has at
most K = 18 non-zero pixels, so the filtered map is ``sum_k v_k * a_y[:, row_k] (x) a_x[:, col_k]``, where
``a[:, p]`` is the 1-D kernel *reflected at the borders* as BORDER_REFLECT_101 does (folded repeatedly when
the kernel is larger than the image).  Each column is non-zero on at most ``kernel_size`` pixels, so a
frame costs K small outer products (``bench/bench_sparse_field.py``: the ratio to the direct filter).

Deliberate differences: float32 output (the release keeps float64 until the pipeline casts it);
``kernel_size`` must be odd (the release's grid is off-centre for even sizes).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from tqdm.auto import tqdm

from dispose.guidance.trajectories import Trajectories

#: The release's filter: ``bivariate_Gaussian(kernel_size=199, sig_x=20, ...)``.
KERNEL_SIZE = 199
SIGMA = 20.0


def _check_kernel(kernel_size: int, sigma: float) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")


def gaussian_kernel_1d(kernel_size: int = KERNEL_SIZE, sigma: float = SIGMA) -> np.ndarray:
    """float64 ``(kernel_size,)`` with ``outer(g, g)`` equal to the release's normalised 2-D kernel."""
    _check_kernel(kernel_size, sigma)
    offsets = np.arange(kernel_size, dtype=np.float64) - kernel_size // 2
    g = np.exp(-0.5 * (offsets / sigma) ** 2)
    return g / g.sum()


def reflect_101(index: np.ndarray, length: int) -> np.ndarray:
    """Map integer indices into ``[0, length)`` like OpenCV's BORDER_REFLECT_101 (``dcb|abcd|cba``)."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.mod(index, period)
    return np.where(index >= length, period - index, index)


@lru_cache(maxsize=8)
def _reflected_kernels(length: int, kernel_size: int, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A, lo, hi)``: ``A[q, p]`` = weight of input pixel ``p`` in output pixel ``q`` along one axis
    (float64 ``(length, length)``); column ``p`` is zero outside rows ``lo[p]:hi[p]``."""
    g = gaussian_kernel_1d(kernel_size, sigma)
    radius = kernel_size // 2
    out = np.arange(length)[:, None]
    taps = reflect_101(out + np.arange(-radius, radius + 1)[None, :], length)
    matrix = np.zeros((length, length), np.float64)
    np.add.at(matrix, (np.broadcast_to(out, taps.shape), taps), np.broadcast_to(g, taps.shape))
    nonzero = matrix != 0
    lo = nonzero.argmax(axis=0)
    hi = length - nonzero[::-1].argmax(axis=0)
    for array in (matrix, lo, hi):
        array.setflags(write=False)
    return matrix, lo, hi


def step_displacements(trajectories: Trajectories, *, release_missing_points: bool = False
                       ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per step ``n`` (N of them): ``(rows, cols, vectors)`` of the pixels the release writes.

    ``rows``/``cols`` int64 ``(M,)`` are distinct (collisions resolved as the release: the later keypoint
    wins); ``vectors`` float64 ``(M, 2)`` hold ``(dx, dy)`` in pixels.
    """
    points, visible = trajectories.points, trajectories.visible
    out = []
    for n in range(trajectories.num_driving):
        start, end = points[n], points[n + 1]
        write = visible[n] if release_missing_points else visible[n] & visible[n + 1]
        keys = np.flatnonzero(write)
        rows = start[keys, 1].astype(np.int64)
        cols = start[keys, 0].astype(np.int64)
        vectors = end[keys] - start[keys]
        # keep the last keypoint per pixel: unique over the reversed order gives the last occurrence
        flat = rows * trajectories.width + cols
        _, last = np.unique(flat[::-1], return_index=True)
        keep = np.sort(len(flat) - 1 - last)
        out.append((rows[keep], cols[keep], vectors[keep]))
    return out


def trajectory_map(trajectories: Trajectories, *, release_missing_points: bool = False) -> np.ndarray:
    """``P_s`` before filtering: float32 ``(N, 2, H, W)`` with the step displacements at their start pixels."""
    h, w = trajectories.height, trajectories.width
    out = np.zeros((trajectories.num_driving, 2, h, w), np.float32)
    steps = step_displacements(trajectories, release_missing_points=release_missing_points)
    for n, (rows, cols, vectors) in enumerate(steps):
        out[n, :, rows, cols] = vectors
    return out


def sparse_motion_field(trajectories: Trajectories, *, kernel_size: int = KERNEL_SIZE, sigma: float = SIGMA,
                        release_missing_points: bool = False, progress: bool = False) -> np.ndarray:
    """``F_s``: float32 ``(N, 2, H, W)``, equal to the release's per-frame ``cv2.filter2D`` (see module doc)."""
    _check_kernel(kernel_size, sigma)
    h, w = trajectories.height, trajectories.width
    a_y, lo_y, hi_y = _reflected_kernels(h, kernel_size, float(sigma))
    a_x, lo_x, hi_x = _reflected_kernels(w, kernel_size, float(sigma))
    a_y, a_x = a_y.astype(np.float32), a_x.astype(np.float32)
    out = np.zeros((trajectories.num_driving, 2, h, w), np.float32)
    steps = step_displacements(trajectories, release_missing_points=release_missing_points)
    for n, (rows, cols, vectors) in enumerate(tqdm(steps, desc="sparse motion field", unit="frame",
                                                   disable=not progress)):
        for row, col, vector in zip(rows, cols, vectors):
            y0, y1, x0, x1 = lo_y[row], hi_y[row], lo_x[col], hi_x[col]
            patch = np.outer(a_y[y0:y1, row], a_x[x0:x1, col])
            out[n, 0, y0:y1, x0:x1] += np.float32(vector[0]) * patch
            out[n, 1, y0:y1, x0:x1] += np.float32(vector[1]) * patch
    return out
