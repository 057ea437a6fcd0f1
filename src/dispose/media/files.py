"""Atomic file writing: write beside the target, then rename, so no half-written file is left."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dispose.errors import UserError


def check_writable_dir(path: Path) -> None:
    """Raise a clear error when the folder that should receive ``path`` is missing or read-only."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise UserError(f"output folder {folder} is not writable; choose another folder or fix its permissions")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    The temporary file keeps the target's suffix (encoders pick the container from it) and gets the
    permissions a plain ``open(path, "w")`` would (0666 minus the umask).  On any error the temporary
    file is removed and the target is left untouched.
    """
    path = Path(path)
    check_writable_dir(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600, and writers that replace the file themselves (safetensors) reset the mode:
        # give the result the permissions a plain open() would, just before it takes the target's name.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
