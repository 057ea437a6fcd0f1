"""How the official DisPose release feeds CMP, reproduced and batched (paper sec. 4.1,
``F_d = CMP(P_d, I_ref)``).

The release's wrapper (``mimicmotion/modules/cmp_model.py`` plus ``get_cmp_flow`` / ``sample_inputs_flow``
in its utils) prepares the inputs differently from the CMP paper's own pipeline:

* Image: CMP was trained on ImageNet-normalised 0..255 pixels (``(x - [123.675, 116.28, 103.53]) /
  [58.395, 57.12, 57.375]``).  The DisPose wrapper builds that transform but never applies it: it feeds
  the reference image in ``[0, 1]`` (``ToTensor``) as ``image * 2 - 1``, i.e. ``[-1, 1]``.  We reproduce the
  release (:func:`release_image_tensor`): ``uint8 / 255 * 2 - 1``.
* Image size: the reference at the generation resolution is resized to 384x384 with
  ``F.interpolate(..., (384, 384))`` (mode ``nearest``, aspect ratio not kept); :func:`resize_nearest_384`
  reproduces that on uint8 (nearest sampling picks pixels, so it is exact).
* Sparse flow ``P_d`` (Eq. 4): for every one of the 18 body keypoints ``k``, at the reference
  pixel ``(int(y_0), int(x_0))`` of the 384x384 grid, channel 0 holds ``x_n - x_0`` and channel 1
  ``y_n - y_0`` in 384-pixel units (coordinates truncated toward zero and clipped to the grid; all
  other pixels are 0).  The release writes every keypoint, detected or not, with ``(0, 0)`` for a
  missing one; which keypoints we write is decided by the caller
  (:mod:`dispose.guidance.reference_flow`, ``release_missing_points``).  This is forward flow from the
  reference to frame ``n``; no sign change and no normalisation (CMP's bins span +-50 px).
  :func:`rasterize_sparse_flow` builds one such map.
* Mask: same shape as the sparse flow, 1 at the sampled pixels in *both* channels, else 0 (the release
  builds a uint8 mask and casts it to float).  The network input is ``cat([sparse, mask])`` (4 channels).
* Output: CMP's flow is in 384-pixel units at 384x384 (bin expectation at 192x192, bilinear
  ``align_corners=True`` upsampling).  The release then resizes it to the generation size with
  *nearest* interpolation and multiplies x by ``W / 384`` and y by ``H / 384``
  (:func:`resize_flow_nearest`).
* Precision: the release builds CMP under ``torch.set_default_dtype(float16)`` and casts the inputs to
  float16 (falling back to float32 when that fails), and returns float32.  :func:`cmp_dense_flow` casts
  the inputs to the model's dtype, fuses the bins in float32 and returns float32.

Deliberate differences (same values): the release runs CMP one frame at a time and re-encodes the
same reference image for each frame; :func:`cmp_dense_flow` encodes the image once and decodes the frames
in batches of ``chunk_size``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dispose.guidance.cmp.network import CMP

CMP_SIZE = 384


def resize_nearest_384(image: np.ndarray, size: int = CMP_SIZE) -> np.ndarray:
    """uint8 ``(H, W, 3)`` -> ``(size, size, 3)`` exactly as ``F.interpolate(mode='nearest')`` samples."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"reference image must be (H, W, 3), got shape {image.shape}")
    chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    out = F.interpolate(chw, size=(size, size), mode="nearest")
    return out[0].permute(1, 2, 0).round().to(torch.uint8).numpy()


def release_image_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``(H, W, 3)`` -> float32 ``(1, 3, H, W)`` in ``[-1, 1]`` (the wrapper's ``x * 2 - 1``)."""
    tensor = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    if tensor.dtype != torch.uint8 or tensor.ndim != 3 or tensor.shape[2] != 3:
        raise ValueError(f"reference image must be uint8 (H, W, 3), got {tuple(tensor.shape)} {tensor.dtype}")
    return (tensor.permute(2, 0, 1)[None].float() / 255.0) * 2.0 - 1.0


def rasterize_sparse_flow(points: np.ndarray, flows: np.ndarray, height: int = CMP_SIZE,
                          width: int = CMP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Release-format sparse flow and mask, each float32 ``(2, height, width)``.

    ``points`` ``(K, 2)`` are ``(x, y)`` pixel positions in the source frame, ``flows`` ``(K, 2)`` the
    ``(dx, dy)`` displacements.  Positions are truncated toward zero and clipped to the grid, as the
    release's ``.long()`` + ``clip``.  When two points fall on one pixel the later one wins.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    flows = np.asarray(flows, dtype=np.float32).reshape(-1, 2)
    if len(points) != len(flows):
        raise ValueError(f"{len(points)} points but {len(flows)} flow vectors")
    if not (np.isfinite(points).all() and np.isfinite(flows).all()):
        raise ValueError("sparse flow points/vectors contain NaN or inf")
    sparse = np.zeros((2, height, width), np.float32)
    mask = np.zeros((2, height, width), np.float32)
    cols = np.clip(np.trunc(points[:, 0]).astype(np.int64), 0, width - 1)
    rows = np.clip(np.trunc(points[:, 1]).astype(np.int64), 0, height - 1)
    sparse[:, rows, cols] = flows.T
    mask[:, rows, cols] = 1.0
    return sparse, mask


def resize_flow_nearest(flow: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, 2, 384, 384)`` flow -> ``(N, 2, height, width)``: nearest resize, x*W/384, y*H/384 (release)."""
    src_h, src_w = flow.shape[-2:]
    out = F.interpolate(flow.float(), size=(height, width), mode="nearest")
    scale = torch.tensor([width / src_w, height / src_h], dtype=out.dtype, device=out.device)
    return out * scale.view(1, 2, 1, 1)


def _as_maps(name: str, value: np.ndarray | torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    tensor = torch.as_tensor(value).float()
    if tensor.ndim != 4 or tensor.shape[1] != 2 or tuple(tensor.shape[2:]) != tuple(shape):
        raise ValueError(f"{name} must be (N, 2, {shape[0]}, {shape[1]}), got {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or inf")
    return tensor


@torch.no_grad()
def cmp_dense_flow(cmp: CMP, ref_image_384: np.ndarray | torch.Tensor, sparse_flow: np.ndarray | torch.Tensor,
                   mask: np.ndarray | torch.Tensor, *, chunk_size: int | None = 8,
                   progress: bool = False) -> torch.Tensor:
    """Dense flow ``F_d`` ``(N, 2, H, W)`` float32 (on CPU) in input pixels, from the release-format inputs.

    ``ref_image_384``: uint8 RGB ``(H, W, 3)`` (384x384 in DisPose; any size divisible by 8 works);
    ``sparse_flow`` / ``mask``: ``(N, 2, H, W)`` as described in the module docstring.  ``chunk_size``
    frames are decoded at once (``None``: all).
    """
    image = release_image_tensor(ref_image_384)
    size = tuple(image.shape[-2:])
    if size[0] % 8 or size[1] % 8:
        raise ValueError(f"CMP needs an image size divisible by 8, got {size[1]}x{size[0]} "
                         "(DisPose uses 384)")
    sparse = _as_maps("sparse_flow", sparse_flow, size)
    mask_t = _as_maps("mask", mask, size)
    if sparse.shape[0] != mask_t.shape[0]:
        raise ValueError(f"sparse_flow has {sparse.shape[0]} frames but mask has {mask_t.shape[0]}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    param = next(cmp.parameters())
    device, dtype = param.device, param.dtype
    n = sparse.shape[0]
    step = n if chunk_size is None else chunk_size
    features = cmp.encode_image(image.to(device=device, dtype=dtype))
    out = torch.empty((n, 2, *size), dtype=torch.float32)
    for start in tqdm(range(0, n, max(step, 1)), desc="CMP dense flow", unit="chunk", disable=not progress):
        stop = min(start + step, n)
        inputs = torch.cat([sparse[start:stop], mask_t[start:stop]], dim=1).to(device=device, dtype=dtype)
        out[start:stop] = cmp.predict_flow(features, inputs).float().cpu()
    return out
