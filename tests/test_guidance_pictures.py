"""Flow pictures: the Middlebury colour code and arrow overlays."""

from __future__ import annotations

import numpy as np
import pytest

from dispose.guidance.flow_pictures import (
    colour_wheel,
    draw_flow_arrows,
    flow_to_color,
    guidance_panels,
    label,
    max_magnitude,
    panel_size,
    scale_from_maxima,
    video_scale,
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
    with pytest.raises(ValueError, match="differ in aspect ratio"):
        draw_flow_arrows(image, np.zeros((2, 10, 30), np.float32))
    with pytest.raises(ValueError, match="NaN or inf"):
        flow_to_color(vector(np.nan, 0))
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        flow_to_color(np.zeros((3, 3, 2), np.float32))


def test_arrows_on_a_preview_follow_the_full_size_grid() -> None:
    flow = np.zeros((2, 40, 60), np.float32)
    flow[0, 25:35, 45:55] = 6.0  # one moving patch: only the grid point (x, y) = (45, 25) moves
    full = draw_flow_arrows(np.full((40, 60, 3), 255, np.uint8), flow, step=10)
    preview = draw_flow_arrows(np.full((20, 30, 3), 255, np.uint8), flow, step=10)
    for picture, zoom in ((full, 1), (preview, 2)):
        rows, cols = np.nonzero((picture < 255).any(-1))
        assert abs(rows.mean() - 25 / zoom) < 1.5 and abs(cols.min() - 45 / zoom) <= 1
        assert 6 / zoom - 1 <= cols.max() - cols.min() <= 6 / zoom + 2  # 6 px long, scaled (+ anti-aliasing)


def test_guidance_panels_at_preview_and_full_size() -> None:
    width, height, frames = 96, 64, 3
    rng = np.random.default_rng(0)
    sparse = np.zeros((frames, 2, height, width), np.float32)
    sparse[:, 0] = 2.0  # F_s moves right everywhere: one colour
    dense = rng.normal(0, 5, (frames, 2, height, width)).astype(np.float32)
    skeletons = np.zeros((frames, height, width, 3), np.uint8)
    skeletons[:, 50:54] = 200  # a grey bar below the label
    scales = {"sparse_scale": video_scale(sparse), "dense_scale": video_scale(dense)}
    assert scales["dense_scale"] == scale_from_maxima([max_magnitude(f) for f in dense])

    assert panel_size(width, height, 48) == (48, 32)
    pictures = list(guidance_panels(iter(skeletons), (f for f in sparse), iter(dense),
                                    dense_label="propagate", panel_width=48, **scales))
    assert len(pictures) == frames
    assert all(p.shape == (32, 3 * 48, 3) and p.dtype == np.uint8 for p in pictures)
    right = flow_to_color(sparse[0, :, :1, :1], scales["sparse_scale"])[0, 0]
    assert (pictures[1][22:, 48:96] == right).all()  # F_s panel below the label: the colour of "right"
    assert (pictures[0][25:27, :48] == 200).all() and (pictures[0][22:24, :48] == 0).all()  # the bar, halved

    full = next(guidance_panels(skeletons, sparse, None, panel_width=None, **scales))
    assert full.shape == (height, 2 * width, 3)  # no F_d panel
    np.testing.assert_array_equal(full[:, width:], label(flow_to_color(sparse[0], scales["sparse_scale"]),
                                                         "F_s sparse"))


def test_guidance_panels_report_a_failing_skeleton_drawer() -> None:
    sparse = np.zeros((3, 2, 32, 48), np.float32)

    def skeletons():
        yield np.zeros((32, 48, 3), np.uint8)
        raise RuntimeError("drawing failed")

    panels = guidance_panels(skeletons(), sparse, None, sparse_scale=1.0, dense_scale=0.0)
    assert next(panels).shape == (32, 96, 3)  # the skeletons are drawn one frame ahead, in a worker thread
    with pytest.raises(RuntimeError, match="drawing failed"):
        next(panels)
