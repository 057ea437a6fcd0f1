"""Pictures of motion fields: the Middlebury colour code and arrow overlays (paper Figures 5, 14, 15).

:func:`flow_to_color` is the standard optical-flow colour code of the Middlebury benchmark (Baker et al.,
IJCV 2011): a 55-colour wheel (red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11, blue-magenta 13,
magenta-red 6) interpolated by the flow direction (hue), white for zero motion and full saturation at
``max_magnitude``; larger vectors are darkened to 75 %.  Channels are rounded to uint8 (the reference
code floors, which turns any non-zero vector, however tiny, off-white).  Use one ``max_magnitude`` for all
frames of a video so that colours are comparable over time (:func:`video_scale`).

Flows are channel-first float arrays ``(2, H, W)`` (dx, dy), like the motion fields.
"""

from __future__ import annotations

import cv2
import numpy as np

_WHEEL_SEGMENTS = (15, 6, 4, 11, 13, 6)  # RY, YG, GC, CB, BM, MR


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


def video_scale(flows: np.ndarray, percentile: float = 90.0) -> float:
    """A shared colour scale for the ``(N, 2, H, W)`` flows of a video: the ``percentile`` of the per-frame
    largest lengths, so that one exceptional frame (e.g. the reference -> first frame jump of ``F_s``) does
    not wash out all the others (its longer vectors are drawn darkened)."""
    flows = np.asarray(flows, np.float32)
    if not flows.size:
        return 0.0
    return float(np.percentile([max_magnitude(frame) for frame in flows], percentile))


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Middlebury colour picture, uint8 RGB ``(H, W, 3)``, of a ``(2, H, W)`` flow.

    ``max_magnitude`` is the length drawn fully saturated (default: this flow's largest; a zero flow is white).
    """
    u, v = _as_flow(flow).astype(np.float64)
    radius = np.sqrt(u * u + v * v)
    scale = float(radius.max()) if max_magnitude is None else float(max_magnitude)
    if scale <= 0:
        return np.full((*u.shape, 3), 255, np.uint8)
    u, v, radius = u / scale, v / scale, radius / scale
    wheel = colour_wheel()
    n = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi
    position = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(position).astype(int)
    k1 = (k0 + 1) % n
    frac = (position - k0)[..., None]
    colour = ((1 - frac) * wheel[k0] + frac * wheel[k1]) / 255
    inside = (radius <= 1)[..., None]
    colour = np.where(inside, 1 - radius[..., None] * (1 - colour), colour * 0.75)
    return np.round(255 * colour).astype(np.uint8)


def draw_flow_arrows(image: np.ndarray, flow: np.ndarray, *, step: int = 32, scale: float = 1.0,
                     min_length: float = 0.5, color: tuple[int, int, int] = (0, 0, 0),
                     thickness: int = 1) -> np.ndarray:
    """A copy of ``image`` (uint8 ``(H, W, 3)``) with an arrow every ``step`` pixels along ``scale * flow``."""
    flow = _as_flow(flow)
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    if out.shape[:2] != flow.shape[1:]:
        raise ValueError(f"image {out.shape[:2]} and flow {flow.shape[1:]} differ in size")
    h, w = flow.shape[1:]
    for y in range(step // 2, h, step):
        for x in range(step // 2, w, step):
            dx, dy = float(flow[0, y, x]) * scale, float(flow[1, y, x]) * scale
            if np.hypot(dx, dy) >= min_length:
                cv2.arrowedLine(out, (x, y), (round(x + dx), round(y + dy)), color, thickness,
                                cv2.LINE_AA, tipLength=0.3)
    return out


def label(image: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``image`` with ``text`` in the top-left corner (white on a dark band)."""
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    scale = max(0.4, out.shape[1] / 640)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    out[: h + base + 8, : w + 8] //= 3
    cv2.putText(out, text, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
