"""A weight-free dense motion field: edge-aware propagation of ``P_d`` over the reference image.

DisPose predicts ``F_d = CMP(P_d, I_ref)`` (paper sec. 4.1), which needs the CMP checkpoint.  This module
gives users without it a dense field with the same layout and meaning (reference-based flow in pixels
of the generation size, defined at the reference image's pixels): the reference displacements of the
keypoints (Eq. 4) spread over the person in the reference image.  It is *not* in the paper or the
release, and a DisPose checkpoint trained with CMP fields will see a different input distribution.

Method (OpenCV functions of the main modules only -- all present in ``opencv-python-headless``, no contrib
``ximgproc`` -- and scipy):

1. **Person region** ``alpha`` (computed once per reference): GrabCut (``cv2.grabCut``) on the reference at
   a working resolution (``work_size`` on the long side), initialised from the reference skeleton: thin
   limbs are sure foreground, thick limbs, the torso polygon and a head disc are probable foreground, a
   box around the skeleton (margin ``box_margin`` x body size) is probable background and everything
   outside it sure background.  Only connected components holding a sure-foreground pixel are kept,
   and the mask is upsampled bilinearly.  OpenCV's random generator is seeded before GrabCut, so the
   region (and the field) is the same in every call, whatever ran before in the process.  Its edges are those
   of the image at the working resolution (384 on the long side by default, the resolution CMP works at; the
   ControlNet reads the field at 1/8 of the generation size).
2. **Geodesic distances** ``D_k`` from every visible reference keypoint over the working grid
   (8-connected, Dijkstra from ``scipy.sparse.csgraph``): a step costs its length times
   ``1 + background_weight * (1 - alpha)`` plus ``edge_cost * body size * max(dE - edge_floor, 0)``
   (``dE``: CIELAB difference of the two pixels / 100), so distances jump across image edges (a strong
   edge costs several ``tau``) and grow fast through the background.
3. **Interpolation** per frame: ``F(x) = alpha(x) * sum_k w_k(x) v_k`` with softmin weights
   ``w_k = exp(-(D_k - min_j D_j) / tau) / sum(...)`` over the keypoints given in that frame, ``tau =
   softness`` x body size.  The weights sum to one, so a global translation of all keypoints moves the
   whole person region (``alpha = 1``) by exactly that vector; the blend between body parts has a
   constant width, so the field is smooth inside the body and changes across image edges.  The
   interpolated vectors are smooth, so they are computed at the working resolution and upsampled
   bilinearly like ``alpha``.

Body size: the larger side of the visible keypoints' bounding box, at least 15 % of the image's long side.
Seed widths: thin limbs 2 %, thick limbs 6 % of it (wider seeds put background into the person's colour
model).

Limitations: the person region is colour-based.  Where the person's colours match the background next to
them it is wrong: on ``musepose_ref.png`` it keeps the lit road between the legs and some night sky inside
the translucent sleeves.  Use CMP (``dense="cmp"``) for the release's behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from tqdm.auto import tqdm

from dispose.errors import UserError
from dispose.pose.drawing import LIMBS

TORSO = (1, 2, 8, 11, 5)  # neck, right shoulder, right hip, left hip, left shoulder
NOSE, NECK = 0, 1


@dataclass(frozen=True)
class PropagationSettings:
    """Tuning of :class:`FlowPropagator` (defaults were chosen on the shared example images)."""

    work_size: int = 384
    box_margin: float = 0.5
    grabcut_iterations: int = 5
    edge_cost: float = 0.3
    edge_floor: float = 0.05
    background_weight: float = 8.0
    softness: float = 0.08


def _grid_graph(lab: np.ndarray, background: np.ndarray, edge_cost: float, edge_floor: float,
                background_weight: float) -> coo_matrix:
    """Undirected 8-connected grid graph with edge-aware step costs (see module docstring)."""
    h, w = background.shape
    index = np.arange(h * w).reshape(h, w)
    rows, cols, costs = [], [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        y0, y1 = 0, h - dy
        x0, x1 = max(0, -dx), w - max(0, dx)
        a = (slice(y0, y1), slice(x0, x1))
        b = (slice(y0 + dy, y1 + dy), slice(x0 + dx, x1 + dx))
        colour = np.maximum(np.linalg.norm(lab[a] - lab[b], axis=-1) / 100.0 - edge_floor, 0.0)
        bg = 0.5 * (background[a] + background[b])
        step = np.hypot(dy, dx) * (1.0 + background_weight * bg) + edge_cost * colour
        rows.append(index[a].ravel())
        cols.append(index[b].ravel())
        costs.append(step.ravel())
    n = h * w
    return coo_matrix((np.concatenate(costs), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


class FlowPropagator:
    """Spreads keypoint displacements over the person of one reference image (see module docstring).

    Built once from the reference image (uint8 RGB ``(H, W, 3)``) and its keypoints (``(K, 2)`` pixels,
    ``visible`` ``(K,)``); :meth:`__call__` gives the dense field of one frame.
    """

    def __init__(self, image: np.ndarray, keypoints: np.ndarray, visible: np.ndarray,
                 settings: PropagationSettings | None = None) -> None:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"reference image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        keypoints = np.asarray(keypoints, np.float64).reshape(-1, 2)
        visible = np.asarray(visible, bool).reshape(-1)
        if len(visible) != len(keypoints):
            raise ValueError(f"{len(keypoints)} keypoints but {len(visible)} visibility flags")
        if not visible.any():
            raise UserError("no person found in the reference image (no visible body keypoint): the dense "
                            "motion field cannot be propagated")
        if not np.isfinite(keypoints[visible]).all():
            raise ValueError("visible reference keypoints contain NaN or inf")
        self.settings = settings or PropagationSettings()
        self.height, self.width = image.shape[:2]
        self.visible = visible
        scale = min(1.0, self.settings.work_size / max(self.height, self.width))
        self.work_shape = (max(1, round(self.height * scale)), max(1, round(self.width * scale)))
        h, w = self.work_shape
        small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        work_points = keypoints * np.array([w / self.width, h / self.height])
        extent = np.ptp(work_points[visible], axis=0).max() if visible.sum() > 1 else 0.0
        self.body_size = max(float(extent), 0.15 * max(h, w))
        work_alpha = self._person_mask(small, work_points, visible)
        self.foreground = self._upsample(work_alpha)
        self.distances = self._geodesic(small, work_alpha, work_points)

    # -- person region -------------------------------------------------------------------------
    def _seeds(self, points: np.ndarray, visible: np.ndarray) -> np.ndarray:
        h, w = self.work_shape
        size = self.body_size
        mask = np.full((h, w), cv2.GC_BGD, np.uint8)
        low = points[visible].min(axis=0) - self.settings.box_margin * size
        high = points[visible].max(axis=0) + self.settings.box_margin * size
        x0, y0 = np.clip(np.floor(low), 0, [w - 1, h - 1]).astype(int)
        x1, y1 = np.clip(np.ceil(high), 0, [w - 1, h - 1]).astype(int)
        mask[y0:y1 + 1, x0:x1 + 1] = cv2.GC_PR_BGD
        pix = np.round(points).astype(np.int32)
        limbs = [(a, b) for a, b in LIMBS if visible[a] and visible[b]]
        thick, thin = max(3, round(0.06 * size)), max(1, round(0.02 * size))
        torso = [k for k in TORSO if visible[k]]
        if len(torso) >= 3:
            cv2.fillPoly(mask, [cv2.convexHull(pix[torso])], cv2.GC_PR_FGD)
        if visible[NOSE] and visible[NECK]:
            radius = round(0.6 * np.linalg.norm(points[NOSE] - points[NECK]))
            cv2.circle(mask, tuple(int(v) for v in pix[NOSE]), max(radius, thick), cv2.GC_PR_FGD, -1)
        for value, width in ((cv2.GC_PR_FGD, thick), (cv2.GC_FGD, thin)):
            for a, b in limbs:
                cv2.line(mask, tuple(int(v) for v in pix[a]), tuple(int(v) for v in pix[b]), value, width)
            for k in np.flatnonzero(visible):
                cv2.circle(mask, tuple(int(v) for v in pix[k]), max(1, width // 2), value, -1)
        return mask

    def _person_mask(self, small: np.ndarray, points: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """float32 {0, 1} person mask at the working resolution."""
        mask = self._seeds(points, visible)
        sure = mask == cv2.GC_FGD
        foreground = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD))
        if foreground.all() or not foreground.any():
            return foreground.astype(np.float32)
        try:
            cv2.setRNGSeed(0)  # GrabCut's k-means draws from OpenCV's global RNG: the same mask every time
            cv2.grabCut(small, mask, None, np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64),
                        self.settings.grabcut_iterations, cv2.GC_INIT_WITH_MASK)
            foreground = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD))
        except cv2.error:  # degenerate colour models (e.g. a flat image): keep the seed region
            pass
        count, labels = cv2.connectedComponents(foreground.astype(np.uint8), connectivity=8)
        keep = np.zeros(count, bool)
        keep[np.unique(labels[sure])] = True
        keep[0] = False
        return keep[labels].astype(np.float32)

    def _upsample(self, work_alpha: np.ndarray) -> np.ndarray:
        """Bilinear upsampling of the working-resolution mask: float32 ``(H, W)`` in [0, 1]."""
        alpha = cv2.resize(work_alpha, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        return np.clip(alpha, 0.0, 1.0)

    # -- interpolation -------------------------------------------------------------------------
    def _geodesic(self, small: np.ndarray, alpha: np.ndarray, points: np.ndarray) -> np.ndarray:
        """float64 ``(K, h, w)`` geodesic distances (inf for keypoints not visible in the reference)."""
        h, w = self.work_shape
        lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
        lab[..., 0] *= 100.0 / 255.0  # OpenCV stores L in 0..255 for uint8 input
        lab[..., 1:] -= 128.0
        graph = _grid_graph(lab, 1.0 - alpha, self.settings.edge_cost * self.body_size,
                            self.settings.edge_floor, self.settings.background_weight)
        keys = np.flatnonzero(self.visible)
        cols = np.clip(np.round(points[keys, 0]).astype(int), 0, w - 1)
        rows = np.clip(np.round(points[keys, 1]).astype(int), 0, h - 1)
        found = dijkstra(graph.tocsr(), directed=False, indices=rows * w + cols)
        distances = np.full((len(points), h, w), np.inf)
        distances[keys] = found.reshape(len(keys), h, w)
        return distances

    def weights(self, given: np.ndarray) -> np.ndarray:
        """float32 ``(K, h, w)`` softmin weights over the keypoints ``given`` and visible in the reference."""
        use = np.asarray(given, bool) & self.visible
        weights = np.zeros(self.distances.shape, np.float32)
        if use.any():
            d = self.distances[use]
            tau = self.settings.softness * self.body_size
            e = np.exp(-(d - d.min(axis=0, keepdims=True)) / tau)
            weights[use] = e / e.sum(axis=0, keepdims=True)
        return weights

    def __call__(self, vectors: np.ndarray, given: np.ndarray) -> np.ndarray:
        """Dense float32 flow ``(2, H, W)`` of one frame from pixel ``vectors`` (K, 2) at ``given`` (K,)."""
        return self.propagate(vectors[None], given[None])[0]

    def propagate(self, vectors: np.ndarray, given: np.ndarray, progress: bool = False) -> np.ndarray:
        """Dense flows float32 ``(N, 2, H, W)`` from ``vectors`` ``(N, K, 2)`` and ``given`` ``(N, K)``."""
        vectors = np.asarray(vectors, np.float64)
        given = np.asarray(given, bool)
        if vectors.shape[1:] != (len(self.visible), 2) or given.shape != vectors.shape[:2]:
            raise ValueError(f"expected vectors (N, {len(self.visible)}, 2) and given "
                             f"(N, {len(self.visible)}), got {vectors.shape} and {given.shape}")
        if not np.isfinite(vectors[given]).all():
            raise ValueError("keypoint displacements contain NaN or inf")
        out = np.zeros((len(vectors), 2, self.height, self.width), np.float32)
        cache: dict[bytes, np.ndarray] = {}
        for n in tqdm(range(len(vectors)), desc="propagate dense flow", unit="frame", disable=not progress):
            use = given[n] & self.visible
            if not use.any():
                continue
            key = use.tobytes()
            if key not in cache:
                cache[key] = self.weights(use)[use].reshape(int(use.sum()), -1)
            small = (vectors[n, use].T.astype(np.float32) @ cache[key]).reshape(2, *self.work_shape)
            for c in range(2):
                out[n, c] = cv2.resize(small[c], (self.width, self.height), interpolation=cv2.INTER_LINEAR)
            out[n] *= self.foreground
        return out
