"""Reading driving videos and writing results (PyAV / FFmpeg).

Sampling follows the release (``mimicmotion/dwpose/preprocess.py::get_video_pose``, decord): the requested
``sample_stride`` is multiplied by ``max(1, int(average_fps / 24))`` so a 48 or 60 fps video is thinned to
about the same motion per frame as a 24-30 fps one, then frames ``0, stride, 2*stride, ...`` are kept.  The
returned ``fps`` is the source's average rate divided by that effective stride.

Differences from the release:

* a display-rotation tag (phone videos) is applied so frames are upright; decord ignores it;
* frames are converted to RGB by FFmpeg's swscale through PyAV instead of decord; pixel values can differ
  by a few levels in chroma-heavy regions depending on each build's colour conversion.

Outputs are H.264 in yuv420p, which needs even sizes: an odd width or height is padded by one pixel that
repeats the last column/row (no content is lost; the padded line is a copy of its neighbour).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from dispose.errors import UserError

#: Frame rate the release's stride rule is anchored to.
REFERENCE_FPS = 24
_CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


@dataclass
class VideoClip:
    """Frames sampled from a video."""

    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    fps: float  # frame rate of ``frames`` (source average rate / stride)
    source_fps: float  # average frame rate of the file
    source_frame_count: int | None  # frames the container declares (None when it does not say)
    stride: int  # effective stride: every ``stride``-th source frame was kept

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def effective_stride(sample_stride: int, average_fps: float) -> int:
    """The release's stride: ``sample_stride * max(1, int(average_fps / 24))``."""
    return int(sample_stride) * max(1, int(average_fps / REFERENCE_FPS))


def read_video(path: str | Path, sample_stride: int = 2, max_frames: int | None = None) -> VideoClip:
    """Decode every ``effective_stride``-th frame of ``path`` as RGB, at most ``max_frames`` of them.

    Raises :class:`~dispose.errors.UserError` when the file is missing, is not a video, holds no frame or
    cannot be decoded.
    """
    import av

    path = Path(path)
    if sample_stride < 1:
        raise UserError(f"sample stride must be at least 1, got {sample_stride}")
    if max_frames is not None and max_frames < 1:
        raise UserError(f"max frames must be at least 1, got {max_frames}")
    if not path.is_file():
        raise UserError(f"video {path} does not exist" if not path.exists() else f"video {path} is not a file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise UserError(f"video {path} could not be opened as a video ({error}); give an mp4/mov/webm file") from None
    with container:
        if not container.streams.video:
            raise UserError(f"video {path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or float(rate) <= 0:
            raise UserError(f"video {path} does not declare a frame rate")
        source_fps = float(rate)
        stride = effective_stride(sample_stride, source_fps)
        frames = []
        index = -1
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % stride:
                    continue
                frames.append(_upright(frame.to_ndarray(format="rgb24"), frame.rotation))
                if max_frames is not None and len(frames) >= max_frames:
                    break
        except (av.FFmpegError, OSError) as error:
            raise UserError(f"video {path} is corrupt: decoding failed after frame {index + 1} ({error})") from None
        declared = int(stream.frames) or None
    if not frames:
        raise UserError(f"video {path} holds no decodable frame")
    return VideoClip(frames=np.stack(frames), fps=source_fps / stride, source_fps=source_fps,
                     source_frame_count=declared, stride=stride)


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def write_video(path: str | Path, frames: np.ndarray | Iterable[np.ndarray], fps: float, *, crf: int = 18) -> None:
    """Encode uint8 RGB frames (N, H, W, 3) as H.264/yuv420p into ``path`` (.mp4, .mov or .mkv), atomically.

    ``crf`` is x264's constant rate factor (18: visually lossless; the release uses torchvision's default,
    x264's 23).  Odd sizes are padded to even ones by repeating the last row/column.
    """
    import av

    from dispose.media.files import atomic_path

    path = Path(path)
    container_format = _CONTAINERS.get(path.suffix.lower())
    if container_format is None:
        raise UserError(f"output video {path}: unsupported suffix {path.suffix!r}; use one of {sorted(_CONTAINERS)}")
    if not fps or fps <= 0:
        raise UserError(f"output video {path}: frame rate must be positive, got {fps}")
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise UserError(f"output video {path}: no frame to write")
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        height, width = _even(first).shape[:2]
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf)}
        for image in itertools.chain([first], frames):
            image = _even(np.asarray(image))
            if image.shape != (height, width, 3) or image.dtype != np.uint8:
                raise ValueError(f"frames must all be uint8 ({height}, {width}, 3) after padding, "
                                 f"got {image.dtype} {image.shape}")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


def _even(image: np.ndarray) -> np.ndarray:
    """Pad a (H, W, 3) image to even height and width by repeating its last row / column."""
    pad_h, pad_w = image.shape[0] % 2, image.shape[1] % 2
    if not (pad_h or pad_w):
        return np.ascontiguousarray(image)
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
