"""Generation size and the resize-then-centre-crop every input goes through.

Reproduces the release's ``inference_ctrl.py::preprocess`` (DisPose), itself MimicMotion's:

* **Target size** (:func:`target_size`): portrait inputs become ``resolution`` wide and
  ``int(resolution / (9/16) // 64) * 64`` high (576 -> 576x1024), landscape inputs the same swapped
  (1024x576), square inputs ``resolution`` x ``resolution``.
* **Resize** (:func:`resize_bilinear`): the image is scaled, keeping its aspect ratio, until it covers the
  target; the side that overshoots is rounded *up* (``math.ceil``), as the release does.  The release calls
  torchvision ``resize(uint8_tensor, size, antialias=None)``.  In the torchvision it was run with
  (MimicMotion's environment pins 0.15.2; DisPose's README asks for >= 0.15.2) that means: bilinear
  interpolation with ``align_corners=False``, **no antialiasing** (``antialias=None`` is ``False`` for
  tensors), computed in float32 by ``torch.nn.functional.interpolate`` and rounded half-to-even
  (``torch.round``) back to uint8 (later torchvision versions keep that tensor path).  We run exactly
  those operations, so the pixels match; note that a large downscale without antialiasing aliases (fine
  detail shimmers), which is what the released weights were fed.
* **Centre crop** (:func:`center_crop_box`): torchvision's anchor ``int(round((size - crop) / 2))``
  (Python's round, half to even).

The same mapping, as an affine map of coordinates, is :func:`resize_crop_transform` (used to carry
keypoints of a driving frame into the generation frame).

Every ``--resolution`` is checked by :func:`check_resolution` before anything is read or allocated: a multiple
of 64 (the VAE divides sizes by 8 and the UNet halves them three more times; ``animate`` needs it) from 64 to
:data:`MAX_RESOLUTION`; other values are refused with the nearest valid ones (the release accepts any value
and fails later, or silently crops).
"""

from __future__ import annotations

import math

import numpy as np

#: Width / height of the portrait generation frame (the release's ``constants.ASPECT_RATIO``).
ASPECT_RATIO = 9 / 16
#: Generation sizes are multiples of this many pixels.
SIZE_STEP = 64
#: Largest accepted ``--resolution``: 2048 x 3584 frames, 12.4 times the release's 576 x 1024 pixels (one
#: float32 RGB frame is 84 MiB, each two-channel float32 motion field 56 MiB per frame).
MAX_RESOLUTION = 2048


def check_resolution(value: int, option: str = "--resolution") -> int:
    """``value`` if it is a valid short side of the generation frame (module docstring), else a UserError
    naming ``option`` and the nearest valid values."""
    from dispose.errors import UserError

    if value < SIZE_STEP:
        raise UserError(f"{option} {value} is too small; the smallest is {SIZE_STEP} (the release uses 576)")
    if value > MAX_RESOLUTION:
        width, height = target_size(9, 16, value)
        raise UserError(f"{option} {value} is too large: frames of {width}x{height} pixels would need "
                        f"{width * height * 12 / 2**30:.1f} GiB each in float32; the largest is "
                        f"{MAX_RESOLUTION} (the release uses 576)")
    if value % SIZE_STEP:
        below = value // SIZE_STEP * SIZE_STEP
        nearest = " or ".join(str(v) for v in (below, below + SIZE_STEP) if SIZE_STEP <= v <= MAX_RESOLUTION)
        raise UserError(f"{option} {value} is not a multiple of {SIZE_STEP}; use {nearest} "
                        "(the release uses 576)")
    return value


def target_size(width: int, height: int, resolution: int = 576) -> tuple[int, int]:
    """Generation size ``(W, H)`` for an input of ``width`` x ``height`` pixels."""
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    long_side = int(resolution / ASPECT_RATIO // 64) * 64
    if height > width:
        return resolution, long_side
    if height == width:
        return resolution, resolution
    return long_side, resolution


def resize_size(width: int, height: int, size: tuple[int, int]) -> tuple[int, int]:
    """Size ``(w, h)`` the input is scaled to before the centre crop to ``size = (W, H)``."""
    target_w, target_h = size
    ratio = float(height) / float(width)
    if ratio < target_h / target_w:
        return math.ceil(target_h / ratio), target_h
    return target_w, math.ceil(target_w * ratio)


def center_crop_box(width: int, height: int, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner ``(left, top)`` of a centred ``size = (W, H)`` window, with torchvision's rounding."""
    crop_w, crop_h = size
    if crop_w > width or crop_h > height:
        raise ValueError(f"cannot crop {crop_w}x{crop_h} out of {width}x{height}")
    return round((width - crop_w) / 2.0), round((height - crop_h) / 2.0)


def resize_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a uint8 (H, W, C) image as torchvision's tensor ``resize(..., antialias=None)`` does."""
    if image.shape[1] == width and image.shape[0] == height:
        return image.copy()
    import torch  # here, not at the top: `dispose --help` imports this module (via dispose.pose.alignment)
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(torch.float32)
    out = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    return out.round()[0].permute(1, 2, 0).to(torch.uint8).numpy()


def resize_and_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale ``image`` (uint8 (H, W, 3)) to cover ``size = (W, H)`` keeping its aspect, then centre-crop."""
    height, width = image.shape[:2]
    resized_w, resized_h = resize_size(width, height, size)
    resized = resize_bilinear(image, resized_w, resized_h)
    left, top = center_crop_box(resized_w, resized_h, size)
    return np.ascontiguousarray(resized[top:top + size[1], left:left + size[0]])


def resize_crop_transform(width: int, height: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis ``(scale, offset)`` taking pixel coordinates of a ``width`` x ``height`` frame to the
    pixel coordinates of the same frame after :func:`resize_and_crop` to ``size``."""
    resized_w, resized_h = resize_size(width, height, size)
    left, top = center_crop_box(resized_w, resized_h, size)
    scale = np.array([resized_w / width, resized_h / height])
    return scale, -np.array([left, top], dtype=np.float64)
