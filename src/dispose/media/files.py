"""Writing results so that a failure leaves nothing half-written: files and whole folders appear complete or
not at all.

* :func:`atomic_path` (one file): write to a temporary name beside the target, rename onto it when done;
  :func:`atomic_paths` does so for several files that form one result (a video, its side-by-side and its
  sidecar): all are written under temporary names, then renamed together (Ctrl-C waits for the renames).
* :func:`atomic_folder` (a result folder): build the folder under a temporary sibling name
  (``.NAME.partial-PID``) and rename it into place only when complete, replacing an earlier result then
  (so a rerun with fewer frames leaves no stale files, and Ctrl-C or an error leaves the earlier result, or
  nothing).  A lock file beside the target (``.NAME.lock``, holding the writer's pid and host) refuses a
  second concurrent writer; a lock left by a process that no longer runs is taken over.  A finished folder
  holds a manifest (``.dispose-output``) listing its files: an existing folder is replaced only when it is
  empty or holds nothing but what its manifest lists, so a mistyped ``--out`` never deletes the user's files.
  The manifest also names the command that wrote the folder: a folder written by another command (a
  ``dispose guidance`` result under ``dispose pose --out``) is refused, not replaced.
* :func:`check_apart` refuses, before anything is computed, an output that is one of the command's inputs or
  another of its outputs (through a symlink or a hard link too), or a folder holding one of its inputs.
* :func:`ensure_folder` creates an output folder (and its parents), turning a read-only disk or a permission
  problem into one line naming the folder.

Outputs committed in this process are recorded (:func:`finished_outputs`) so that the command line can say
what was kept when the user interrupts a run.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from dispose.errors import UserError, os_error_fix

#: Name of the manifest inside every folder :func:`atomic_folder` writes.
MANIFEST = ".dispose-output"

_finished: list[Path] = []  # targets committed by this process, in order (files inside a folder: not listed)
_building: set[Path] = set()  # temporary folders and files of a unit being built by this process


def finished_outputs() -> list[Path]:
    """Every file and folder this process has written completely so far, in order."""
    return list(_finished)


def check_writable_dir(path: Path) -> None:
    """Raise a clear error when the folder that should receive the file ``path`` is missing or read-only, or
    ``path`` itself is a folder (check this before computing anything)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a file name "
                        f"(e.g. {path / ('result' + (path.suffix or '.json'))})")
    if not folder.is_dir():
        raise UserError(f"output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise UserError(f"output folder {folder} is not writable; "
                        "choose another folder or fix its permissions")


def _identities(path: Path) -> tuple:
    """The keys under which ``path`` is the same file as another: its real path, and its device and inode
    when it exists (a hard link)."""
    real = ("path", os.path.realpath(path))
    try:
        status = os.stat(path)
    except OSError:
        return (real,)
    return real, ("inode", status.st_dev, status.st_ino)


def _inside(path: Path, folder: Path) -> bool:
    return folder.is_dir() and Path(os.path.realpath(folder)) in Path(os.path.realpath(path)).parents


def check_apart(inputs: Iterable[tuple[str, str | Path | None]],
                outputs: Iterable[tuple[str, str | Path | None]], *, folders: bool = False) -> None:
    """Refuse (UserError naming both) an output that resolves to one of the ``inputs`` or to another output,
    symlinks and hard links included (same real path, or same device and inode), and with ``folders`` (the
    outputs are folders replaced as a whole, :func:`atomic_folder`) an existing output folder that holds an
    input.  Each item is ``(option, path)``; None is skipped.  Each path is resolved once, so a job file of
    many jobs sharing inputs costs one look-up per path."""
    inputs = [(label, Path(path)) for label, path in inputs if path is not None]
    outputs = [(label, Path(path)) for label, path in outputs if path is not None]
    seen_inputs = {key: item for item in reversed(inputs) for key in _identities(item[1])}
    seen_outputs: dict[tuple, tuple[str, Path]] = {}
    for label, out in outputs:
        keys = _identities(out)
        source = next((seen_inputs[key] for key in keys if key in seen_inputs), None)
        if source is not None:
            raise UserError(f"{label} {out} is the input {source[0]} {source[1]}; writing it would replace "
                            "that input: choose another output name")
        if folders:
            for in_label, path in inputs:
                if _inside(path, out):
                    raise UserError(f"{label} {out} holds the input {in_label} {path}, and the folder is "
                                    "replaced as a whole: choose another output folder or move the input out "
                                    "of it")
        other = next((seen_outputs[key] for key in keys if key in seen_outputs), None)
        if other is not None:
            raise UserError(f"{label} {out} is also {other[0]} {other[1]}; one output would replace the "
                            "other: give each its own name")
        seen_outputs.update({key: (label, out) for key in keys if key not in seen_outputs})


def ensure_folder(path: str | Path, option: str = "--out", *, named: Path | None = None) -> Path:
    """Create the folder ``path`` and its parents if missing; a UserError naming ``option`` and the folder
    when that is impossible (a read-only disk, no permission, a file in the way).  ``named`` is the option's
    value when ``path`` is only its parent."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{option} {named or path}: {path} exists and is not a folder; "
                        "choose another name") from None
    except OSError as error:
        fix = os_error_fix(error)
        if fix is None:
            raise
        raise UserError(f"{option} {named or path}: cannot create the folder {error.filename or path} "
                        f"({fix})") from None
    return path


def check_creatable(path: str | Path, option: str = "--out") -> None:
    """Refuse (UserError naming ``option``) an output file ``path`` that is a folder, or whose folder could
    not be created or written: the nearest existing ancestor must be a writable folder.  Creates nothing, so a
    run that fails later leaves no empty folder (create it with :func:`ensure_folder` just before writing)."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{option} {path}: {folder} exists and is not a folder; choose another name")
    if not os.access(folder, os.W_OK):
        raise UserError(f"{option} {path}: cannot write in {folder} (permission denied or read-only); choose "
                        "another folder")


@contextlib.contextmanager
def folders_for(paths: Iterable[tuple[str, str | Path]]) -> Iterator[None]:
    """Create the folders of the output files ``(option, path)`` (see :func:`ensure_folder`) for the duration
    of a write; when the block fails, the folders created here are removed again (those still empty), so a
    failed run leaves no empty folder behind."""
    created: list[Path] = []
    for option, path in paths:
        folder = Path(os.path.abspath(path)).parent
        missing = [folder, *folder.parents]
        missing = missing[:next(i for i, item in enumerate(missing) if item.exists())]
        ensure_folder(folder, option, named=Path(path))
        created += missing
    try:
        yield
    except BaseException:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _inside_building(path: Path) -> bool:
    return path in _building or any(folder in path.parents for folder in _building)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, cache: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    The temporary file keeps the target's suffix (encoders pick the container from it) and gets the
    permissions a plain ``open(path, "w")`` would (0666 minus the umask).  On any error the temporary
    file is removed and the target is left untouched.  ``cache=True`` marks a cache file, which is not
    listed among the outputs a run kept (:func:`finished_outputs`).
    """
    with atomic_paths([path], cache=cache) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(paths: Iterable[str | Path], *, cache: bool = False) -> Iterator[list[Path]]:
    """Yield a temporary path beside each of ``paths`` (see :func:`atomic_path`); when the block ends without
    an error all of them are renamed onto their targets together, else all are removed and no target
    changes."""
    paths = [Path(path) for path in paths]
    for path in paths:
        check_writable_dir(path)
    tmps: list[Path] = []
    try:
        for path in paths:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}",
                                       dir=path.parent)
            os.close(fd)
            tmps.append(Path(tmp))
        if len(paths) > 1:
            _building.update(tmp.absolute() for tmp in tmps)  # parts of a unit: not outputs of their own
        yield tmps
        with _interrupts_deferred():
            for tmp, path in zip(tmps, paths):
                # mkstemp makes 0600, and writers that replace the file themselves (safetensors) reset the
                # mode: give the result the permissions a plain open() would, just before it takes its name.
                os.chmod(tmp, 0o666 & ~_umask())
                os.replace(tmp, path)
        _finished.extend(path for path in paths if not cache and not _inside_building(path.absolute()))
    finally:
        for tmp in tmps:
            _building.discard(tmp.absolute())
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str, *, cache: bool = False) -> None:
    with atomic_path(path, cache=cache) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_folder(path: str | Path, option: str = "--out", *, command: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` as a whole.

    ``option`` names the folder in errors (``"--out"``); ``command`` (``"dispose pose"``) is recorded in the
    manifest, and an existing result written by another command is refused.  Checks run on entry, before the
    caller computes anything: the parent is created (:func:`ensure_folder`), the lock is taken, and an
    existing ``path`` must be a folder that is empty or a previous result (see module docstring).  On any
    error or interruption the temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(os.path.abspath(path))
    if path.is_symlink():
        path = path.resolve()
    ensure_folder(path.parent, option, named=path)
    with _lock(path, option):
        _recover(path)
        _check_replaceable(path, option, command)
        tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")  # unique: we hold the lock
        try:
            tmp.mkdir()
            _building.add(tmp)
            yield tmp
            files = sorted(str(item.relative_to(tmp)) for item in tmp.rglob("*") if not item.is_dir())
            manifest = {"format": "dispose-output/1", "files": files}
            if command is not None:
                manifest["command"] = command
            (tmp / MANIFEST).write_text(json.dumps(manifest))
            _check_replaceable(path, option, command)
            _swap_into_place(tmp, path)
            _finished.append(path)
        finally:
            _building.discard(tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def _manifest(folder: Path) -> tuple[set[str], str | None] | None:
    """The files listed in ``folder``'s manifest (itself included) and the command that wrote it."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
        return set(data["files"]) | {MANIFEST}, data.get("command")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _check_replaceable(path: Path, option: str, command: str | None = None) -> None:
    if not path.exists():
        return
    if not path.is_dir():
        raise UserError(f"{option} {path} exists and is not a folder; choose another name")
    present = [str(item.relative_to(path)) for item in path.rglob("*") if not item.is_dir()]
    if not present:
        return
    manifest = _manifest(path)
    if manifest is None:
        raise UserError(f"{option} {path} already holds files that dispose did not write "
                        f"(e.g. {present[0]}); choose a new folder, or empty or delete this one")
    listed, writer = manifest
    if command is not None and writer is not None and writer != command:
        raise UserError(f"{option} {path} holds a result of `{writer}`, not of `{command}`; choose another "
                        "folder (or delete that one)")
    foreign = sorted(set(present) - listed)
    if foreign:
        raise UserError(f"{option} {path} holds {foreign[0]}, which the earlier result there did not write; "
                        "move it away or choose another folder (the folder is replaced as a whole)")


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``, moving an existing ``path`` aside first; Ctrl-C waits until both renames
    are done (an interruption between them is recovered by the next writer, see :func:`_recover`)."""
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    with _interrupts_deferred():
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _recover(path: Path) -> None:
    """Clean up after a writer of ``path`` that was killed: restore a result it had moved aside but not yet
    replaced, and remove its partial folders (we hold the lock, so no live writer owns them)."""
    pattern = glob.escape(str(path.parent / f".{path.name}."))
    for old in sorted(glob.glob(pattern + "old-*")):
        if not path.exists():
            os.rename(old, path)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for partial in glob.glob(pattern + "partial-*"):
        shutil.rmtree(partial, ignore_errors=True)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) and SIGTERM for the duration, then deliver them to the usual handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, _: received.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in received[:1]:
            signal.raise_signal(signum)


def _lock_owner(lock: Path) -> tuple[int, str] | None:
    """``(pid, host)`` written in ``lock``, or None when it is unreadable (being written, or damaged)."""
    try:
        pid, host = lock.read_text().split(maxsplit=1)
        return int(pid), host.strip()
    except (OSError, ValueError):
        return None


def _alive(pid: int, host: str) -> bool:
    if host != socket.gethostname() or os.name == "nt":  # another machine's (or Windows') process: assume so
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _take_lock(lock: Path, path: Path, option: str) -> None:
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner is not None and not _alive(*owner):
                lock.unlink(missing_ok=True)  # left by a process that no longer runs
                continue
            pid = f" (pid {owner[0]} on {owner[1]})" if owner else ""
            raise UserError(f"{option} {path} is being written by another dispose run{pid}; wait for it to "
                            f"finish or choose another folder (if no such run is active, delete "
                            f"{lock})") from None
        except OSError as error:
            if error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            raise UserError(f"{option} {path}: cannot write in {path.parent} "
                            f"({os_error_fix(error)})") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        return
    raise UserError(f"{option} {path}: could not take the lock {lock}; delete it if no dispose run is active")


@contextlib.contextmanager
def _lock(path: Path, option: str) -> Iterator[None]:
    lock = path.with_name(f".{path.name}.lock")
    taken = False
    try:
        with _interrupts_deferred():  # Ctrl-C while taking the lock must not leave it behind
            _take_lock(lock, path, option)
            taken = True
        yield
    finally:
        if taken:
            lock.unlink(missing_ok=True)
