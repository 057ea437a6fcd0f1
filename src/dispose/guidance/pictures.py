"""Pictures of a guidance: per driving frame, skeleton | ``F_s`` | ``F_d`` side by side (the panels of
``dispose guidance``, the app's preview and the README picture).

Flows are coloured with the Middlebury code (:mod:`.flow_pictures`), one colour scale per field for the
whole video (the 90th percentile of the frames' largest vectors, :func:`~.flow_pictures.video_scale`'s rule),
and ``F_d`` gets arrows showing the displacement (shortened when the field's scale exceeds the arrow
spacing).  Pictures are drawn at a preview width (``width``; the generation size when None): the fields are
resized with their vectors scaled, so colours and arrows mean the same at any size.  ``F_s`` is generated
from the trajectories a chunk of frames at a time, so memory does not grow with the video's length.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import torch

from dispose.guidance.flow_pictures import draw_flow_arrows, flow_to_color, label, max_magnitude

PERCENTILE = 90.0
CHUNK = 16


def _resized(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (2, H, W) flow at ``size = (w, h)``, its vectors scaled to the new pixels."""
    height, width = flow.shape[1:]
    if (width, height) == size:
        return flow
    x = cv2.resize(flow[0], size, interpolation=cv2.INTER_AREA) * (size[0] / width)
    y = cv2.resize(flow[1], size, interpolation=cv2.INTER_AREA) * (size[1] / height)
    return np.stack([x, y])


def _chunks(guidance) -> Iterator[tuple[range, np.ndarray, np.ndarray | None]]:
    count = len(guidance.driving)
    for start in range(0, count, CHUNK):
        frames = range(start, min(start + CHUNK, count))
        sparse = guidance.sparse_flow(frames).numpy()
        dense = None if guidance.dense_flow is None else guidance.dense_flow[start:frames.stop].float().numpy()
        yield frames, sparse, dense


def guidance_scales(guidance) -> tuple[float, float]:
    """The colour scales (sparse, dense) of a whole video, in pixels of the generation size."""
    sparse_max, dense_max = [], []
    for _, sparse, dense in _chunks(guidance):
        sparse_max += [max_magnitude(frame) for frame in sparse]
        if dense is not None:
            dense_max += [max_magnitude(frame) for frame in dense]
    scale = (lambda maxima: float(np.percentile(maxima, PERCENTILE)) if maxima else 0.0)
    return scale(sparse_max), scale(dense_max)


def _panel(guidance, frame: int, skeleton: np.ndarray, sparse: np.ndarray, dense: np.ndarray | None,
           scales: tuple[float, float], width: int | None) -> np.ndarray:
    full_w, full_h = guidance.size
    size = (full_w, full_h) if width is None else (int(width), max(2, round(full_h * width / full_w)))
    factor = size[0] / full_w
    row = [label(cv2.resize(skeleton, size, interpolation=cv2.INTER_AREA) if factor != 1 else skeleton,
                 f"skeleton {frame}"),
           label(flow_to_color(_resized(sparse, size), scales[0] * factor), "F_s sparse")]
    if dense is not None:
        dense = _resized(dense, size)
        step = max(16, size[0] // 18)
        dense_scale = scales[1] * factor
        arrow_scale = min(1.0, 1.5 * step / dense_scale) if dense_scale > 0 else 1.0
        row.append(label(draw_flow_arrows(flow_to_color(dense, dense_scale), dense, step=step, scale=arrow_scale),
                         f"F_d {guidance.settings.get('dense', '')}".rstrip()))
    return np.concatenate(row, axis=1)


def guidance_picture(guidance, frame: int, *, scales: tuple[float, float] | None = None,
                     width: int | None = None) -> np.ndarray:
    """The panels of driving frame ``frame`` (uint8 RGB); ``scales`` from :func:`guidance_scales` (computed
    here when None, which costs a pass over the video)."""
    scales = guidance_scales(guidance) if scales is None else scales
    sparse = guidance.sparse_flow([frame]).numpy()[0]
    dense = None if guidance.dense_flow is None else guidance.dense_flow[frame].float().numpy()
    skeleton = guidance.skeleton_images([frame + 1])[0]
    return _panel(guidance, frame, skeleton, sparse, dense, scales, width)


def guidance_pictures(guidance, *, width: int | None = None) -> Iterator[np.ndarray]:
    """The panels of every driving frame in order, chunk by chunk (module docstring)."""
    scales = guidance_scales(guidance)
    with torch.no_grad():
        for frames, sparse, dense in _chunks(guidance):
            skeletons = guidance.skeleton_images([i + 1 for i in frames])
            for offset, frame in enumerate(frames):
                yield _panel(guidance, frame, skeletons[offset], sparse[offset],
                             None if dense is None else dense[offset], scales, width)
