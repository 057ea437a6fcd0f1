"""The ``dispose`` command line: one program, one subcommand per job.

Each subcommand lives in a module of :mod:`dispose.commands` that exposes ``add_arguments(parser)``
and ``run(args) -> int``; its docstring's first line is the command's help.  Modules are imported
only when their command runs, so ``dispose --help`` stays fast and a missing optional extra only
affects the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import dispose.commands
from dispose.errors import UserError


def _command_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(dispose.commands.__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dispose", description="DisPose (ICLR 2025): animate a reference image with the motion of a driving "
        "video. 'dispose COMMAND --help' describes each command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _command_modules():
        module = importlib.import_module(f"dispose.commands.{name}")
        doc = (module.__doc__ or name).strip()
        command = sub.add_parser(name.replace("_", "-"), help=doc.splitlines()[0], description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (UserError, FileNotFoundError, PermissionError, ValueError) as error:
        print(f"dispose {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
