"""Reference-based sparse optical flow ``P_d`` (paper sec. 4.1, Eq. 4), CMP's input at inference.

Eq. 4: ``P_d = {(x_n^k - x_0^k, y_n^k - y_0^k) | n = 1..N}``: for every driving frame the displacement of
each keypoint from the *reference* pose, written at the keypoint's reference position.  What the release
computes (``sample_inputs_flow`` -> ``get_sparse_flow`` -> ``sample_optical_flow``) and we reproduce:

* It works on CMP's 384 x 384 grid: the trajectories (pixels at W x H, already clipped) are scaled by
  ``384 / W`` and ``384 / H`` (float64), displacements are taken in those 384-grid pixels, and each is
  written at ``(int(y_0 * 384 / H), int(x_0 * 384 / W))`` clipped to the grid, in both channels of the
  mask too (:func:`dispose.guidance.cmp.rasterize_sparse_flow`; the later keypoint wins on a shared pixel).
* CMP predicts the dense flow from it (:func:`dispose.guidance.cmp.cmp_dense_flow`) in 384-grid pixels; the
  release resizes that to W x H with nearest interpolation and scales x by ``W / 384``, y by ``H / 384``.
  CMP's output is a soft-argmax over 99 bins spanning +-50 px of the 384 grid, so every predicted
  component saturates below 49.5 grid pixels: about +-74 px horizontally and +-132 px vertically at
  576 x 1024.  Larger pose changes from the reference are under-estimated by ``F_d``.

Missing keypoints (``release_missing_points``):

* ``False`` (default): keypoint k is written for frame n only when it is visible in the reference and in
  frame n, so missing points contribute nothing.
* ``True``: the release's rule.  All 18 keypoints are written for every frame, with ``(0, 0)`` as the
  coordinates of a missing point: a point missing in the reference writes ``x_n - 0`` (its absolute
  position) at the top-left corner pixel (0, 0), with mask 1; a point missing in frame n writes
  ``-x_0`` (towards the corner) at its reference position; a point missing in both writes a zero
  flow with mask 1 at the corner.  Several such points share pixel (0, 0) and the last one wins (the
  release's indexed assignment does that on CPU; on CUDA the order of duplicate writes is unspecified).

The displacements at the generation size (:func:`reference_displacements`, sub-pixel positions) are what
the weight-free propagation (:mod:`dispose.guidance.propagation`) uses.
"""

from __future__ import annotations

import numpy as np

from dispose.guidance.cmp.release_input import CMP_SIZE, rasterize_sparse_flow
from dispose.guidance.trajectories import Trajectories


def reference_displacements(trajectories: Trajectories, *, grid: tuple[int, int] | None = None,
                            release_missing_points: bool = False
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, vectors, given)`` of Eq. 4, in pixels of the generation size or of ``grid = (w, h)``.

    ``starts`` float64 ``(K, 2)``: reference positions; ``vectors`` float64 ``(N, K, 2)``: ``x_n - x_0``;
    ``given`` bool ``(N, K)``: which keypoints are written in each frame (see module docstring).  With a
    ``grid`` the pixels are rescaled as the release does (``x / W * w``, ``y / H * h``).
    """
    points = trajectories.points
    if grid is not None:
        points = points / np.array([trajectories.width, trajectories.height], np.float64) * np.asarray(grid)
    visible = trajectories.visible
    starts = points[0]
    vectors = points[1:] - starts[None]
    if release_missing_points:
        given = np.ones(visible[1:].shape, bool)
    else:
        given = visible[1:] & visible[0][None]
    return starts, vectors, given


def reference_sparse_flow(trajectories: Trajectories, *, size: int = CMP_SIZE,
                          release_missing_points: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``P_d`` and its mask on the ``size`` x ``size`` CMP grid: two float32 ``(N, 2, size, size)`` arrays.

    Flow channels are ``(dx, dy)`` in grid pixels; the mask is 1 (both channels) where a keypoint is written.
    """
    starts, vectors, given = reference_displacements(trajectories, grid=(size, size),
                                                     release_missing_points=release_missing_points)
    n = trajectories.num_driving
    flow = np.zeros((n, 2, size, size), np.float32)
    mask = np.zeros((n, 2, size, size), np.float32)
    for i in range(n):
        keys = np.flatnonzero(given[i])
        flow[i], mask[i] = rasterize_sparse_flow(starts[keys], vectors[i, keys], size, size)
    return flow, mask
