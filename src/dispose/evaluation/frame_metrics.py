"""Paired per-frame image metrics (the paper's Table 6: SSIM, PSNR, L1; LPIPS is in :mod:`.lpips`).

All metrics take two uint8 RGB frames of the same size and work on values scaled to ``[0, 1]``:

* **SSIM** -- Wang et al. 2004 exactly as ``skimage.metrics.structural_similarity`` computes it with
  its defaults for colour images and ``data_range=1``: 7x7 uniform window, sample covariance
  (``N/(N-1)``), K1=0.01, K2=0.03, mean over the window-valid interior (3-pixel border cropped),
  averaged over the three channels.
* **PSNR** -- ``10 log10(1 / MSE)`` over all pixels and channels (identical to the usual 8-bit
  ``20 log10(255 / RMSE)``).  Identical frames give ``+inf``; a video's PSNR is the mean over its
  frames, hence ``inf`` when any frame is identical (:func:`mean_or_inf`).  The JSON report writes
  ``inf`` as the string ``"inf"``.
* **L1** -- mean absolute error over all pixels and channels on ``[0, 1]`` values.
* **L1 (DisCo scale)**, ``l1_disco`` -- the paper does not define its L1, whose values (``2.46E-05``)
  are on the scale of the evaluation code the human-animation papers share (DisCo's
  ``tool/metrics/ssim_l1_lpips_psnr.py``): ``|a - b|`` on 0..255 values divided by the pixel count
  ``H * W``, averaged over pixels, channels and frames, i.e. ``mean_abs_255 / (H * W)``.  It depends
  on the frame size, so compare it only at equal sizes.

Where that shared code differs from the definitions here (so its numbers differ): it computes SSIM
on *grey* frames (``cv2.COLOR_BGR2GRAY``, skimage defaults on uint8), PSNR as ``100`` for identical
frames and on uint8 differences that wrap around (``numpy`` uint8 arithmetic), and LPIPS-VGG on
``[0, 1]`` inputs although LPIPS expects ``[-1, 1]``.  We do not reproduce those.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.ndimage import uniform_filter

_WIN = 7
_K1, _K2 = 0.01, 0.03


def _unit(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB frame (H, W, 3), got {frame.dtype} {frame.shape}")
    return frame.astype(np.float64) / 255.0


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"frames differ in size: {a.shape} vs {b.shape}")
    return _unit(a), _unit(b)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two uint8 RGB frames (skimage-compatible, see module docstring)."""
    x, y = _check_pair(a, b)
    if min(x.shape[:2]) < _WIN:
        raise ValueError(f"frames of {x.shape[:2]} are smaller than the {_WIN}x{_WIN} SSIM window")
    size = (_WIN, _WIN, 1)  # filter each channel on its own
    cov_norm = _WIN * _WIN / (_WIN * _WIN - 1)
    ux, uy = uniform_filter(x, size), uniform_filter(y, size)
    vx = cov_norm * (uniform_filter(x * x, size) - ux * ux)
    vy = cov_norm * (uniform_filter(y * y, size) - uy * uy)
    vxy = cov_norm * (uniform_filter(x * y, size) - ux * uy)
    c1, c2 = _K1 ** 2, _K2 ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (_WIN - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean(axis=(0, 1)).mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB with peak 1 on ``[0, 1]`` values; ``inf`` for identical frames."""
    x, y = _check_pair(a, b)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def l1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute error on ``[0, 1]`` values."""
    x, y = _check_pair(a, b)
    return float(np.mean(np.abs(x - y)))


def l1_disco(a: np.ndarray, b: np.ndarray) -> float:
    """DisCo's L1: mean absolute error on 0..255 values divided by ``H * W`` (see module docstring)."""
    x, y = _check_pair(a, b)
    return float(np.mean(np.abs(x - y)) * 255.0 / (a.shape[0] * a.shape[1]))


def mean_or_inf(values: list[float]) -> float:
    """Mean of per-frame values; ``inf`` if any value is infinite (PSNR of identical frames)."""
    if not values:
        raise ValueError("no values to average")
    return math.inf if any(math.isinf(v) for v in values) else float(np.mean(values))


class FrameMeans:
    """A video's mean of one paired metric, fed one frame pair at a time (only per-frame values are kept)."""

    def __init__(self, metric: Callable[[np.ndarray, np.ndarray], float]) -> None:
        self.metric, self.values = metric, []

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self.values.append(self.metric(pred, gt))

    def result(self) -> float:
        return mean_or_inf(self.values)
