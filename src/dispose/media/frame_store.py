"""Per-frame arrays kept on disk instead of in memory: what lets a job's memory stay flat in video length.

A :class:`FrameStore` is an (N, ...) array of one dtype whose frames live in a file: an anonymous temporary
file (``tempfile.TemporaryFile``: removed by the operating system when closed or when the process dies,
so nothing is left behind) that frames are appended to, or a region of an existing file (a tensor of a
safetensors file, :func:`open_safetensors_tensor`).  Reads copy only the frames asked for; the file's
pages sit in the operating system's page cache, not in the process.  It indexes like a numpy array along
frames (``store[i]``, ``store[a:b]``, ``store[[i, j]]``), iterates frame by frame and converts with
``np.asarray(store)`` when a caller wants everything in memory.

:func:`write_safetensors` writes tensors, stores included, into a safetensors file a chunk of frames at a time
(the format: an 8-byte little-endian header length, a JSON header naming dtype, shape and byte offsets, then
the raw data, little-endian as on every platform torch runs on), so saving a long field never holds it whole
either.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import numpy as np
import torch

#: safetensors dtype names of the numpy dtypes stored here.
SAFETENSORS_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "U8": np.uint8,
                      "I64": np.int64, "I32": np.int32, "BOOL": np.bool_}
_NAMES = {np.dtype(value): key for key, value in SAFETENSORS_DTYPES.items()}
#: Bytes read or written per chunk when streaming.
CHUNK_BYTES = 32 << 20


def _numpy(frames) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        return frames.detach().cpu().numpy()
    return np.asarray(frames)


class FrameStore:
    """An (N, *frame_shape) array of ``dtype`` in a file (module docstring).

    ``FrameStore(frame_shape, dtype)`` starts empty in a temporary file; :meth:`append` adds frames.
    """

    def __init__(self, frame_shape, dtype, *, file: IO[bytes] | None = None, offset: int = 0, count: int = 0,
                 directory: str | Path | None = None) -> None:
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.dtype = np.dtype(dtype)
        self.frame_bytes = int(np.prod(self.frame_shape, dtype=np.int64)) * self.dtype.itemsize
        self.writable = file is None
        self._file = tempfile.TemporaryFile(dir=directory) if file is None else file  # noqa: SIM115 - owned
        self._offset, self._count = offset, count
        self._lock = threading.Lock()

    @classmethod
    def from_array(cls, array, *, directory: str | Path | None = None) -> FrameStore:
        """A store holding a copy of ``array`` (numpy or a CPU tensor), written a chunk at a time."""
        array = _numpy(array)
        store = cls(array.shape[1:], array.dtype, directory=directory)
        step = store._frames_per_chunk
        for start in range(0, len(array), step):
            store.append(array[start:start + step])
        return store

    # ------------------------------------------------------------------ what it holds
    @property
    def shape(self) -> tuple[int, ...]:
        return (self._count, *self.frame_shape)

    @property
    def _frames_per_chunk(self) -> int:
        """Frames in about :data:`CHUNK_BYTES`, at least one."""
        return max(1, CHUNK_BYTES // max(self.frame_bytes, 1))

    @property
    def ndim(self) -> int:
        return 1 + len(self.frame_shape)

    @property
    def nbytes(self) -> int:
        return self._count * self.frame_bytes

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"FrameStore(shape={self.shape}, dtype={self.dtype})"

    # ------------------------------------------------------------------ writing
    def append(self, frames) -> None:
        """Add (n, *frame_shape) frames of this store's dtype (numpy or tensor) at the end."""
        if not self.writable:
            raise ValueError("this store reads a region of an existing file; it cannot grow")
        array = _numpy(frames)
        if array.shape[1:] != self.frame_shape or array.dtype != self.dtype:
            raise ValueError(f"frames of {array.dtype} {array.shape[1:]} appended to a store of {self.dtype} "
                             f"{self.frame_shape}")
        with self._lock:
            self._file.seek(self._offset + self.nbytes)
            self._file.write(np.ascontiguousarray(array).data)
            self._count += len(array)

    # ------------------------------------------------------------------ reading
    def _read_run(self, start: int, stop: int, out: np.ndarray) -> None:
        with self._lock:
            self._file.seek(self._offset + start * self.frame_bytes)
            view = memoryview(out.reshape(-1).view(np.uint8))
            got = self._file.readinto(view)
        if got != len(view):
            raise OSError(f"frame store: read {got} of {len(view)} bytes for frames {start}..{stop}")

    def read(self, indices) -> np.ndarray:
        """Frames ``indices`` (a sequence of ints; negatives count from the end) as one (n, ...) array;
        consecutive frames are read in one call."""
        indices = [int(i) + self._count if int(i) < 0 else int(i) for i in indices]
        bad = [i for i in indices if not 0 <= i < self._count]
        if bad:
            raise IndexError(f"frame {bad[0]} outside a store of {self._count} frames")
        out = np.empty((len(indices), *self.frame_shape), self.dtype)
        position = 0
        while position < len(indices):
            end = position + 1
            while end < len(indices) and indices[end] == indices[end - 1] + 1:
                end += 1
            self._read_run(indices[position], indices[end - 1] + 1, out[position:end])
            position = end
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.read([key])[0]
        if isinstance(key, slice):
            return self.read(range(*key.indices(self._count)))
        if isinstance(key, tuple):
            raise TypeError("a frame store is indexed along frames only "
                            "(an int, a slice or a list of frames)")
        return self.read(_numpy(key).reshape(-1).tolist())

    def chunks(self, frames: int | None = None) -> Iterator[np.ndarray]:
        """The frames in order, ``frames`` at a time (default: about :data:`CHUNK_BYTES` per chunk)."""
        step = frames or self._frames_per_chunk
        for start in range(0, self._count, step):
            yield self.read(range(start, min(start + step, self._count)))

    def __iter__(self) -> Iterator[np.ndarray]:
        for chunk in self.chunks():
            yield from chunk

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self.read(range(self._count))
        return array if dtype is None else array.astype(dtype)

    def close(self) -> None:
        self._file.close()


def write_safetensors(path: str | Path, tensors: Mapping[str, object],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (numpy arrays, tensors or :class:`FrameStore`) as a safetensors file at ``path``,
    streaming stores a chunk at a time (the file reads back with ``safetensors.safe_open``)."""
    arrays = {name: value if isinstance(value, FrameStore) else _numpy(value)
              for name, value in tensors.items()}
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, value in arrays.items():
        if np.dtype(value.dtype) not in _NAMES:
            raise ValueError(f"{name}: dtype {value.dtype} has no safetensors name here")
        header[name] = {"dtype": _NAMES[np.dtype(value.dtype)], "shape": list(value.shape),
                        "data_offsets": [offset, offset + value.nbytes]}
        offset += value.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned, as the safetensors writer pads it
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for value in arrays.values():
            if isinstance(value, FrameStore):
                handle.writelines(np.ascontiguousarray(chunk).data for chunk in value.chunks())
            else:
                handle.write(np.ascontiguousarray(value).data)


def open_safetensors_tensor(path: str | Path, name: str) -> FrameStore | None:
    """Tensor ``name`` of a safetensors file as a read-only :class:`FrameStore` over its bytes (frames =
    its first dimension), or None when the file has no such tensor.  The file stays open while the store
    lives, so replacing the file (writing another one and renaming it into place, as every writer here
    does) does not change what the store reads."""
    handle = open(path, "rb", buffering=0)  # noqa: SIM115 - owned by the returned store
    try:
        size = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(size))
    except (struct.error, ValueError) as error:
        handle.close()
        raise ValueError(f"{path} is not a safetensors file ({error})") from None
    entry = header.get(name)
    if entry is None:
        handle.close()
        return None
    dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
    if dtype is None or not entry["shape"]:
        handle.close()
        raise ValueError(f"{path}: tensor {name} of dtype {entry['dtype']} and shape {entry['shape']} "
                         "cannot be read frame by frame")
    start, stop = entry["data_offsets"]
    length = os.fstat(handle.fileno()).st_size
    if length < 8 + size + stop:
        handle.close()
        raise ValueError(f"{path} is cut short: tensor {name} ends at byte {8 + size + stop} of {length}")
    store = FrameStore(entry["shape"][1:], dtype, file=handle, offset=8 + size + start,
                       count=entry["shape"][0])
    if store.nbytes != stop - start:
        handle.close()
        raise ValueError(f"{path}: tensor {name} declares {stop - start} bytes for shape {entry['shape']}")
    return store
