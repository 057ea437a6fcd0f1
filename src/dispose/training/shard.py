"""On-disk layout of a prepared dataset, shared by ``dispose prepare`` (writer) and the training dataset
(reader).

::

    DATASET/manifest.jsonl          one JSON line per clip (the ``record`` of each clip.json, input order)
    DATASET/clips/<id>/clip.json    the clip's record and the list of its shard files (written last)
    DATASET/clips/<id>/frames.safetensors   JPEG bytes of the N prepared frames (W x H, RGB)
    DATASET/clips/<id>/poses.json           the N poses (dispose-poses/1, normalised to W x H)
    DATASET/clips/<id>/flows.safetensors    reference -> frame optical flows and their watershed samples
    DATASET/clips/<id>/dift.safetensors     DIFT point embeddings of the reference candidates

``frames.safetensors``: ``jpeg`` uint8 (all JPEG files concatenated) and ``offsets`` int64 (N + 1).

``flows.safetensors`` (R reference candidates, N frames, flow grid ``h = H / d``, ``w = W / d``):

* ``references`` int64 (R,): frame indices of the candidates;
* ``flow`` float16 (R, N, 2, h, w): optical flow from frame ``references[r]`` to frame n (zero for
  n = references[r]), channel 0 = x, in pixels of the W x H frames, area-averaged from the full-size flow;
* ``watershed_offsets`` int64 (R * N + 1), ``watershed_points`` int16 (M, 2) ``(x, y)`` pixel positions at
  W x H, ``watershed_vectors`` float16 (M, 2): the watershed samples (``P_d`` at training, paper App. A) of
  the full-size flow of pair ``(r, n)`` are rows ``offsets[r * N + n]:offsets[r * N + n + 1]``.

``dift.safetensors``: ``point_embeddings`` float16 (R, 18, C), DIFT features of each candidate at its body
keypoints (zero for keypoints that are not visible); absent when prepared with ``--no-dift``.

A clip's folder is built under a temporary name and renamed into place when complete
(:func:`dispose.media.files.atomic_folder`, which also adds its ``.dispose-output`` list), so an interrupted
clip leaves no folder and is redone by the next run.  A clip is *finished* when ``clip.json`` exists and every
file it lists exists with the listed size.  A failed clip has a ``clip.json`` with ``status: failed`` and no
other file.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from dispose.media.files import atomic_path, atomic_write_text

MANIFEST = "manifest.jsonl"
CLIPS = "clips"
RECORD = "clip.json"
FORMAT = "dispose-prepared/1"


def clip_dir(root: Path, clip_id: str) -> Path:
    return Path(root) / CLIPS / clip_id


def read_record(folder: Path) -> dict | None:
    """The clip.json of a finished clip, or None when the clip is not finished (see module docstring)."""
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    for name, size in record.get("files", {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    return record


def write_record(folder: Path, record: dict) -> None:
    """Write clip.json listing the sizes of ``record["files"]`` (names) as present now."""
    record = dict(record)
    record["files"] = {name: (folder / name).stat().st_size for name in record.get("files", ())}
    atomic_write_text(folder / RECORD, json.dumps(record, indent=1))


def write_tensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    from safetensors.numpy import save_file

    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata=metadata)


def encode_jpegs(frames: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """``(bytes, offsets)`` of uint8 RGB frames (N, H, W, 3) as concatenated JPEG files."""
    blobs = []
    for frame in frames:
        ok, blob = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]),
                                [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("OpenCV could not encode a frame as JPEG")
        blobs.append(blob.reshape(-1))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    return np.concatenate(blobs), offsets


def decode_jpeg(blob: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) from the bytes of one JPEG file."""
    image = cv2.imdecode(np.ascontiguousarray(blob, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("a stored frame is not a valid JPEG: prepare the clip again")
    return np.ascontiguousarray(image[..., ::-1])


def write_manifest(root: Path, records: list[dict]) -> None:
    atomic_write_text(Path(root) / MANIFEST, "".join(json.dumps(r) + "\n" for r in records))


def read_manifest(root: Path) -> list[dict]:
    path = Path(root) / MANIFEST
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
