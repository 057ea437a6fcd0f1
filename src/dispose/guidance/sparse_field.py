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
the kernel is larger than the image).  For F frames that is one batched matrix product
``(F, 2, H, K) @ (F, 1, K, W)``, which runs on any torch device (:func:`sparse_field_torch`): the pipeline
can generate the field of a tile where and when it is used instead of storing it
(``bench/bench_sparse_field.py``: the ratio to the release's direct filter).

Deliberate differences: float32 output by default (the release keeps float64 until the pipeline casts it);
``kernel_size`` must be odd (the release's grid is off-centre for even sizes).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
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


@lru_cache(maxsize=16)
def _spread_rows(length: int, kernel_size: int, sigma: float, device: torch.device,
                 dtype: torch.dtype) -> torch.Tensor:
    """``(length, length)``: row ``p`` = how a unit at input pixel ``p`` spreads over the output pixels of one
    axis under the reflected 1-D kernel (the transpose of the filter's matrix)."""
    g = gaussian_kernel_1d(kernel_size, sigma)
    radius = kernel_size // 2
    out = np.arange(length)[:, None]
    taps = reflect_101(out + np.arange(-radius, radius + 1)[None, :], length)
    spread = np.zeros((length, length), np.float64)
    np.add.at(spread, (taps, np.broadcast_to(out, taps.shape)), np.broadcast_to(g, taps.shape))
    return torch.from_numpy(spread).to(dtype).to(device)  # cast on the CPU: MPS has no float64


def keypoint_steps(trajectories: torch.Tensor | np.ndarray, visible: torch.Tensor | np.ndarray,
                   frames: Sequence[int] | torch.Tensor, height: int, width: int, *,
                   release_missing_points: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pixels the release writes for driving frames ``frames`` (step ``frames[i]`` -> ``frames[i] + 1`` of
    the trajectories), on the CPU: ``(rows, cols, vectors)``, int64 ``(F, K)`` and float64 ``(F, K, 2)``.

    A keypoint that writes nothing (missing, or overwritten by a later keypoint on the same pixel) has a zero
    vector at pixel (0, 0).  ``trajectories``: pixels ``(N + 1, K, 2)`` (x, y), frame 0 = the reference;
    ``visible``: bool ``(N + 1, K)``; coordinates of invisible points are ignored (read as (0, 0)).
    """
    points = torch.as_tensor(trajectories).detach().to("cpu", torch.float64)
    seen = torch.as_tensor(visible).detach().to("cpu", torch.bool)
    if points.dim() != 3 or points.shape[2] != 2 or seen.shape != points.shape[:2] or points.shape[0] < 2:
        raise ValueError(f"trajectories must be (N + 1, K, 2) with N >= 1 and visibility (N + 1, K), got "
                         f"{tuple(points.shape)} and {tuple(seen.shape)}")
    frames = torch.as_tensor(frames, dtype=torch.long).detach().to("cpu").reshape(-1)
    num_driving = points.shape[0] - 1
    if frames.numel() and not (0 <= int(frames.min()) and int(frames.max()) < num_driving):
        raise ValueError(f"frames must index the {num_driving} driving frames (0..{num_driving - 1}), got "
                         f"{frames.tolist()}")
    points = torch.where(seen[..., None], points, 0.0)
    if not torch.isfinite(points).all():
        raise ValueError("trajectory points contain NaN or inf")
    start, end = points[frames], points[frames + 1]
    write = seen[frames] if release_missing_points else seen[frames] & seen[frames + 1]
    rows, cols = start[..., 1].long(), start[..., 0].long()  # int(): truncation as the release
    if ((rows < 0) | (rows >= height) | (cols < 0) | (cols >= width))[write].any():
        raise ValueError(f"a visible keypoint lies outside the {width}x{height} image: clip the trajectories "
                         "to the image (dispose.guidance.trajectories.body_trajectories does)")
    pixel = rows * width + cols
    num_keypoints = points.shape[1]
    later = torch.ones(num_keypoints, num_keypoints, dtype=torch.bool).triu(1)  # [k, k']: k' > k
    overwritten = ((pixel[:, :, None] == pixel[:, None, :]) & write[:, None, :] & later).any(-1)
    keep = write & ~overwritten
    zero = torch.zeros((), dtype=torch.long)
    return (torch.where(keep, rows, zero), torch.where(keep, cols, zero),
            torch.where(keep[..., None], end - start, 0.0))


def sparse_field_torch(trajectories: torch.Tensor | np.ndarray, visible: torch.Tensor | np.ndarray,
                       frames: Sequence[int] | torch.Tensor, height: int, width: int, *,
                       release_missing_points: bool = False, kernel_size: int = KERNEL_SIZE,
                       sigma: float = SIGMA, device: torch.device | str | None = None,
                       dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None) -> torch.Tensor:
    """``F_s`` of driving frames ``frames``: ``(len(frames), 2, H, W)`` on ``device`` in ``dtype``.

    Frame ``i`` of the result is ``F_s[frames[i]]`` of :func:`sparse_motion_field` (the step from trajectory
    frame ``frames[i]`` to ``frames[i] + 1``; frame 0 of the trajectories is the reference).  ``trajectories``
    are pixels ``(N + 1, K, 2)`` at ``width`` x ``height``, ``visible`` bool ``(N + 1, K)``; ``device``
    defaults to the trajectories' device (CPU for arrays).  Computed in float64 when ``dtype`` is float64,
    else in float32 and then cast.  ``out``: a contiguous float32 (float64) tensor of the result's shape to
    write into and return (its device and dtype are used); reusing one per tile saves the allocation, which on
    the CPU costs as much as the computation (fresh pages).
    """
    _check_kernel(kernel_size, sigma)
    if out is not None:
        device = out.device
    elif device is None:
        device = trajectories.device if isinstance(trajectories, torch.Tensor) else "cpu"
    device = torch.device(device)
    rows, cols, vectors = keypoint_steps(trajectories, visible, frames, height, width,
                                         release_missing_points=release_missing_points)
    num_frames, num_keypoints = rows.shape
    shape = (num_frames, 2, height, width)
    given = out is not None
    if given:
        if (tuple(out.shape) != shape or out.dtype not in (torch.float32, torch.float64)
                or not out.is_contiguous()):
            raise ValueError(f"out must be a contiguous float32/float64 tensor {shape}, got {out.dtype} "
                             f"{tuple(out.shape)}")
        compute = out.dtype
    else:
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        out = torch.empty(shape, device=device, dtype=compute)
    along_y = _spread_rows(height, kernel_size, float(sigma), device, compute)[rows.to(device)]  # (F, K, H)
    along_x = _spread_rows(width, kernel_size, float(sigma), device, compute)[cols.to(device)]  # (F, K, W)
    vectors = vectors.to(compute).to(device).transpose(1, 2)  # (F, 2, K)
    # out[f, c] = sum_k vectors[f, c, k] * outer(along_y[f, k], along_x[f, k]):
    # (F * 2) products (H, K) @ (K, W)
    left = (along_y[:, None] * vectors[..., None]).reshape(-1, num_keypoints, height).transpose(1, 2)
    right = along_x[:, None].expand(-1, 2, -1, -1).reshape(-1, num_keypoints, width)
    torch.bmm(left, right, out=out.view(-1, height, width))
    return out if given else out.to(dtype)


def trajectory_map(trajectories: Trajectories, *, release_missing_points: bool = False) -> np.ndarray:
    """``P_s`` before filtering: float32 ``(N, 2, H, W)``, the step displacements at their start pixels."""
    h, w, n = trajectories.height, trajectories.width, trajectories.num_driving
    rows, cols, vectors = keypoint_steps(trajectories.points, trajectories.visible, range(n), h, w,
                                         release_missing_points=release_missing_points)
    out = np.zeros((n, h, w, 2), np.float32)
    frame = np.broadcast_to(np.arange(n)[:, None], rows.shape)
    np.add.at(out, (frame, rows.numpy(), cols.numpy()), vectors.numpy().astype(np.float32))
    return out.transpose(0, 3, 1, 2).copy()


def sparse_motion_field(trajectories: Trajectories, *, kernel_size: int = KERNEL_SIZE, sigma: float = SIGMA,
                        release_missing_points: bool = False, progress: bool = False,
                        chunk_frames: int = 16) -> np.ndarray:
    """``F_s`` of every driving frame: float32 ``(N, 2, H, W)``, equal to the release's per-frame
    ``cv2.filter2D`` (see module doc); :func:`sparse_field_torch` on the CPU, ``chunk_frames`` at a time."""
    h, w, n = trajectories.height, trajectories.width, trajectories.num_driving
    points, visible = torch.from_numpy(trajectories.points), torch.from_numpy(trajectories.visible)
    out = np.empty((n, 2, h, w), np.float32)
    for start in tqdm(range(0, n, chunk_frames), desc="sparse motion field", unit="tile",
                      disable=not progress):
        frames = range(start, min(start + chunk_frames, n))
        sparse_field_torch(points, visible, frames, h, w, release_missing_points=release_missing_points,
                           kernel_size=kernel_size, sigma=sigma,
                           out=torch.from_numpy(out[frames.start:frames.stop]))
    return out
