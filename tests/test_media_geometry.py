"""Generation size, resize and centre crop (the release's preprocess), checked against hand-computed
values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dispose.errors import UserError
from dispose.media.geometry import (
    center_crop_box,
    check_resolution,
    resize_and_crop,
    resize_bilinear,
    resize_crop_transform,
    resize_size,
    target_size,
)


@pytest.mark.parametrize(("width", "height", "resolution", "expected"), [
    (704, 1216, 576, (576, 1024)),  # portrait
    (1920, 1080, 576, (1024, 576)),  # landscape
    (800, 800, 576, (576, 576)),  # square
    (463, 615, 576, (576, 1024)),  # odd portrait
    (615, 463, 576, (1024, 576)),  # odd landscape
    (100, 200, 512, (512, 896)),  # 512 / (9/16) = 910.2 -> 14 * 64
    (100, 200, 300, (300, 512)),  # 533.3 -> 8 * 64
])
def test_target_size(width, height, resolution, expected):
    assert target_size(width, height, resolution) == expected


def test_resize_size_rounds_the_overshooting_side_up():
    # 704x1216 into 576x1024: h/w = 1.727 < 1.778, so the height is matched and the width rounded up.
    assert resize_size(704, 1216, (576, 1024)) == (math.ceil(1024 / (1216 / 704)), 1024) == (593, 1024)
    # 1080x1920 is exactly 9:16.
    assert resize_size(1080, 1920, (576, 1024)) == (576, 1024)
    # Wider than the target ratio: the width is matched.
    assert resize_size(1920, 1080, (576, 1024)) == (math.ceil(1024 * 1920 / 1080), 1024)
    # Taller: the height is rounded up.
    assert resize_size(463, 1000, (576, 1024)) == (576, math.ceil(576 * 1000 / 463))


def test_center_crop_rounds_half_to_even():
    # torchvision's int(round(d / 2)) with Python's banker's rounding: 17 / 2 = 8.5 -> 8, 3 / 2 = 1.5 -> 2.
    assert center_crop_box(593, 1024, (576, 1024)) == (8, 0)
    assert center_crop_box(579, 1027, (576, 1024)) == (2, 2)
    assert center_crop_box(577, 1025, (576, 1024)) == (0, 0)
    with pytest.raises(ValueError):
        center_crop_box(500, 1024, (576, 1024))


def _bilinear_reference(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Half-pixel-centre bilinear sampling without antialiasing (source = (dst + 0.5) * in / out - 0.5,
    clamped at 0), in float64, not rounded -- written out."""
    src_h, src_w = image.shape[:2]

    def taps(size_in: int, size_out: int) -> list[tuple[int, int, float]]:
        result = []
        for d in range(size_out):
            s = max((d + 0.5) * size_in / size_out - 0.5, 0.0)
            lo = min(math.floor(s), size_in - 1)
            result.append((lo, min(lo + 1, size_in - 1), s - lo))
        return result

    out = np.zeros((height, width, image.shape[2]))
    for y, (y0, y1, wy) in enumerate(taps(src_h, height)):
        for x, (x0, x1, wx) in enumerate(taps(src_w, width)):
            top = image[y0, x0] * (1 - wx) + image[y0, x1] * wx
            bottom = image[y1, x0] * (1 - wx) + image[y1, x1] * wx
            out[y, x] = top * (1 - wy) + bottom * wy
    return out


@pytest.mark.parametrize(("size_in", "size_out"), [((7, 5), (13, 9)), ((31, 17), (8, 6)), ((10, 10), (3, 7))])
def test_resize_is_bilinear_without_antialias(size_in, size_out):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(size_in[1], size_in[0], 3), dtype=np.uint8)
    got = resize_bilinear(image, *size_out).astype(int)
    exact = _bilinear_reference(image.astype(np.float64), *size_out)
    assert got.shape == (size_out[1], size_out[0], 3)
    # Rounded half to even; a value within float32 error of a .5 tie may go either way.
    tie = np.abs(exact - np.floor(exact) - 0.5) < 1e-3
    assert np.array_equal(got[~tie], np.round(exact[~tie]))
    assert np.all((got[tie] == np.floor(exact[tie])) | (got[tie] == np.ceil(exact[tie])))


def test_downscale_aliases_like_the_release():
    # A 1-pixel checkerboard shrunk 4x without antialiasing samples between two pixels: stays mid-grey
    # exactly (an antialiased resize would also give ~127, a nearest resize 0 or 255). A 2x shrink of
    # a 2-pixel-period stripe pattern samples exactly between a black and a white column.
    stripes = np.zeros((8, 8, 3), np.uint8)
    stripes[:, 1::2] = 255
    out = resize_bilinear(stripes, 4, 8)
    assert (out == 128).all()  # 127.5 rounds half to even -> 128
    # Hand-computed 2x upscale of [[0, 100]]: positions -0.25, 0.25, 0.75, 1.25 -> 0, 25, 75, 100.
    row = np.array([[[0] * 3, [100] * 3]], np.uint8)
    assert resize_bilinear(row, 4, 1)[0, :, 0].tolist() == [0, 25, 75, 100]


def test_resize_and_crop_real_reference(shared_data):
    from dispose.media.image import load_image

    image = load_image(shared_data / "musepose_ref.png")
    size = target_size(image.shape[1], image.shape[0])
    out = resize_and_crop(image, size)
    assert out.shape == (1024, 576, 3) and out.dtype == np.uint8
    full = resize_bilinear(image, 593, 1024)
    assert np.array_equal(out, full[:, 8:8 + 576])


@pytest.mark.parametrize(("frame", "size"), [((1080, 1920), (576, 1024)), ((1920, 1080), (576, 1024)),
                                             ((463, 615), (1024, 576)), ((300, 300), (576, 576))])
def test_resize_crop_transform_follows_the_pixels(frame, size):
    width, height = frame
    image = np.zeros((height, width, 3), np.uint8)
    x, y = int(width * 0.6), int(height * 0.4)
    image[y - 3:y + 4, x - 3:x + 4] = 255  # a 7x7 white square centred on (x + 0.5, y + 0.5)
    out = resize_and_crop(image, size)
    ys, xs = np.nonzero(out[..., 0] > 127)
    scale, offset = resize_crop_transform(width, height, size)
    expected = np.array([x + 0.5, y + 0.5]) * scale + offset
    assert np.allclose([xs.mean() + 0.5, ys.mean() + 0.5], expected, atol=1.0)


@pytest.mark.parametrize(("value", "message"), [
    (577, r"--resolution 577 is not a multiple of 64; use 576 or 640"),
    (65, r"--resolution 65 is not a multiple of 64; use 64 or 128"),
    (2047, r"--resolution 2047 is not a multiple of 64; use 1984 or 2048"),
    (63, r"--resolution 63 is too small; the smallest is 64"),
    (0, r"--resolution 0 is too small; the smallest is 64"),
    (100000, (r"--resolution 100000 is too large: frames of 100000x177728 pixels would need 198\.6 GiB each "
              r"in float32; the largest is 2048")),
])
def test_resolution_is_checked_before_anything_is_allocated(value, message):
    with pytest.raises(UserError, match=f"^{message}"):
        check_resolution(value)
    assert [check_resolution(v, "--size") for v in (64, 576, 2048)] == [64, 576, 2048]
