"""Reading images: RGB output, transparency, orientation, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dispose.errors import UserError
from dispose.media.image import MIN_IMAGE_SIDE, load_image, save_image


def test_reads_real_png_and_jpeg(shared_data, tmp_path):
    image = load_image(shared_data / "musepose_ref.png")
    assert image.dtype == np.uint8 and image.shape == (1216, 704, 3)
    Image.fromarray(image).save(tmp_path / "ref.jpg", quality=95)
    jpeg = load_image(tmp_path / "ref.jpg")
    assert jpeg.shape == image.shape
    assert np.abs(jpeg.astype(int) - image).mean() < 3


def test_transparency_is_flattened_on_the_background(shared_data, tmp_path):
    rgba = np.zeros((80, 90, 4), np.uint8)
    rgba[..., :3] = (10, 200, 30)  # colour hidden under the transparent half
    rgba[:, :45, 3] = 255
    rgba[:, 45:, 3] = 0
    rgba[0, 0, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut_out.png")
    white = load_image(tmp_path / "cut_out.png")
    black = load_image(tmp_path / "cut_out.png", background="black")
    assert (white[:, 45:] == 255).all() and (black[:, 45:] == 0).all()
    assert (white[1:, :45] == (10, 200, 30)).all() and (black[1:, :45] == (10, 200, 30)).all()
    # A half-transparent pixel blends: white - black = 255 x (1 - 128 / 255).
    assert abs(int(white[0, 0, 1]) - int(black[0, 0, 1]) - 127) <= 1
    with pytest.raises(UserError, match="background"):
        load_image(tmp_path / "cut_out.png", background="grey")
    # The shared RGBA examples are opaque: both backgrounds give the same pixels.
    assert np.array_equal(load_image(shared_data / "moore_anyone-1.png"),
                          load_image(shared_data / "moore_anyone-1.png", background="black"))


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((80, 120, 3), np.uint8)
    pixels[:10, :10] = 255  # top-left marker in the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    image = load_image(tmp_path / "phone.jpg")
    assert image.shape == (120, 80, 3)
    assert image[:10, -10:].mean() > 200  # the marker is now top-right


def test_grey_and_palette_images_become_rgb(tmp_path):
    Image.new("L", (70, 90), 77).save(tmp_path / "grey.png")
    assert load_image(tmp_path / "grey.png").shape == (90, 70, 3)
    palette = Image.new("P", (70, 90), 0)
    palette.putpalette([10, 20, 30] * 256)
    palette.save(tmp_path / "palette.png", transparency=0)
    assert (load_image(tmp_path / "palette.png") == 255).all()


def test_16_bit_grey_png_reads_like_its_8_bit_copy(shared_data, tmp_path):
    grey = np.asarray(Image.open(shared_data / "musepose_ref.png").convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "wide.png")  # 16 bits: 0..65535
    Image.fromarray(grey).save(tmp_path / "narrow.png")
    assert Image.open(tmp_path / "wide.png").mode.startswith("I")
    assert np.array_equal(load_image(tmp_path / "wide.png"), load_image(tmp_path / "narrow.png"))


def test_large_images_are_read_without_pillows_warning(tmp_path, recwarn, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150 * 150 - 1)  # Pillow warns above it (89 Mpx as shipped)
    Image.new("L", (150, 150), 128).save(tmp_path / "large.png")
    assert load_image(tmp_path / "large.png").shape == (150, 150, 3)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist") as error:
        load_image(tmp_path / "nope.png")
    assert "nope.png" in str(error.value)


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(UserError, match="could not be read as an image") as error:
        load_image(tmp_path / "notes.png")
    assert "notes.png" in str(error.value)
    with pytest.raises(UserError, match="not a file"):
        load_image(tmp_path)


def test_truncated_image(shared_data, tmp_path):
    data = (shared_data / "musepose_ref.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="cut.png"):
        load_image(tmp_path / "cut.png")


def test_too_small(tmp_path):
    Image.new("RGB", (MIN_IMAGE_SIDE - 1, 300)).save(tmp_path / "thin.png")
    with pytest.raises(UserError, match=f"at least {MIN_IMAGE_SIDE} pixels") as error:
        load_image(tmp_path / "thin.png")
    assert "thin.png" in str(error.value) and f"{MIN_IMAGE_SIDE - 1}x300" in str(error.value)
    Image.new("RGB", (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)).save(tmp_path / "ok.png")
    assert load_image(tmp_path / "ok.png").shape == (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE, 3)


def test_save_image_round_trip_and_errors(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (65, 67, 3), dtype=np.uint8)
    save_image(tmp_path / "x.png", image)
    assert np.array_equal(load_image(tmp_path / "x.png"), image)
    with pytest.raises(UserError, match="unsupported suffix"):
        save_image(tmp_path / "x.tga", image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]
