"""sha256 content hashes of weight and input files for sidecars and reports, computed once per file version.

Hashing a multi-GB checkpoint reads all of it (seconds per file), so results are cached in a JSON file keyed
by the file's resolved path, size and modification time (ns): a file is read again only when it changes.
The cache lives in ``$DISPOSE_CACHE_DIR``, else ``$XDG_CACHE_HOME/dispose``, else ``~/.cache/dispose``
(``sha256.json``).  A cache that cannot be read or written is ignored: the hash is then computed every time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

_BLOCK = 1 << 20
#: Files at least this large show a progress bar while they are hashed (only the first time).
_SHOW_PROGRESS = 256 << 20


def cache_file() -> Path:
    """Where the hash cache is kept (see module docstring)."""
    folder = os.environ.get("DISPOSE_CACHE_DIR")
    if folder is None:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dispose"
    return Path(folder) / "sha256.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict) -> None:
    from dispose.media.files import atomic_write_text

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=0, sort_keys=True), cache=True)
    except OSError:
        pass  # a read-only home: hashes are recomputed next time


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, from the cache if the file has not changed since it was hashed."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    store = cache_file()
    cache = _read_cache(store)
    if key in cache:
        return cache[key]
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    with path.open("rb") as handle, tqdm(total=stat.st_size, unit="B", unit_scale=True, leave=False,
                                         desc=f"sha256 {path.name} (once)",
                                         disable=stat.st_size < _SHOW_PROGRESS) as bar:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
            bar.update(len(block))
    cache = {k: v for k, v in _read_cache(store).items() if not k.startswith(f"{path}|")}
    cache[key] = digest.hexdigest()
    _write_cache(store, cache)
    return cache[key]


def fingerprint(path: str | Path, suffixes: Iterable[str] | None = None) -> dict:
    """``{"size", "sha256"}`` of a file, or ``{relative path: {"size", "sha256"}}`` for the files of a folder
    (only those ending in one of ``suffixes`` when given)."""
    path = Path(path)
    if path.is_file():
        return {"size": path.stat().st_size, "sha256": file_sha256(path)}
    endings = tuple(suffixes) if suffixes is not None else None
    files = sorted(p for p in path.rglob("*")
                   if p.is_file() and (endings is None or p.name.endswith(endings)))
    return {str(p.relative_to(path)): {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in files}
