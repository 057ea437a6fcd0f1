"""Finding, pairing and streaming the videos an evaluation compares.

A video is either a file PyAV can decode (``.mp4 .avi .mov .mkv .webm .gif``) or a folder of frame
images (``.png .jpg .jpeg .bmp``, sorted by name; a folder whose frames sit in an ``images/``
subfolder, as in the TikTok dataset, also counts).  ``--pred``/``--gt`` accept video files,
folders of videos (and/or of frame folders), or a single frame folder; a folder that holds any
video is read as a folder of videos.  Videos are paired by name (file stem or folder name), except
that one generated video against one ground-truth video (``--pred x.mp4 --gt y.mp4``) is one pair
whatever their names.

Videos are never held in memory whole: :func:`probe` counts a video's frames (reading it once, so a
damaged file fails before any model loads) and :func:`stream` then yields its frames one at a time,
upright (video files are read with :class:`dispose.media.video.VideoFrames`, which applies a
display-rotation tag and warns about a file cut short; image files with
:func:`dispose.media.image.load_image`, which applies EXIF orientation) and resized while they are read:
``cv2.INTER_AREA`` when shrinking, ``cv2.INTER_LINEAR`` when enlarging, aspect ratio *not* kept (both sides of
a pair end up at exactly the same size).  Frame strides are exact (every ``stride``-th decoded frame); unlike
``dispose animate``'s driving video, no frame-rate rule changes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dispose.errors import UserError
from dispose.media.image import load_image
from dispose.media.video import VideoFrames

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: frame rate assumed for frame folders (the TikTok dataset is 30 fps)
FOLDER_FPS = 30.0


@dataclass(frozen=True)
class VideoInput:
    """A video as the evaluation reads it: its frames are produced by :func:`stream`."""

    name: str
    path: Path
    frames: int  # frames :func:`stream` yields (after ``stride`` and ``max_frames``)
    size: tuple[int, int]  # (W, H) of the upright source frames
    fps: float  # after the stride
    stride: int


def _frame_files(folder: Path) -> list[Path]:
    if (folder / "images").is_dir():
        folder = folder / "images"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def is_video(path: Path) -> bool:
    return ((path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES)
            or (path.is_dir() and bool(_frame_files(path))))


def _videos_in(path: Path) -> list[Path]:
    """The videos one ``--pred``/``--gt`` entry names: itself, or the videos in a folder."""
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if path.is_file():
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise UserError(f"{path} is not a video file ({', '.join(VIDEO_SUFFIXES)})")
        return [path]
    items = sorted(p for p in path.iterdir() if is_video(p) and not (p.is_dir() and p.name == "images"))
    if not items and _frame_files(path):
        items = [path]  # a single frame folder
    if not items:
        raise UserError(f"{path} holds no videos or frame images")
    return items


def _name(item: Path) -> str:
    return item.stem if item.is_file() else item.name


def collect_videos(specs: Iterable[str | Path]) -> dict[str, Path]:
    """Map name -> video for every given file/folder; a folder of videos contributes its videos."""
    found: dict[str, Path] = {}
    for spec in specs:
        for item in _videos_in(Path(spec)):
            name = _name(item)
            if name in found and found[name] != item:
                raise UserError(f"two videos are named {name!r}: {found[name]} and {item}; rename one")
            found[name] = item
    return found


def pair_videos(pred: dict[str, Path], gt: dict[str, Path]) -> list[tuple[str, Path, Path]]:
    """(name, pred, gt) for every name in both sets; an error names what did not match."""
    names = sorted(set(pred) & set(gt))
    if not names:
        raise UserError(f"no generated video has the name of a ground-truth video (generated: "
                        f"{sorted(pred)[:5]}, ground truth: {sorted(gt)[:5]}); "
                        "name them alike, e.g. 00335.mp4")
    return [(name, pred[name], gt[name]) for name in names]


def pair_inputs(pred_specs: list[Path], gt_specs: list[Path]) -> list[tuple[str, Path, Path]]:
    """Pairs for ``--pred``/``--gt``: one video against one video is a pair (named after the generated
    one) whatever the names; otherwise videos pair by name (:func:`pair_videos`)."""
    if len(pred_specs) == 1 and len(gt_specs) == 1:
        pred, gt = _videos_in(Path(pred_specs[0])), _videos_in(Path(gt_specs[0]))
        if pred == [Path(pred_specs[0])] and gt == [Path(gt_specs[0])]:
            return [(_name(pred[0]), pred[0], gt[0])]
    return pair_videos(collect_videos(pred_specs), collect_videos(gt_specs))


def resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize an RGB frame to ``size = (W, H)`` (area when shrinking, bilinear when enlarging)."""
    if size is None or (frame.shape[1], frame.shape[0]) == tuple(size):
        return frame
    shrink = size[0] <= frame.shape[1] and size[1] <= frame.shape[0]
    return cv2.resize(frame, tuple(size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _source(path: Path, stride: int, max_frames: int | None) -> Iterable[np.ndarray]:
    """Every ``stride``-th upright RGB frame of a video file or frame folder, at most ``max_frames``."""
    if path.is_dir():
        files = _frame_files(path)[::stride][:max_frames]
        return (load_image(file) for file in files)
    return VideoFrames(path, stride, max_frames)


def probe(name: str, path: Path, stride: int = 1, max_frames: int | None = None) -> VideoInput:
    """Count the frames of a video that an evaluation will use, reading it once without keeping any frame
    (a damaged file fails here, before any model loads)."""
    if stride < 1:
        raise UserError(f"frame stride must be at least 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise UserError(f"--max-frames must be at least 1, got {max_frames}")
    count, size = 0, None
    for frame in _source(path, stride, max_frames):
        size = size or (frame.shape[1], frame.shape[0])
        count += 1
    if not count:
        raise UserError(f"video {path} has no frames")
    fps = FOLDER_FPS / stride if path.is_dir() else VideoFrames(path, stride).fps
    return VideoInput(name, path, count, size, fps, stride)


def stream(video: VideoInput, size: tuple[int, int] | None = None,
           count: int | None = None) -> Iterator[np.ndarray]:
    """Yield the first ``count`` (default: all) of ``video``'s frames as uint8 RGB, resized to ``size``."""
    count = video.frames if count is None else count
    given = 0
    for frame in _source(video.path, video.stride, count):
        yield resize(frame, size)
        given += 1
    if given < count:
        raise UserError(f"video {video.path} gave {given} frames on reading, {count} when counted; "
                        "the file may be changing or damaged")


def read_frames(path: Path, size: tuple[int, int] | None = None, stride: int = 1,
                max_frames: int | None = None) -> np.ndarray:
    """A short clip as one ``(N, H, W, 3)`` array (tests and benches; ``dispose eval`` streams)."""
    return np.stack(list(stream(probe(Path(path).stem, Path(path), stride, max_frames), size)))
