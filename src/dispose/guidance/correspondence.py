"""Keypoint correspondence map ``F_p`` (paper sec. 4.2, Eq. 6).

Each reference body keypoint gets an embedding: the DIFT feature of the reference image at that
keypoint (:func:`point_embeddings`).  For every driving frame, the embeddings are written into a grid at
the positions the same keypoints take in that frame (:func:`correspondence_map`); the point encoder
(:mod:`dispose.models.point_encoder`) turns the grid into multi-scale ControlNet residuals.

What the release does, and what we reproduce (numbers below are pixels of the W x H generation size):

* Embeddings come from the ``t=261`` / up-block-1 DIFT map (1280 channels, H/16 x W/16), resized with
  bilinear interpolation (``align_corners=False``) to image resolution and read at
  ``clip(floor(x * size), 0, size - 1)`` per axis.  The release unpacks the reference tensor's shape
  as ``(b, c, w, h)`` although it is ``(b, c, H, W)``, so the resized grid it reads is W rows by H
  columns; points are scaled to that grid consistently, so the only effect is where the sub-pixel
  sampling positions fall.  ``release_axes=True`` (default) reproduces it; ``False`` uses H x W.
  We evaluate the resized map only at the keypoints (same formula as ``F.interpolate``), instead of
  materialising a 1280 x H x W tensor.
* Invisible reference keypoints get zero embeddings; visible ones outside the image are clipped to
  the border (not skipped, unlike in the frames below).
* The grid is at 1/16 of the image: ``(H // 16, W // 16)``, the point adapter's first downsample rate.
  A keypoint lands on cell ``clip(floor(x * (W // 16)), 0, W // 16 - 1)`` (same for y).  It is
  placed when it is visible in that frame and neither coordinate is negative (the release skips
  points with a negative coordinate, but clips those beyond the right/bottom edge).  Points sharing a
  cell are averaged; the mask is 1 on every cell that received a point.
* Quirk kept: visibility in the *frame* decides placement, so a keypoint invisible in the reference
  but visible in the frame places a zero embedding, sets the mask and counts in the average.  Pass
  ``reference_visible`` to drop such points instead.
* Only the 18 body keypoints of the first detected person are used (the release zips the candidate
  list with the first person's subset).

* In the release, every window of frames the ControlNet sees starts with the reference frame, whose
  keypoints are the reference pose itself: pass the reference pose as frame 0 to reproduce that.

Deliberate differences: sums and averages are accumulated in float32 (the release works in the
default dtype, fp16 in its script) and cast back to the embeddings' dtype; ``floor(x * size)`` is taken
in the points' precision (float32 unless float64 is given; the release uses numpy's).

Paper vs release: Eq. 6 writes each embedding at the keypoint's pixel in an H x W map and says nothing
of collisions; the release uses the 1/16 grid and averages collisions, which we follow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dispose.pose.keypoints import Pose

#: Downsampling of the correspondence grid relative to the image (the point adapter's first level).
GRID_STRIDE = 16


def _tensor(value, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value.to(device)
    else:
        tensor = torch.as_tensor(np.asarray(value), device=device)
    return tensor.to(dtype) if dtype is not None else tensor


def _float_coords(points: torch.Tensor) -> torch.Tensor:
    return points if points.dtype == torch.float64 else points.float()


def _cell(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Index of the cell holding normalised ``coord`` on an axis of ``size`` cells: clip(floor(c * size))."""
    return torch.floor(coord * size).long().clamp(0, size - 1)


def _bilinear_source(index: torch.Tensor, size_in: int, size_out: int):
    """Source indices and weight of output ``index`` when resizing ``size_in`` -> ``size_out``
    bilinearly with ``align_corners=False`` (PyTorch's formula)."""
    scale = size_in / size_out
    source = ((index.to(torch.float32) + 0.5) * scale - 0.5).clamp(min=0.0)
    low = source.long()
    high = torch.where(low < size_in - 1, low + 1, low)
    return low, high, (source - low).unsqueeze(-1)


def sample_resized(features: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                   size: tuple[int, int]) -> torch.Tensor:
    """Values of ``F.interpolate(features[None], size, mode="bilinear")`` at integer (rows, cols).

    ``features`` is (C, h, w); ``rows``/``cols`` are (K,) indices into the resized (size[0], size[1])
    grid.  Returns (K, C) in float32, without building the resized map.
    """
    _, height, width = features.shape
    y0, y1, wy = _bilinear_source(rows, height, size[0])
    x0, x1, wx = _bilinear_source(cols, width, size[1])
    flat = features.float().flatten(1).t()  # (h*w, C)

    def at(y, x):
        return flat[y * width + x]

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


def point_embeddings(features: torch.Tensor, points, visible, image_size: tuple[int, int], *,
                     release_axes: bool = True) -> torch.Tensor:
    """Reference point embeddings: the DIFT feature at each reference keypoint.

    Args:
        features: DIFT map (C, h, w) or (1, C, h, w), e.g. ``DiftFeaturizer(...)(ref_image)``.
        points: (K, 2) reference keypoints, normalised (x / W, y / H).
        visible: (K,) bool; invisible points get zero embeddings.
        image_size: (W, H) of the reference image (the generation size).
        release_axes: read the resized map on the release's transposed (W rows x H cols) grid.

    Returns:
        (K, C) embeddings in ``features``' dtype and device.
    """
    if features.dim() == 4:
        if features.shape[0] != 1:
            raise ValueError(f"features: expected one reference map, got batch of {features.shape[0]}")
        features = features[0]
    if features.dim() != 3:
        raise ValueError(f"features: expected (C, h, w), got shape {tuple(features.shape)}")
    device = features.device
    points = _float_coords(_tensor(points, device))
    visible = _tensor(visible, device, torch.bool)
    if points.dim() != 2 or points.shape[1] != 2 or visible.shape != points.shape[:1]:
        raise ValueError(f"points (K, 2) and visible (K,) expected, got {tuple(points.shape)} and "
                         f"{tuple(visible.shape)}")
    width, height = image_size
    if width < 1 or height < 1:
        raise ValueError(f"image_size must be a positive (W, H), got {image_size}")
    rows_n, cols_n = (width, height) if release_axes else (height, width)
    rows = _cell(points[:, 1], rows_n)
    cols = _cell(points[:, 0], cols_n)
    values = sample_resized(features, rows, cols, (rows_n, cols_n))
    return (values * visible.unsqueeze(1)).to(features.dtype)


def correspondence_map(embeddings: torch.Tensor, points, visible, image_size: tuple[int, int], *,
                       stride: int = GRID_STRIDE,
                       reference_visible=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoint correspondence grids ``F_p`` of N frames (Eq. 6).

    Args:
        embeddings: (K, C) reference point embeddings (:func:`point_embeddings`).
        points: (N, K, 2) keypoints of each frame, normalised to the frame size (x / W, y / H).
        visible: (N, K) bool.
        image_size: (W, H) of the frames.
        stride: grid downsampling (16 in DisPose).
        reference_visible: optional (K,) bool; when given, keypoints missing in the reference are not
            placed (the release places their zero embeddings).

    Returns:
        ``features`` (N, C, H // stride, W // stride): mean embedding of the points in each cell (0 where
        none), and ``mask`` (N, H // stride, W // stride): 1 where a cell holds a point; both in the
        embeddings' dtype and device.  Memory is N x C x cells: call per window of frames for long videos.
    """
    device, dtype = embeddings.device, embeddings.dtype
    points = _float_coords(_tensor(points, device))
    visible = _tensor(visible, device, torch.bool)
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings: expected (K, C), got shape {tuple(embeddings.shape)}")
    num_points, channels = embeddings.shape
    if points.dim() != 3 or points.shape[1:] != (num_points, 2) or visible.shape != points.shape[:2]:
        raise ValueError(f"points (N, {num_points}, 2) and visible (N, {num_points}) expected, got "
                         f"{tuple(points.shape)} and {tuple(visible.shape)}")
    width, height = image_size
    grid_h, grid_w = height // stride, width // stride
    if grid_h < 1 or grid_w < 1:
        raise ValueError(f"image_size {image_size} is smaller than one grid cell of {stride} pixels")
    num_frames = points.shape[0]

    placed = visible & (points >= 0).all(-1)
    if reference_visible is not None:
        placed = placed & _tensor(reference_visible, device, torch.bool).reshape(1, -1)
    frame_idx, point_idx = placed.nonzero(as_tuple=True)
    coords = points[frame_idx, point_idx]
    cells = (frame_idx * grid_h + _cell(coords[:, 1], grid_h)) * grid_w + _cell(coords[:, 0], grid_w)

    # Average per occupied cell only, then write those cells into the (mostly empty) dense grid.
    occupied, slot = torch.unique(cells, return_inverse=True)
    sums = torch.zeros(len(occupied), channels, device=device, dtype=torch.float32)
    sums.index_add_(0, slot, embeddings.float()[point_idx])
    counts = torch.bincount(slot, minlength=len(occupied)).to(torch.float32)
    cells_per_frame = grid_h * grid_w
    features = torch.zeros(num_frames, channels, cells_per_frame, device=device, dtype=dtype)
    features[occupied // cells_per_frame, :, occupied % cells_per_frame] = (sums / counts[:, None]).to(dtype)
    mask = torch.zeros(num_frames * cells_per_frame, device=device, dtype=dtype)
    mask[occupied] = 1
    return (features.reshape(num_frames, channels, grid_h, grid_w),
            mask.reshape(num_frames, grid_h, grid_w))


def body_keypoints(poses: Sequence[Pose]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised body keypoints (N, 18, 2) float32 and visibility (N, 18) bool of a list of poses."""
    if not poses:
        raise ValueError("poses: expected at least one pose")
    points = torch.from_numpy(np.stack([pose.body for pose in poses]).astype(np.float32))
    visible = torch.from_numpy(np.stack([pose.body_visible for pose in poses]))
    return points, visible
