"""Reading driving videos and writing results (PyAV / FFmpeg).

Sampling follows the release (``mimicmotion/dwpose/preprocess.py::get_video_pose``, decord): the requested
``sample_stride`` is multiplied by ``max(1, int(average_fps / 24))`` so a 48 or 60 fps video is thinned to
about the same motion per frame as a 24-30 fps one, then frames ``0, stride, 2*stride, ...`` are kept.  The
returned ``fps`` is the source's average rate divided by that effective stride.

Differences from the release:

* a display-rotation tag (phone videos) is applied so frames are upright; decord ignores it;
* frames are converted to RGB by FFmpeg's swscale through PyAV instead of decord; pixel values can differ
  by a few levels in chroma-heavy regions depending on each build's colour conversion.

A file that ends before the frame count its container declares (an mp4 cut short: FFmpeg decodes what is
there and stops) is reported, not silently used: see :class:`VideoFrames`.  :class:`VideoFrames` streams
frames for long videos; :func:`read_video` holds the sampled frames in memory.

Outputs are H.264 in yuv420p, which needs even sizes: an odd width or height is padded by one pixel that
repeats the last column/row (no content is lost; the padded line is a copy of its neighbour).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Iterator
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
    # frames the file yielded when read to its end (None: not read to it)
    decoded_frame_count: int | None = None

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def truncated(self) -> bool:
        """True when the file ended well before the frame count its container declares (see
        :class:`VideoFrames`)."""
        return _is_short(self.decoded_frame_count, self.source_frame_count)

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def effective_stride(sample_stride: int, average_fps: float) -> int:
    """The release's stride: ``sample_stride * max(1, int(average_fps / 24))``."""
    return int(sample_stride) * max(1, int(average_fps / REFERENCE_FPS))


def _is_short(decoded: int | None, declared: int | None) -> bool:
    """Decoding ended more than 1 % (and more than one frame) before the declared count."""
    return decoded is not None and declared is not None and declared - decoded > max(1, declared // 100)


class VideoFrames:
    """A video file opened for streaming: its metadata at once, its frames one at a time.

    Iterating yields every ``stride``-th frame (uint8 RGB (H, W, 3), upright: the display-rotation tag is
    applied), at most ``max_frames`` of them; it can be iterated again (the file is reopened).  With
    ``release_stride`` the stride is the release's rule (:func:`effective_stride`: ``stride`` times
    ``int(fps / 24)``), otherwise exactly ``stride``.

    A file that ends before the frame count its container declares (cut short, or damaged: FFmpeg stops at
    the first undecodable packet) is detected when iteration reaches the end: both numbers go to standard
    error as a warning and to :attr:`decoded_frame_count` / :attr:`source_frame_count`; with ``strict`` it is
    a :class:`~dispose.errors.UserError` instead.  (Iteration stopped by ``max_frames`` does not read the
    rest of the file and cannot tell.)

    Raises :class:`~dispose.errors.UserError` when the file is missing, is not a video, holds no frame or
    cannot be decoded.
    """

    def __init__(self, path: str | Path, stride: int = 1, max_frames: int | None = None, *,
                 release_stride: bool = False, strict: bool = False) -> None:
        import av

        self.path = Path(path)
        if stride < 1:
            raise UserError(f"sample stride must be at least 1, got {stride}")
        if max_frames is not None and max_frames < 1:
            raise UserError(f"max frames must be at least 1, got {max_frames}")
        if not self.path.is_file():
            raise UserError(f"video {self.path} does not exist" if not self.path.exists()
                            else f"video {self.path} is not a file")
        with self._open() as container:
            if not container.streams.video:
                raise UserError(f"video {self.path} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate or float(rate) <= 0:
                raise UserError(f"video {self.path} does not declare a frame rate")
            self.source_fps = float(rate)
            seconds = (float(stream.duration * stream.time_base) if stream.duration
                       else container.duration / av.time_base if container.duration else None)
            #: Frames the container declares (from its duration when it gives no count; None when neither).
            self.source_frame_count: int | None = int(stream.frames) or (
                round(seconds * self.source_fps) if seconds else None)
        self.stride = effective_stride(stride, self.source_fps) if release_stride else int(stride)
        self.fps = self.source_fps / self.stride
        self.max_frames = max_frames
        self.strict = strict
        #: Frames the file yielded when last read to its end (None until then).
        self.decoded_frame_count: int | None = None

    def _open(self):
        import av

        try:
            return av.open(str(self.path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
            raise UserError(f"video {self.path} could not be opened as a video ({error}); "
                            "give an mp4/mov/webm file") from None

    @property
    def truncated(self) -> bool:
        """True when the last read to the end found fewer frames than the container declares."""
        return _is_short(self.decoded_frame_count, self.source_frame_count)

    @property
    def expected_count(self) -> int | None:
        """Frames iteration should yield, from the declared count (None when the container does not say)."""
        if self.source_frame_count is None:
            return self.max_frames
        count = -(-self.source_frame_count // self.stride)
        return count if self.max_frames is None else min(count, self.max_frames)

    def __iter__(self) -> Iterator[np.ndarray]:
        import av

        kept = 0
        index = -1
        with self._open() as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for index, frame in enumerate(container.decode(stream)):
                    if index % self.stride:
                        continue
                    yield _upright(frame.to_ndarray(format="rgb24"), frame.rotation)
                    kept += 1
                    if self.max_frames is not None and kept >= self.max_frames:
                        return
            except (av.FFmpegError, OSError) as error:
                raise UserError(f"video {self.path} is corrupt: decoding failed after frame {index + 1} "
                                f"({error})") from None
        if kept == 0:
            raise UserError(f"video {self.path} holds no decodable frame")
        self.decoded_frame_count = index + 1
        if self.truncated:
            message = (f"video {self.path} is cut short or damaged: its container declares "
                       f"{self.source_frame_count} frames but only {self.decoded_frame_count} "
                       "could be decoded")
            if self.strict:
                raise UserError(f"{message}; repair or re-export it (or drop --strict to use those frames)")
            print(f"dispose: warning: {message}; using those (--strict refuses such files)", file=sys.stderr)


def read_video(path: str | Path, sample_stride: int = 2, max_frames: int | None = None, *,
               strict: bool = False) -> VideoClip:
    """Decode every ``effective_stride``-th frame of ``path`` as RGB, at most ``max_frames`` of them.

    A file shorter than its container declares is a warning, or with ``strict`` a UserError (see
    :class:`VideoFrames`, which streams the same frames without holding them all).

    Raises :class:`~dispose.errors.UserError` when the file is missing, is not a video, holds no frame or
    cannot be decoded.
    """
    video = VideoFrames(path, sample_stride, max_frames, release_stride=True, strict=strict)
    frames = np.stack(list(video))
    return VideoClip(frames=frames, fps=video.fps, source_fps=video.source_fps,
                     source_frame_count=video.source_frame_count, stride=video.stride,
                     decoded_frame_count=video.decoded_frame_count)


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def write_video(path: str | Path, frames: np.ndarray | Iterable[np.ndarray], fps: float, *,
                crf: int = 18) -> None:
    """Encode uint8 RGB frames (N, H, W, 3) as H.264/yuv420p into ``path`` (.mp4, .mov or .mkv), atomically.

    ``crf`` is x264's constant rate factor (18: visually lossless; the release uses torchvision's default,
    x264's 23).  Odd sizes are padded to even ones by repeating the last row/column.
    """
    import av

    from dispose.media.files import atomic_path

    path = Path(path)
    container_format = _CONTAINERS.get(path.suffix.lower())
    if container_format is None:
        raise UserError(f"output video {path}: unsupported suffix {path.suffix!r}; "
                        f"use one of {sorted(_CONTAINERS)}")
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
