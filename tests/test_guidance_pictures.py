"""Flow pictures: the Middlebury colour code and arrow overlays."""

from __future__ import annotations

import numpy as np
import pytest

from dispose.guidance.flow_pictures import (
    colour_wheel,
    draw_flow_arrows,
    flow_to_color,
    max_magnitude,
)


def test_colour_wheel_is_middlebury() -> None:
    wheel = colour_wheel()
    assert wheel.shape == (55, 3)
    # segment starts: red, yellow, green, cyan, blue, magenta
    for index, colour in zip((0, 15, 21, 25, 36, 49), ((255, 0, 0), (255, 255, 0), (0, 255, 0), (0, 255, 255),
                                                       (0, 0, 255), (255, 0, 255))):
        assert wheel[index].tolist() == list(colour), index
    assert wheel[14].tolist() == [255, np.floor(255 * 14 / 15), 0]
    assert wheel.min() >= 0 and wheel.max() <= 255


def vector(dx: float, dy: float, size: int = 3) -> np.ndarray:
    flow = np.zeros((2, size, size), np.float32)
    flow[0], flow[1] = dx, dy
    return flow


def test_directions_and_saturation() -> None:
    assert flow_to_color(vector(0, 0)).tolist() == np.full((3, 3, 3), 255).tolist()  # no motion: white
    colours = {name: flow_to_color(vector(dx, dy), max_magnitude=1.0)[0, 0].tolist()
               for name, (dx, dy) in {"left": (-1, 0), "up": (0, -1), "down": (0, 1)}.items()}
    assert colours["left"] == [0, 209, 255]  # cyan-blue (wheel index 27: 255 - floor(255 * 2 / 11))
    assert colours["up"][2] == 255 and colours["up"][1] == 0  # blue-magenta
    assert colours["down"][0] == 255 and colours["down"][2] == 0  # orange-yellow
    right = flow_to_color(vector(1, 0), max_magnitude=1.0)[0, 0]
    assert right[0] == 255 and right[2] < 60  # red
    half = flow_to_color(vector(-0.5, 0), max_magnitude=1.0)[0, 0]
    assert half.tolist() == [128, 232, 255]  # halfway to white
    beyond = flow_to_color(vector(-2, 0), max_magnitude=1.0)[0, 0]
    assert beyond.tolist() == [0, 157, 191]  # beyond the scale: darkened to 75 %
    # default scale: the flow's own largest vector is fully saturated
    assert flow_to_color(vector(-7, 0))[0, 0].tolist() == colours["left"]


def test_max_magnitude_and_overlays() -> None:
    flows = np.zeros((2, 2, 20, 30), np.float32)
    flows[1, :, 4, 5] = [3.0, 4.0]
    assert max_magnitude(flows) == pytest.approx(5.0)
    image = np.full((20, 30, 3), 200, np.uint8)
    arrows = draw_flow_arrows(image, np.full((2, 20, 30), 4.0, np.float32), step=10)
    assert arrows.shape == image.shape and (arrows != image).any() and (image == 200).all()
    assert (draw_flow_arrows(image, np.zeros((2, 20, 30), np.float32)) == image).all()
    with pytest.raises(ValueError, match="differ in size"):
        draw_flow_arrows(image, np.zeros((2, 10, 30), np.float32))
    with pytest.raises(ValueError, match="NaN or inf"):
        flow_to_color(vector(np.nan, 0))
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        flow_to_color(np.zeros((3, 3, 2), np.float32))
