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

:func:`save_motion_fields` writes them to a safetensors file (layout in its docstring).

Frame ``n`` of every field belongs to driving frame ``n`` (the reference is frame 0 of the trajectories,
so the fields have one frame less than the trajectories).  ``release_missing_points`` selects how keypoints
that are not detected are treated in ``F_s`` and ``P_d`` (see those modules; the default ignores them);
the propagation always ignores them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import save_file

from dispose.guidance.cmp import CMP, CMP_SIZE, cmp_dense_flow, resize_flow_nearest, resize_nearest_384
from dispose.guidance.propagation import FlowPropagator, PropagationSettings
from dispose.guidance.reference_flow import reference_displacements, reference_sparse_flow
from dispose.guidance.sparse_field import KERNEL_SIZE, SIGMA, sparse_motion_field
from dispose.guidance.trajectories import Trajectories
from dispose.media.files import atomic_path

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


#: What each tensor of a motion-field file holds (also stored in the file's metadata under "tensors").
FILE_TENSORS = {
    "sparse_flow": "F_s (Eq. 3): float32 (N, 2, H, W); channel 0 = x, 1 = y; frame-to-frame keypoint "
                   "displacements in pixels of the W x H generation frame, Gaussian-filtered (values are "
                   "pixels times kernel weights, so small)",
    "dense_flow": "F_d: float32 (N, 2, H, W); reference -> driving frame n displacement in pixels of W x H, "
                  "defined at the reference's pixels (absent with dense=none)",
    "reference_flow": "P_d (Eq. 4): float32 (N, 2, 384, 384); x_n - x_0 in pixels of CMP's 384 x 384 grid, "
                      "written at the reference keypoints",
    "reference_mask": "float32 (N, 2, 384, 384); 1 where reference_flow is given (both channels)",
    "trajectories": "float32 (N + 1, 18, 2); body keypoints (x, y) in pixels of W x H, frame 0 = reference, "
                    "(0, 0) where not visible",
    "visibility": "bool (N + 1, 18); keypoint detected",
    "foreground": "float32 (H, W) in [0, 1]; person region of dense=propagate (absent otherwise)",
}


def save_motion_fields(path: str | Path, fields: MotionFields, metadata: dict[str, str] | None = None) -> None:
    """Write ``fields`` to a safetensors file, atomically (tensor layout: :data:`FILE_TENSORS`).

    The file's metadata holds ``format`` (``dispose-motion-fields/1``), ``width``, ``height``, ``frames``,
    ``dense_method``, ``tensors`` (JSON of :data:`FILE_TENSORS`) and the given ``metadata`` (strings).
    """
    traj = fields.trajectories
    tensors = {
        "sparse_flow": fields.sparse,
        "reference_flow": fields.reference_flow,
        "reference_mask": fields.reference_mask,
        "trajectories": traj.points.astype(np.float32),
        "visibility": traj.visible,
    }
    if fields.dense is not None:
        tensors["dense_flow"] = fields.dense
    if fields.foreground is not None:
        tensors["foreground"] = fields.foreground
    info = {"format": "dispose-motion-fields/1", "width": str(traj.width), "height": str(traj.height),
            "frames": str(fields.num_frames), "dense_method": fields.dense_method,
            "tensors": json.dumps({k: v for k, v in FILE_TENSORS.items() if k in tensors}),
            **(metadata or {})}
    with atomic_path(path) as tmp:
        save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, str(tmp),
                  metadata=info)
