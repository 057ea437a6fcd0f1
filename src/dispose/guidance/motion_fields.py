"""The dense motion field ``F_d`` of DisPose's motion field guidance (paper sec. 4.1).

:func:`dense_motion_field` takes the reference image at the generation size and the keypoint trajectories
(:func:`dispose.guidance.trajectories.body_trajectories`) and returns ``F_d``: float32 ``(N, 2, H, W)``
reference-based dense flow in pixels of the generation size.  ``method="cmp"`` runs CMP exactly as the
release on ``P_d`` (Eq. 4, :mod:`.reference_flow`, on CMP's 384 x 384 grid; :mod:`dispose.guidance.cmp`;
saturates at about +-49.5 px of the 384 grid); ``method="propagate"`` is the weight-free substitute of
:mod:`.propagation` (not in the release).  The sparse field ``F_s`` (Eq. 3, :mod:`.sparse_field`) is not
computed here: it is generated from the trajectories where it is used (:mod:`.stage`).

Frame ``n`` of ``F_d`` belongs to driving frame ``n`` (the reference is frame 0 of the trajectories).
``release_missing_points`` selects how undetected keypoints are treated in ``P_d`` (see
:mod:`.reference_flow`; the default ignores them); the propagation always ignores them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

from dispose.guidance.cmp import CMP, CMP_SIZE, cmp_dense_flow, resize_flow_nearest, resize_nearest_384
from dispose.guidance.propagation import FlowPropagator, PropagationSettings
from dispose.guidance.reference_flow import reference_displacements, reference_sparse_flow
from dispose.guidance.trajectories import Trajectories

DenseMethod = Literal["cmp", "propagate"]
DENSE_METHODS = ("cmp", "propagate", "none")


def _check_image(image: np.ndarray, trajectories: Trajectories) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"reference image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if image.shape[:2] != (trajectories.height, trajectories.width):
        raise ValueError(f"reference image is {image.shape[1]}x{image.shape[0]} but the trajectories are at "
                         f"{trajectories.width}x{trajectories.height}")
    return image


def cmp_motion_field(cmp: CMP, image: np.ndarray, reference_flow: np.ndarray, reference_mask: np.ndarray, *,
                     chunk_size: int = 8, progress: bool = False) -> np.ndarray:
    """``F_d`` by CMP as the release: S x S grid inputs (S = 384, the size of ``reference_flow``), reference
    resized to S x S (nearest), CMP's flow resized back (nearest) and scaled by x * W / S, y * H / S."""
    height, width = image.shape[:2]
    grid = reference_flow.shape[-1]
    flow = cmp_dense_flow(cmp, resize_nearest_384(image, grid), reference_flow, reference_mask,
                          chunk_size=chunk_size, progress=progress)
    return resize_flow_nearest(flow, height, width).numpy()


def dense_motion_field_chunks(reference_image: np.ndarray, trajectories: Trajectories,
                              method: DenseMethod = "cmp", cmp: CMP | None = None, *,
                              release_missing_points: bool = False,
                              chunk_frames: int = 64, cmp_chunk_size: int = 8,
                              propagation: PropagationSettings | None = None) -> Iterator[np.ndarray]:
    """``F_d`` of a video (see module docstring), ``chunk_frames`` driving frames at a time, each chunk
    float32 ``(n, 2, H, W)``, so that a long video never holds its whole field in float32.  CMP encodes the
    reference once per chunk; the propagation builds its person region once."""
    if method not in ("cmp", "propagate"):
        raise ValueError(f"dense method must be cmp or propagate, got {method!r}")
    if method == "cmp" and cmp is None:
        raise ValueError("method='cmp' needs a loaded CMP model (dispose.guidance.cmp.load_cmp)")
    image = _check_image(reference_image, trajectories)
    propagator = None
    if method == "propagate":
        propagator = FlowPropagator(image, trajectories.points[0], trajectories.visible[0], propagation)
    for start in range(0, trajectories.num_driving, chunk_frames):
        frames = [0, *range(start + 1, min(start + chunk_frames, trajectories.num_driving) + 1)]
        part = Trajectories(trajectories.points[frames], trajectories.visible[frames], trajectories.width,
                            trajectories.height)
        if propagator is not None:
            _, vectors, given = reference_displacements(part)
            yield propagator.propagate(vectors, given)
            continue
        flow, mask = reference_sparse_flow(part, size=CMP_SIZE, release_missing_points=release_missing_points)
        with torch.no_grad():
            yield cmp_motion_field(cmp, image, flow, mask, chunk_size=cmp_chunk_size)


def dense_motion_field(reference_image: np.ndarray, trajectories: Trajectories, method: DenseMethod = "cmp",
                       cmp: CMP | None = None, **options) -> np.ndarray:
    """``F_d`` of every driving frame, float32 ``(N, 2, H, W)`` (:func:`dense_motion_field_chunks` joined)."""
    return np.concatenate(list(dense_motion_field_chunks(reference_image, trajectories, method, cmp,
                                                         **options)))
