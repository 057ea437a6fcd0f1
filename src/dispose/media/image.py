"""Reading and writing still images (uint8 RGB arrays).

Differences from the release (``torchvision.datasets.folder.pil_loader``, i.e. ``Image.convert("RGB")``):

* transparent images are composited onto a flat background (white by default) instead of having their
  alpha channel dropped, which exposes whatever colour the transparent pixels happen to store (often black
  or noise around a cut-out person);
* the EXIF orientation tag is applied, so phone photos are upright (the release ignores it and poses a
  sideways person);
* 16-bit grayscale images (Pillow's ``I;16`` / ``I`` modes) are scaled to 8 bits (value / 257); Pillow's own
  conversion clips them, so all but the darkest pixels become white.

Pillow's DecompressionBombWarning (an image of 89-179 megapixels) is not shown: such an image is read like
any other (larger ones are refused as Pillow refuses them).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dispose.errors import UserError

#: Smallest accepted side in pixels.  The generation frame is at least 576 px on its short side and the
#: pose detectors look at people through 256-384 px windows: below 64 px an image is upscaled more than 9x
#: and holds too little for a detector to find a person, so it is refused early with a clear message.
MIN_IMAGE_SIDE = 64

#: Pillow modes of 16-bit grayscale images (values 0-65535).
_WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")

_BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}


def load_image(path: str | Path, background: str = "white") -> np.ndarray:
    """Read a PNG/JPEG (or any format Pillow reads) as a uint8 RGB array of shape (H, W, 3).

    Transparent pixels are composited onto ``background`` (``"white"`` or ``"black"``).  Raises
    :class:`~dispose.errors.UserError` for a missing file, a file that is not an image, or an image whose
    shorter side is below :data:`MIN_IMAGE_SIDE`.
    """
    if background not in _BACKGROUNDS:
        raise UserError(f"background must be one of {sorted(_BACKGROUNDS)}, got {background!r}")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image {path} does not exist" if not path.exists()
                        else f"image {path} is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()
                image = ImageOps.exif_transpose(opened)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UserError(f"image {path} could not be read as an image ({error}); "
                        "give a PNG or JPEG file") from None
    if min(image.size) < MIN_IMAGE_SIDE:
        raise UserError(f"image {path} is {image.width}x{image.height} pixels; DisPose needs at least "
                        f"{MIN_IMAGE_SIDE} pixels on each side to find a person (give a larger image)")
    if image.mode in _WIDE_GRAY_MODES:
        gray = np.clip(np.round(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, _BACKGROUNDS[background] + (255,))
        image = Image.alpha_composite(flat, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Write a uint8 RGB (H, W, 3) array atomically; the format follows the suffix (.png, .jpg)."""
    from dispose.media.files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(tmp, format=_format(path))


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
    if suffix not in formats:
        raise UserError(f"output image {path}: unsupported suffix {suffix!r}; use one of {sorted(formats)}")
    return formats[suffix]
