"""Errors that the command line reports as one clear line, without a traceback."""

from __future__ import annotations

import errno

#: What to do about each operating-system error the command line reports as one line (input or output files).
_OS_ERROR_FIXES = {
    errno.EROFS: "the file system is read-only; write to a folder on a writable disk",
    errno.EACCES: "permission denied; fix the permissions or use another file or folder",
    errno.EPERM: "operation not permitted; fix the permissions or use another file or folder",
    errno.ENOSPC: "no space left on the disk; free some space or write to another disk",
    getattr(errno, "EDQUOT", errno.ENOSPC): "disk quota exceeded; free some space or write to another disk",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder; give a file name",
    errno.EEXIST: "it already exists",
    errno.ENAMETOOLONG: "the name is too long; use a shorter path",
}


class UserError(Exception):
    """A problem with the user's input (a file, an option, the weights): the message says what to fix."""


def os_error_fix(error: OSError) -> str | None:
    """What went wrong and what to do, for the operating-system errors a user can fix (see
    :func:`os_error_line`)."""
    return _OS_ERROR_FIXES.get(error.errno)


def os_error_line(error: OSError, where: str | None = None) -> str | None:
    """One line naming the file of ``error`` (else ``where``: the output the command was writing) and the fix,
    or ``None`` for errors that are not about a file the user chose (a bug or a broken machine: those keep
    their traceback)."""
    if error.errno is None:  # raised by our own code with a message (FileNotFoundError("... does not exist"))
        return str(error)
    fix = os_error_fix(error)
    if fix is None:
        return None
    names = [str(name) for name in (error.filename, error.filename2) if name is not None]
    return f"{' -> '.join(names) or where or 'a file'}: {fix}"


def error_line(error: BaseException, where: str | None = None) -> str | None:
    """The one line the command line (and the app) shows for an error the user can fix: a UserError's or
    ValueError's message (whitespace folded onto one line), a file problem's :func:`os_error_line` (``where``
    names the output when the error names no file); None for anything else (a bug)."""
    if isinstance(error, (UserError, ValueError)):
        return " ".join(str(error).split())
    return os_error_line(error, where) if isinstance(error, OSError) else None
