"""The ``dispose`` command line: one program, one subcommand per job.

Each subcommand lives in a module of :mod:`dispose.commands` that exposes ``add_arguments(parser)``
and ``run(args) -> int``; its docstring's first line is the command's help.  Modules are imported
only when their command runs, so ``dispose --help`` stays fast and a missing optional extra only
affects the command that needs it.

Errors are one line on standard error, never a traceback: a bad command line (argparse's message and a pointer
to ``--help``, without the usage block), a :class:`~dispose.errors.UserError`, a bad value, a missing or
unreadable file, and an operating-system error about a file the user chose (read-only disk, permissions, disk
full) exit with status 2; Ctrl-C (SIGINT) exits with status 130 and ``kill`` (SIGTERM) with 143, each after
one line saying which finished outputs were kept (outputs are written atomically, :mod:`dispose.media.files`,
so nothing unfinished is left: SIGTERM unwinds like Ctrl-C instead of ending the process on the spot).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import pkgutil
import re
import signal
import sys
import threading
from collections.abc import Iterator

import dispose.commands
from dispose.errors import UserError, error_line
from dispose.media.files import finished_outputs


class UsageError(UserError):
    """A bad command line (an unknown option, a value of the wrong type): one line naming the command."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{message} (see '{prog} --help')")
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (no usage block): the command and a pointer to its --help."""

    def error(self, message: str):
        raise UsageError(self.prog, message)


def _command_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(dispose.commands.__path__)
                  if not m.name.startswith("_"))


def _summary(doc: str) -> str:
    """The first sentence of a command's docstring (it may span several lines)."""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s(?=[A-Z-])", paragraph)[0]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dispose", description="DisPose (ICLR 2025): animate a reference image with the motion of a "
        "driving video. 'dispose COMMAND --help' describes each command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _command_modules():
        module = importlib.import_module(f"dispose.commands.{name}")
        doc = (module.__doc__ or name).strip()
        command = sub.add_parser(name.replace("_", "-"), help=_summary(doc), description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def _not_cpu_fp16_warning(record: logging.LogRecord) -> bool:
    return "cannot run with `cpu` device" not in record.getMessage()


def _quiet_libraries(progress: bool) -> None:
    """Library output a run does not need: diffusers' warning that float16 pipelines cannot run on the CPU
    (they do here; it is repeated for every component moved), and with ``--no-progress`` the libraries' own
    bars (transformers' "Loading weights", diffusers', huggingface_hub's)."""
    logging.getLogger("diffusers.pipelines.pipeline_utils").addFilter(_not_cpu_fp16_warning)
    if not progress:
        from diffusers.utils import logging as diffusers_logging
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        disable_progress_bars()


def _interrupted(signum: int, kept: list) -> str:
    what = "terminated" if signum == signal.SIGTERM else "interrupted"
    if not kept:
        return f"{what}; nothing was written"
    names = ", ".join(map(str, kept[-3:]))
    return f"{what}; kept the {len(kept)} finished output(s) ({'..., ' if len(kept) > 3 else ''}{names}), " \
           "nothing else was written"


@contextlib.contextmanager
def _signals_noted(noted: list) -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM raise KeyboardInterrupt and are noted: a library that turns the
    interruption into another error (a C extension's import failing with ImportError, say) cannot make it look
    like a real one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        noted.append(signum)
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    before = len(finished_outputs())
    prog = "dispose"
    out = None
    interrupted: list = []
    try:
        with _signals_noted(interrupted):
            args, unknown = build_parser().parse_known_args(argv)
            prog = f"dispose {args.command}"
            if unknown:  # named by the subcommand, not by `dispose`
                raise UsageError(prog, f"unrecognized arguments: {' '.join(unknown)}")
            _quiet_libraries(progress=not getattr(args, "no_progress", False))
            out = getattr(args, "out", None)
            return int(args._run(args) or 0)
    except BaseException as error:
        if interrupted or isinstance(error, KeyboardInterrupt):
            signum = interrupted[0] if interrupted else signal.SIGINT
            print(f"{prog}: {_interrupted(signum, finished_outputs()[before:])}", file=sys.stderr)
            return 128 + signum
        prog = getattr(error, "prog", prog)
        line = error_line(error, None if out is None else f"--out {out}")
        if line is None:  # a bug, or --help / a bad option (SystemExit): as it is
            raise
        print(f"{prog}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
