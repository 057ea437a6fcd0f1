"""Subcommands of the ``dispose`` program (see :mod:`dispose.cli`)."""
