"""DisPose's per-video guidance, held once per job and sliced per tile for the ControlNet.

The motion fields (paper Sec. 4.1: sparse ``F_s`` from keypoint trajectories, dense ``F_d`` from CMP
propagation) exist for the N driving frames; the keypoint correspondence (Sec. 4.2, Eq. 6) is built
from the reference keypoint embeddings (DIFT features at the reference keypoints) placed at each
frame's keypoints.  A tile of the video is ``[0, i, i+1, ...]`` where 0 is the reference frame
(:mod:`dispose.pipelines.tiling`).

What the release does for a tile, and we reproduce: the ControlNet receives the flows of the tile's
driving frames and prepends a zero flow for the reference frame; the correspondence grid of the tile
is built from the keypoints of its frames, the reference pose at position 0.  For classifier-free
guidance the flows and the correspondence are the same in the unconditional half (only the CLIP
embedding, the reference latent and the pose latents are zeroed there): the release duplicates them,
the pipeline encodes them once and shares the encoding between the halves.

A tile's inputs are built on demand from the per-video tensors instead of being stored for the whole
video: for 576x1024 a frame's correspondence grid alone takes ~6 MB in fp16, and building it is a
scatter of 18 points.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dispose.guidance.correspondence import correspondence_map


@dataclass
class DisPoseGuidance:
    """Guidance of one video of ``N`` driving frames (+ the reference frame 0).

    Attributes:
        sparse_flow: ``F_s`` (N, 2, H, W), driving frame i is video frame i + 1.
        dense_flow: ``F_d`` (N, 2, H, W), or None (zeros are given to the ControlNet).
        point_embeddings: (K, C) reference keypoint embeddings.
        points: (N + 1, K, 2) normalised keypoints, index 0 = the reference pose.
        visible: (N + 1, K) bool.
    """

    sparse_flow: torch.Tensor
    dense_flow: torch.Tensor | None
    point_embeddings: torch.Tensor
    points: torch.Tensor
    visible: torch.Tensor

    def __post_init__(self) -> None:
        n = self.sparse_flow.shape[0]
        if self.sparse_flow.dim() != 4 or self.sparse_flow.shape[1] != 2:
            raise ValueError(f"sparse_flow: expected (N, 2, H, W), got {tuple(self.sparse_flow.shape)}")
        if self.dense_flow is not None and self.dense_flow.shape != self.sparse_flow.shape:
            raise ValueError(f"dense_flow {tuple(self.dense_flow.shape)} must match sparse_flow "
                             f"{tuple(self.sparse_flow.shape)}")
        if self.points.shape[0] != n + 1 or self.visible.shape != self.points.shape[:2]:
            raise ValueError(f"points/visible: expected N + 1 = {n + 1} frames (reference first), got "
                             f"{tuple(self.points.shape)} / {tuple(self.visible.shape)}")

    @property
    def num_frames(self) -> int:
        """Frames of the video including the reference frame."""
        return self.sparse_flow.shape[0] + 1

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the flows (the generation size)."""
        return self.sparse_flow.shape[-1], self.sparse_flow.shape[-2]

    def window(self, indices: list[int], *, device: torch.device, dtype: torch.dtype) -> dict:
        """ControlNet guidance of one tile (the arguments of ``controlnet.encode_guidance``).

        Returns ``sparse_flow`` / ``dense_flow`` (T, 2, H, W) with zeros at the reference position,
        ``point_features`` (T, C, H/16, W/16) and ``point_mask`` (T, H/16, W/16).
        """
        if indices[0] != 0 or any(i <= 0 for i in indices[1:]):
            raise ValueError(f"a tile must start with the reference frame 0, got {indices[:3]}...")
        driving = torch.as_tensor([i - 1 for i in indices[1:]], dtype=torch.long)

        def flows(field: torch.Tensor | None) -> torch.Tensor:
            out = torch.zeros(len(indices), *self.sparse_flow.shape[1:], device=device, dtype=dtype)
            if field is not None:
                out[1:] = field[driving.to(field.device)].to(device, dtype)
            return out

        frames = torch.as_tensor(indices, dtype=torch.long)
        features, mask = correspondence_map(self.point_embeddings.to(device, dtype), self.points[frames].to(device),
                                            self.visible[frames].to(device), self.size)
        return {"sparse_flow": flows(self.sparse_flow), "dense_flow": flows(self.dense_flow),
                "point_features": features, "point_mask": mask}
