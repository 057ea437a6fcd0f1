"""Pictures of a guidance: per driving frame, skeleton | ``F_s`` | ``F_d`` side by side (the panels of
``dispose guidance``, the app's preview and the README picture), drawn by
:func:`~dispose.guidance.flow_pictures.guidance_panels` at a preview width.

One colour scale per field for the whole video (:func:`~dispose.guidance.flow_pictures.scale_from_maxima` of
the frames' largest vectors).  ``F_s`` is generated from the trajectories a chunk of frames at a time and the
skeletons are drawn at the panel size, so memory does not grow with the video's length.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from dispose.guidance.flow_pictures import (
    PANEL_WIDTH,
    guidance_panels,
    max_magnitude,
    panel_size,
    scale_from_maxima,
)

CHUNK = 16


def _sparse_frames(guidance, frames: Sequence[int]) -> Iterator[np.ndarray]:
    for start in range(0, len(frames), CHUNK):
        yield from guidance.sparse_flow(frames[start:start + CHUNK]).numpy()


def _dense_frames(guidance, frames: Sequence[int]) -> Iterator[np.ndarray] | None:
    if guidance.dense_flow is None:
        return None
    return (np.asarray(guidance.dense_flow[n], dtype=np.float32) for n in frames)


def guidance_scales(guidance) -> tuple[float, float]:
    """The colour scales (sparse, dense) of a whole video, in pixels of the generation size."""
    frames = range(len(guidance.driving))
    sparse = scale_from_maxima([max_magnitude(flow) for flow in _sparse_frames(guidance, frames)])
    dense = _dense_frames(guidance, frames)
    return sparse, (0.0 if dense is None else scale_from_maxima([max_magnitude(flow) for flow in dense]))


def guidance_pictures(guidance, *, frames: Sequence[int] | None = None,
                      scales: tuple[float, float] | None = None,
                      width: int | None = PANEL_WIDTH) -> Iterator[np.ndarray]:
    """The pictures of driving frames ``frames`` (default: all, consecutive), panels ``width`` wide (None: the
    generation size); ``scales`` from :func:`guidance_scales` (computed when None: a pass over the video)."""
    from dispose.pose.drawing import draw_pose

    frames = list(range(len(guidance.driving)) if frames is None else frames)
    scales = guidance_scales(guidance) if scales is None else scales
    size = panel_size(*guidance.size, width)
    skeletons = (draw_pose(guidance.driving[n], *size) for n in frames)
    label = str(guidance.settings.get("dense", ""))
    yield from guidance_panels(skeletons, _sparse_frames(guidance, frames), _dense_frames(guidance, frames),
                               sparse_scale=scales[0], dense_scale=scales[1], dense_label=label,
                               panel_width=width, first=frames[0] if frames else 0)


def guidance_picture(guidance, frame: int, *, scales: tuple[float, float] | None = None,
                     width: int | None = PANEL_WIDTH) -> np.ndarray:
    """The picture of driving frame ``frame`` (see :func:`guidance_pictures`)."""
    return next(guidance_pictures(guidance, frames=[frame], scales=scales, width=width))
