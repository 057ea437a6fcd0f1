"""The clips ``dispose prepare`` reads: listing its input and decoding one clip's frames.

Input (one path):

* a folder: every video file below it (``.mp4 .mov .webm .mkv``) is a clip, and every folder below it that
  directly holds PNG/JPEG frames is a clip (the TikTok dataset layout, ``<root>/00001/images/0001.png``);
* a text file (``.txt``): one path per line (relative paths are taken from the list's folder; blank lines and
  lines starting with ``#`` are ignored);
* a JSONL file (``.jsonl``): one object per line with ``"path"`` and optionally ``"id"`` (a given id must be
  one safe folder name, :data:`SAFE_ID`: it becomes ``OUT/clips/<id>``, so ``"../x"`` or ``"a/b"`` is
  refused);
* a single video file.

Clip ids are the path relative to the input folder (or the list's folder), without suffix, with every
character outside ``[A-Za-z0-9_.-]`` replaced by ``_`` and folders joined by ``__``; a trailing ``images``
folder is dropped (TikTok: ``00001/images`` -> ``00001``).  Ids that would collide get a short hash of
their path appended.

Frames are sampled with the release's stride rule (:func:`dispose.media.video.effective_stride`):
``sample_stride * max(1, int(fps / 24))``.  A frame folder has no frame rate: ``folder_fps`` (30, the
TikTok dataset's) stands in for it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dispose.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
#: What a clip id given in a list may be: one folder name of letters, digits, ``_``, ``.`` and ``-``, not
#: starting with ``.`` (so neither ``..`` nor a hidden folder).
SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
#: Frame rate assumed for a folder of frames (the TikTok dataset is 30 fps).
FOLDER_FPS = 30.0


@dataclass(frozen=True)
class ClipSource:
    """One clip to prepare: ``kind`` is ``"video"`` (a file) or ``"frames"`` (a folder of images)."""

    id: str
    path: Path
    kind: str


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)


def _kind(path: Path) -> str:
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    if path.is_dir() and _frame_files(path):
        return "frames"
    if path.is_file():
        return "video"  # unknown suffix: decoding decides, and a failure is recorded for this clip
    raise UserError(f"{path} is neither a video file nor a folder of PNG/JPEG frames")


def _base_id(relative: Path) -> str:
    parts = (list(relative.with_suffix("").parts) if relative.suffix.lower() in VIDEO_SUFFIXES
             else list(relative.parts))
    if len(parts) > 1 and parts[-1] == "images":
        parts = parts[:-1]
    return "__".join(re.sub(r"[^A-Za-z0-9_.-]", "_", part) for part in parts) or "clip"


def _with_ids(entries: list[tuple[Path, Path, str | None]]) -> list[ClipSource]:
    """``(path, relative path, given id)`` -> sources with unique ids (module docstring)."""
    bases = [given or _base_id(rel) for _, rel, given in entries]
    clips, seen = [], set()
    for (path, rel, given), base in zip(entries, bases):
        clip_id = base
        if bases.count(base) > 1 and not given:
            clip_id = f"{base}-{hashlib.sha1(str(rel).encode()).hexdigest()[:8]}"
        if clip_id in seen:
            raise UserError(f"clip id {clip_id!r} is given twice in the input list; make the ids unique")
        seen.add(clip_id)
        clips.append(ClipSource(clip_id, path, _kind(path)))
    return clips


def _safe_id(given: object) -> bool:
    return isinstance(given, str) and SAFE_ID.fullmatch(given) is not None


def _scan_folder(root: Path) -> list[Path]:
    found = []
    for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        if folder.name.startswith("."):
            continue
        if _frame_files(folder):
            found.append(folder)
        found.extend(p for p in sorted(folder.iterdir())
                     if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    return found


def _read_list(path: Path) -> list[tuple[Path, str | None]]:
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        given = None
        if path.suffix.lower() == ".jsonl":
            try:
                record = json.loads(line)
                target, given = record["path"], record.get("id")
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{path} line {number}: expected a JSON object with a \"path\"") from None
            if given is not None and not _safe_id(given):
                raise UserError(f"{path} line {number}: id {given!r} is not one safe folder name; use "
                                "letters, digits, '_', '.' and '-' only, not starting with '.'")
        else:
            target = line
        entries.append((Path(target), given))
    return entries


def list_clips(source: str | Path) -> list[ClipSource]:
    """The clips of a folder, a ``.txt``/``.jsonl`` list or a single video (module docstring)."""
    source = Path(source)
    if not source.exists():
        raise UserError(f"input {source} does not exist; give a folder of videos, a TikTok-style folder of "
                        "frame folders, a .txt/.jsonl list of paths or a video file")
    if source.is_dir():
        entries = [(p, p.relative_to(source), None) for p in _scan_folder(source)]
    elif source.suffix.lower() in (".txt", ".jsonl"):
        entries = []
        for target, given in _read_list(source):
            path = target if target.is_absolute() else source.parent / target
            if not path.exists():
                raise UserError(f"{source}: listed path {target} does not exist")
            entries.append((path, target if not target.is_absolute() else Path(target.name), given))
    else:
        entries = [(source, Path(source.name), None)]
    if not entries:
        raise UserError(f"input {source} holds no video ({', '.join(VIDEO_SUFFIXES)}) "
                        "and no folder of frames")
    return _with_ids(entries)


@dataclass
class ClipFrames:
    """Decoded frames of one clip (uint8 RGB ``(N, H, W, 3)``) and their timing."""

    frames: np.ndarray
    fps: float
    source_fps: float
    source_frames: int | None
    stride: int


def read_clip(clip: ClipSource, sample_stride: int, max_frames: int | None,
              folder_fps: float = FOLDER_FPS) -> ClipFrames:
    """Frames of ``clip`` with the release's stride rule; a UserError names a clip that cannot be read."""
    if clip.kind == "video":
        from dispose.media.video import read_video

        video = read_video(clip.path, sample_stride=sample_stride, max_frames=max_frames)
        return ClipFrames(video.frames, video.fps, video.source_fps, video.source_frame_count, video.stride)
    from dispose.media.image import load_image
    from dispose.media.video import effective_stride

    files = _frame_files(clip.path)
    stride = effective_stride(sample_stride, folder_fps)
    chosen = files[::stride][:max_frames] if max_frames else files[::stride]
    frames = [load_image(p) for p in chosen]
    if any(f.shape != frames[0].shape for f in frames):
        raise UserError(f"frames of {clip.path} do not all have the same size")
    return ClipFrames(np.stack(frames), folder_fps / stride, folder_fps, len(files), stride)
