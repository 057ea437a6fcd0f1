"""Pictures of motion fields: the Middlebury colour code and arrow overlays (paper Figures 5, 14, 15), and the
skeleton | F_s | F_d panels ``dispose guidance`` writes per driving frame.

:func:`flow_to_color` is the standard optical-flow colour code of the Middlebury benchmark (Baker et al.,
IJCV 2011): a 55-colour wheel (red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11, blue-magenta 13,
magenta-red 6) interpolated by the flow direction (hue), white for zero motion and full saturation at
``max_magnitude``; larger vectors are darkened to 75 %.  Channels are rounded to uint8 (the reference
code floors, which turns any non-zero vector, however tiny, off-white).  Use one ``max_magnitude`` for all
frames of a video so that colours are comparable over time (:func:`video_scale`).

:func:`guidance_panels` draws the panels at a preview size (``panel_width``, default 384 px per panel: the
README picture's size; ``None`` keeps the generation size).  The flows are resized to the preview with area
averaging before they are coloured, and the arrows are sampled from the full-size flow on the same grid as at
full size, then drawn scaled: the same panels, colour code and scale rule as at full size, at a fraction of
the cost (``bench/bench_pictures.py`` prints the ratio); the skeletons are taken one frame ahead in a worker
thread.

Flows are channel-first float arrays ``(2, H, W)`` (dx, dy), like the motion fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import cv2
import numpy as np

_WHEEL_SEGMENTS = (15, 6, 4, 11, 13, 6)  # RY, YG, GC, CB, BM, MR
T = TypeVar("T")
_END = object()
#: Width of one panel of :func:`guidance_panels` by default (a 576x1024 frame becomes 384x683).
PANEL_WIDTH = 384


def colour_wheel() -> np.ndarray:
    """The Middlebury colour wheel, float64 ``(55, 3)`` RGB in 0..255."""
    ramps = []
    for (index, length) in enumerate(_WHEEL_SEGMENTS):
        up = np.floor(255 * np.arange(length) / length)
        segment = np.zeros((length, 3))
        # each segment keeps one channel at 255 and ramps another up or down
        fixed, moving, rising = [(0, 1, True), (1, 0, False), (1, 2, True),
                                 (2, 1, False), (2, 0, True), (0, 2, False)][index]
        segment[:, fixed] = 255
        segment[:, moving] = up if rising else 255 - up
        ramps.append(segment)
    return np.concatenate(ramps)


_WHEEL = colour_wheel()
#: Wheel colour i and its step to colour i + 1 (cyclic), float32: interpolation is ``base + frac * step``.
_WHEEL_BASE = _WHEEL.astype(np.float32)
_WHEEL_STEP = (np.roll(_WHEEL, -1, axis=0) - _WHEEL).astype(np.float32)


def _as_flow(flow: np.ndarray) -> np.ndarray:
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow must be (2, H, W), got {flow.shape}")
    if not np.isfinite(flow).all():
        raise ValueError("flow contains NaN or inf")
    return flow


def max_magnitude(flows: np.ndarray) -> float:
    """Largest vector length over ``(..., 2, H, W)`` flows."""
    flows = np.asarray(flows, np.float32)
    return float(np.sqrt((flows ** 2).sum(axis=-3)).max()) if flows.size else 0.0


def scale_from_maxima(maxima: Sequence[float], percentile: float = 90.0) -> float:
    """The shared colour scale of a video from the largest vector length of each of its frames (the
    ``percentile`` of them; see :func:`video_scale`), so that frames can be generated one at a time."""
    return float(np.percentile(np.asarray(maxima, np.float64), percentile)) if len(maxima) else 0.0


def video_scale(flows: np.ndarray, percentile: float = 90.0) -> float:
    """A shared colour scale for the ``(N, 2, H, W)`` flows of a video: the ``percentile`` of the per-frame
    largest lengths, so that one exceptional frame (e.g. the reference -> first frame jump of ``F_s``) does
    not wash out all the others (its longer vectors are drawn darkened)."""
    return scale_from_maxima([max_magnitude(frame) for frame in np.asarray(flows, np.float32)], percentile)


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Middlebury colour picture, uint8 RGB ``(H, W, 3)``, of a ``(2, H, W)`` flow.

    ``max_magnitude`` is the length drawn fully saturated (default: this flow's largest; zero flow is white).
    """
    u, v = _as_flow(flow)
    radius = np.sqrt(u * u + v * v)
    scale = float(radius.max()) if max_magnitude is None else float(max_magnitude)
    if scale <= 0:
        return np.full((*u.shape, 3), 255, np.uint8)
    n = len(_WHEEL)
    position = np.arctan2(-v, -u)
    position *= (n - 1) / (2 * np.pi)
    position += (n - 1) / 2  # in [0, n - 1]
    index = position.astype(np.intp)
    position -= index  # the fraction towards the next wheel colour
    colour = np.take(_WHEEL_STEP, index, axis=0)
    colour *= position[..., None]
    colour += np.take(_WHEEL_BASE, index, axis=0)
    # inside the scale: towards white with the length (255 - r (255 - c) = r c + 255 (1 - r));
    # beyond it: the full colour darkened to 75 %
    radius /= scale
    inside = radius <= 1
    gain = np.where(inside, radius, np.float32(0.75))
    offset = np.where(inside, 255 * (1 - radius), np.float32(0))
    colour *= gain[..., None]
    colour += offset[..., None]
    return np.rint(colour, out=colour).astype(np.uint8)


def draw_flow_arrows(image: np.ndarray, flow: np.ndarray, *, step: int = 32, scale: float = 1.0,
                     min_length: float = 0.5, color: tuple[int, int, int] = (0, 0, 0),
                     thickness: int = 1) -> np.ndarray:
    """A copy of ``image`` (uint8 ``(h, w, 3)``) with an arrow every ``step`` pixels of ``flow`` along
    ``scale * flow``.  The grid and the lengths are in ``flow``'s pixels; an image of another size than the
    flow gets the same arrows scaled to it (for previews)."""
    flow = _as_flow(flow)
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    h, w = flow.shape[1:]
    zoom = np.array([out.shape[1] / w, out.shape[0] / h])  # x, y
    if abs(out.shape[0] - h * zoom[0]) > 1:
        raise ValueError(f"image {out.shape[:2]} and flow {flow.shape[1:]} differ in aspect ratio")
    ys, xs = np.mgrid[step // 2:h:step, step // 2:w:step]
    dx, dy = flow[0, ys, xs] * scale, flow[1, ys, xs] * scale
    drawn = np.hypot(dx, dy) >= min_length
    starts = np.stack([xs[drawn], ys[drawn]], axis=1) * zoom
    ends = starts + np.stack([dx[drawn], dy[drawn]], axis=1) * zoom
    for start, end in zip(np.rint(starts).astype(int).tolist(), np.rint(ends).astype(int).tolist()):
        cv2.arrowedLine(out, tuple(start), tuple(end), color, thickness, cv2.LINE_AA, tipLength=0.3)
    return out


def label(image: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``image`` with ``text`` in the top-left corner (white on a dark band)."""
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    scale = max(0.4, out.shape[1] / 640)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    out[: h + base + 8, : w + 8] //= 3
    cv2.putText(out, text, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def panel_size(width: int, height: int, panel_width: int | None = PANEL_WIDTH) -> tuple[int, int]:
    """``(w, h)`` of one panel for ``width`` x ``height`` fields: ``panel_width`` wide (never wider than the
    fields), the fields' aspect ratio; ``None`` keeps the fields' size."""
    if panel_width is None or panel_width >= width:
        return width, height
    if panel_width < 16:
        raise ValueError(f"panel width must be at least 16 px, got {panel_width}")
    return panel_width, max(1, round(height * panel_width / width))


def _shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (h, w, C) resized to ``size`` = (w, h) by area averaging (unchanged if already that size)."""
    return image if image.shape[1::-1] == tuple(size) else cv2.resize(image, size,
                                                                      interpolation=cv2.INTER_AREA)


def _preview_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    flow = _as_flow(flow)
    if flow.shape[:0:-1] == tuple(size):
        return flow
    return np.stack([_shrink(channel, size) for channel in flow])


def _one_ahead(items: Iterable[T]) -> Iterator[T]:
    """The items of ``items``, each produced in a worker thread while the previous one is being used (OpenCV
    and numpy release the GIL, so drawing the next skeleton overlaps colouring this frame's fields)."""
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, iterator, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, iterator, _END)
            yield item


def guidance_panels(skeletons: Iterable[np.ndarray], sparse: Iterable[np.ndarray],
                    dense: Iterable[np.ndarray] | None, *, sparse_scale: float, dense_scale: float,
                    dense_label: str = "", panel_width: int | None = PANEL_WIDTH,
                    first: int = 0) -> Iterator[np.ndarray]:
    """The picture of each driving frame n: skeleton | F_s | F_d (without F_d when ``dense`` is None), uint8
    RGB ``(h, 2 w or 3 w, 3)`` with panels of :func:`panel_size`.

    ``skeletons``: the skeleton image of each frame (uint8 RGB at the fields' aspect ratio, any size: resized
    to the panel by area averaging), taken from the iterable in a worker thread one frame ahead, so a
    generator that draws them runs alongside the colouring.  ``sparse`` / ``dense``: ``F_s[n]`` / ``F_d[n]``
    (2, H, W) at the generation size, one per frame (arrays, or anything ``np.asarray`` takes), consumed
    lazily, so frames can be generated one at a time.  ``sparse_scale`` / ``dense_scale``: the video's colour
    scales (:func:`video_scale` or :func:`scale_from_maxima` over the full-size frames).  ``F_d`` gets arrows
    every ``max(16, W // 18)`` px of the generation frame, shortened to ``1.5`` arrow spacings at the scale.
    ``first`` is the number of the first frame (its label).
    """
    dense_frames = iter(dense) if dense is not None else None
    for n, (skeleton, sparse_flow) in enumerate(zip(_one_ahead(skeletons), sparse)):
        sparse_flow = _as_flow(sparse_flow)
        height, width = sparse_flow.shape[1:]
        size = panel_size(width, height, panel_width)
        row = [label(_shrink(np.asarray(skeleton, np.uint8), size), f"skeleton {first + n}"),
               label(flow_to_color(_preview_flow(sparse_flow, size), sparse_scale), "F_s sparse")]
        if dense_frames is not None:
            dense_flow = _as_flow(next(dense_frames))
            step = max(16, width // 18)
            arrow_scale = min(1.0, 1.5 * step / dense_scale) if dense_scale > 0 else 1.0
            colour = flow_to_color(_preview_flow(dense_flow, size), dense_scale)
            row.append(label(draw_flow_arrows(colour, dense_flow, step=step, scale=arrow_scale),
                             f"F_d {dense_label}".strip()))
        yield np.concatenate(row, axis=1)
