"""DisPose's motion field guidance for one video (paper sec. 4.1): ``F_s``, ``P_d`` and ``F_d`` together.

:func:`compute_motion_fields` takes the reference image at the generation size and the keypoint
trajectories (:func:`dispose.guidance.trajectories.body_trajectories`) and returns

* ``sparse`` = ``F_s`` (Eq. 3, :mod:`.sparse_field`): float32 ``(N, 2, H, W)``, Gaussian-filtered
  frame-to-frame keypoint displacements (pixels x kernel weight);
* ``reference_flow`` / ``reference_mask`` = ``P_d`` (Eq. 4, :mod:`.reference_flow`) on CMP's 384 x 384
  grid: float32 ``(N, 2, 384, 384)`` displacements from the reference in grid pixels, and the {0, 1} mask;
* ``dense`` = ``F_d``: float32 ``(N, 2, H, W)`` reference-based dense flow in pixels of the generation
  size, or ``None`` with ``dense="none"``.  ``dense="cmp"`` runs CMP exactly as the release
  (:mod:`dispose.guidance.cmp`; saturates at about +-49.5 px of the 384 grid); ``dense="propagate"`` is
  the weight-free substitute of :mod:`.propagation` (not in the release).

Frame ``n`` of every field belongs to driving frame ``n`` (the reference is frame 0 of the trajectories,
so the fields have one frame less than the trajectories).  ``release_missing_points`` selects how keypoints
that are not detected are treated in ``F_s`` and ``P_d`` (see those modules; the default ignores them);
the propagation always ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from dispose.guidance.cmp import CMP, CMP_SIZE, cmp_dense_flow, resize_flow_nearest, resize_nearest_384
from dispose.guidance.propagation import FlowPropagator, PropagationSettings
from dispose.guidance.reference_flow import reference_displacements, reference_sparse_flow
from dispose.guidance.sparse_field import KERNEL_SIZE, SIGMA, sparse_motion_field
from dispose.guidance.trajectories import Trajectories

DenseMethod = Literal["cmp", "propagate", "none"]
DENSE_METHODS = ("cmp", "propagate", "none")


@dataclass
class MotionFields:
    """Motion field guidance of N driving frames at the generation size ``W x H`` (see module docstring).

    ``foreground`` is the person region (float32 ``(H, W)`` in [0, 1]) of ``dense="propagate"``, else None.
    """

    trajectories: Trajectories
    sparse: np.ndarray
    reference_flow: np.ndarray
    reference_mask: np.ndarray
    dense: np.ndarray | None
    dense_method: str
    foreground: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return self.sparse.shape[0]


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


def compute_motion_fields(reference_image: np.ndarray, trajectories: Trajectories,
                          dense: DenseMethod = "cmp", cmp: CMP | None = None, *,
                          kernel_size: int = KERNEL_SIZE, sigma: float = SIGMA,
                          release_missing_points: bool = False, cmp_chunk_size: int = 8,
                          propagation: PropagationSettings | None = None,
                          progress: bool = False) -> MotionFields:
    """``F_s``, ``P_d`` and ``F_d`` of a video (see module docstring).

    ``reference_image``: uint8 RGB ``(H, W, 3)`` at the trajectories' size.  ``dense="cmp"`` needs ``cmp``
    (a loaded :class:`~dispose.guidance.cmp.CMP`, see :func:`~dispose.guidance.cmp.load_cmp`).
    """
    if dense not in DENSE_METHODS:
        raise ValueError(f"dense must be one of {', '.join(DENSE_METHODS)}, got {dense!r}")
    if dense == "cmp" and cmp is None:
        raise ValueError("dense='cmp' needs a loaded CMP model (dispose.guidance.cmp.load_cmp)")
    image = _check_image(reference_image, trajectories)
    sparse = sparse_motion_field(trajectories, kernel_size=kernel_size, sigma=sigma,
                                 release_missing_points=release_missing_points, progress=progress)
    flow, mask = reference_sparse_flow(trajectories, size=CMP_SIZE, release_missing_points=release_missing_points)
    dense_field, foreground = None, None
    if dense == "cmp":
        with torch.no_grad():
            dense_field = cmp_motion_field(cmp, image, flow, mask, chunk_size=cmp_chunk_size, progress=progress)
    elif dense == "propagate":
        propagator = FlowPropagator(image, trajectories.points[0], trajectories.visible[0], propagation)
        _, vectors, given = reference_displacements(trajectories)
        dense_field = propagator.propagate(vectors, given, progress=progress)
        foreground = propagator.foreground
    return MotionFields(trajectories=trajectories, sparse=sparse, reference_flow=flow, reference_mask=mask,
                        dense=dense_field, dense_method=dense, foreground=foreground)
