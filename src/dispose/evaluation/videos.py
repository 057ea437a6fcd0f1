"""Finding, pairing and reading the videos an evaluation compares.

A video is either a file PyAV can decode (``.mp4 .avi .mov .mkv .webm .gif``) or a folder of frame
images (``.png .jpg .jpeg .bmp``, sorted by name; a folder whose frames sit in an ``images/``
subfolder, as in the TikTok dataset, also counts).  ``--pred``/``--gt`` accept video files,
folders of videos (and/or of frame folders), or a single frame folder; a folder that holds any
video is read as a folder of videos.  Videos are paired by name (file stem or folder name).

Frames are resized while they are read, so long full-HD videos never sit in memory at full size:
``cv2.INTER_AREA`` when shrinking, ``cv2.INTER_LINEAR`` when enlarging, aspect ratio *not* kept
(both sides of a pair end up at exactly the same size).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dispose.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: frame rate assumed for frame folders (the TikTok dataset is 30 fps)
FOLDER_FPS = 30.0


@dataclass(frozen=True)
class Clip:
    name: str
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    fps: float  # after frame stride
    source: Path


def _frame_files(folder: Path) -> list[Path]:
    if (folder / "images").is_dir():
        folder = folder / "images"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def is_video(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES) or (path.is_dir() and bool(_frame_files(path)))


def collect_videos(specs: Iterable[str | Path]) -> dict[str, Path]:
    """Map name -> video for every given file/folder; a folder of videos contributes its videos."""
    found: dict[str, Path] = {}
    for spec in specs:
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        if path.is_file():
            if path.suffix.lower() not in VIDEO_SUFFIXES:
                raise UserError(f"{path} is not a video file ({', '.join(VIDEO_SUFFIXES)})")
            items = [path]
        else:
            items = sorted(p for p in path.iterdir() if is_video(p) and not (p.is_dir() and p.name == "images"))
            if not items and _frame_files(path):
                items = [path]  # a single frame folder
        if not items:
            raise UserError(f"{path} holds no videos or frame images")
        for item in items:
            name = item.stem if item.is_file() else item.name
            if name in found and found[name] != item:
                raise UserError(f"two videos are named {name!r}: {found[name]} and {item}; rename one")
            found[name] = item
    return found


def pair_videos(pred: dict[str, Path], gt: dict[str, Path]) -> list[tuple[str, Path, Path]]:
    """(name, pred, gt) for every name in both sets; an error names what did not match."""
    names = sorted(set(pred) & set(gt))
    if not names:
        raise UserError(f"no generated video has the name of a ground-truth video (generated: "
                        f"{sorted(pred)[:5]}, ground truth: {sorted(gt)[:5]}); name them alike, e.g. 00335.mp4")
    return [(name, pred[name], gt[name]) for name in names]


def resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize an RGB frame to ``size = (W, H)`` (area when shrinking, bilinear when enlarging)."""
    if size is None or (frame.shape[1], frame.shape[0]) == tuple(size):
        return frame
    shrink = size[0] <= frame.shape[1] and size[1] <= frame.shape[0]
    return cv2.resize(frame, tuple(size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _decode(path: Path) -> tuple[Iterator[np.ndarray], float]:
    if path.is_dir():
        def frames() -> Iterator[np.ndarray]:
            for file in _frame_files(path):
                image = cv2.imread(str(file), cv2.IMREAD_COLOR)
                if image is None:
                    raise UserError(f"cannot read frame image {file}")
                yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return frames(), FOLDER_FPS
    import av

    try:
        container = av.open(str(path))
        stream = container.streams.video[0]
    except (av.error.FFmpegError, IndexError) as error:
        raise UserError(f"cannot read video {path}: {error}") from error
    fps = float(stream.average_rate or stream.guessed_rate or FOLDER_FPS)

    def frames() -> Iterator[np.ndarray]:
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as error:
            raise UserError(f"cannot decode video {path}: {error}") from error
        finally:
            container.close()
    return frames(), fps


def frame_size(path: Path) -> tuple[int, int]:
    """(W, H) of a video's first frame."""
    frames, _ = _decode(path)
    first = next(frames, None)
    frames.close()
    if first is None:
        raise UserError(f"video {path} has no frames")
    return first.shape[1], first.shape[0]


def read_clip(name: str, path: Path, size: tuple[int, int] | None = None, stride: int = 1,
              max_frames: int | None = None) -> Clip:
    """Read every ``stride``-th frame (at most ``max_frames``), resized to ``size = (W, H)``."""
    if stride < 1:
        raise ValueError(f"frame stride must be >= 1, got {stride}")
    frames, fps = _decode(path)
    kept: list[np.ndarray] = []
    for index, frame in enumerate(frames):
        if index % stride:
            continue
        kept.append(resize(frame, size))
        if max_frames is not None and len(kept) >= max_frames:
            break
    frames.close()
    if not kept:
        raise UserError(f"video {path} has no frames")
    return Clip(name, np.stack(kept), fps / stride, path)
