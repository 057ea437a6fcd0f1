"""Typed values from users, checked where they enter: one rule per setting, for every front door.

A :class:`Rule` says what a setting holds (a whole number, a number, true/false, one of some words, a path),
its bounds and whether it may be left out.  :meth:`Rule.check` turns what a user typed into that type or
raises one :class:`~dispose.errors.UserError` line naming the source (an option, or a file and key), the value
and what is allowed.  The same rules serve

* command-line options (:func:`option_type`, an argparse ``type=``: the error names the option),
* job files and their command-line overrides (:data:`JOB_RULES`, used by the job settings),
* ``dispose train`` YAML files and ``--set`` (:func:`rule_for_annotation`: the rule comes from the config
  dataclass's annotation, so ``1e-3`` is a number and ``abc`` is not),
* and, for numbers read from files (pose files, saved guidance), :func:`finite`.

Numbers accept scientific notation (``1e-3``); NaN and infinity are refused everywhere; true/false settings
accept only booleans or the words ``true`` / ``false`` (a quoted ``"no"`` in a job file is an error, not a
truthy string).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispose.errors import UserError
from dispose.media.geometry import MAX_RESOLUTION, SIZE_STEP

_KIND_NAMES = {int: "a whole number", float: "a number", bool: "true or false", str: "text", Path: "a path"}


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Rule:
    """What one setting may hold: ``kind`` (int, float, bool, str or Path), inclusive bounds ``least`` /
    ``most``, ``choices`` (words), ``multiple`` (of this number), ``optional`` (None allowed)."""

    kind: type
    least: float | None = None
    most: float | None = None
    choices: tuple[str, ...] | None = None
    multiple: int | None = None
    optional: bool = False

    def allowed(self) -> str:
        """What is allowed, in words ("a whole number from 1 to 8")."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        text = _KIND_NAMES[self.kind] if self.multiple is None else f"a multiple of {self.multiple}"
        if self.least is not None and self.most is not None:
            text += f" from {self.least} to {self.most}"
        elif self.least is not None:
            text += f" of at least {self.least}"
        elif self.most is not None:
            text += f" of at most {self.most}"
        return text

    def check(self, value: Any, source: str) -> Any:
        """``value`` as this rule's type, or a UserError ``"SOURCE: VALUE is not allowed: expected ..."``."""
        if value is None:
            if self.optional:
                return None
            raise UserError(f"{source}: a value is needed: expected {self.allowed()}")
        problem = self.problem(value)
        if problem is not None:
            raise UserError(f"{source}: {problem}")
        return self._typed(value)

    def problem(self, value: Any, *, typed_text: bool = False) -> str | None:
        """What is wrong with ``value`` ("0 is not allowed: expected ..."), or None when it fits.
        ``typed_text``: the value is what the user typed on a command line (shown without quotes)."""
        typed = self._typed(value)
        if typed is not None and self._within(typed):
            return None
        hint = ""
        if typed is not None and self.multiple is not None and typed % self.multiple:
            low = max(typed // self.multiple * self.multiple, self.least or self.multiple)
            hint = f" (nearest: {low} or {low + self.multiple})"
        return f"{value if typed_text else _shown(value)} is not allowed: expected {self.allowed()}{hint}"

    def _typed(self, value: Any) -> Any:
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            word = value.strip().lower() if isinstance(value, str) else None
            return {"true": True, "false": False}.get(word)
        if isinstance(value, bool):  # True is an int to Python, never a number to a user
            return None
        if self.kind is int:
            if isinstance(value, int):
                return value
            if isinstance(value, float):  # a number field of a form: 576.0
                return int(value) if value.is_integer() else None
            if isinstance(value, str):
                try:
                    return int(value.strip().replace("_", ""))
                except ValueError:
                    return None
            return None
        if self.kind is float:
            if isinstance(value, (int, float)):
                number = float(value)
            elif isinstance(value, str):
                try:
                    number = float(value.strip())
                except ValueError:
                    return None
            else:
                return None
            return number if math.isfinite(number) else None
        if self.kind is Path:
            return Path(value).expanduser() if isinstance(value, (str, Path)) and str(value) else None
        return value if isinstance(value, str) else None

    def _within(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if self.kind in (int, float):
            if self.least is not None and value < self.least:
                return False
            if self.most is not None and value > self.most:
                return False
            if self.multiple is not None and value % self.multiple:
                return False
        return True


def option_type(rule: Rule):
    """An argparse ``type=`` for ``rule``: a bad value is argparse's one-line error naming the option."""

    def parse(text: str):
        problem = rule.problem(text, typed_text=True)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return rule.check(text, "value")

    parse.__name__ = _KIND_NAMES[rule.kind]  # argparse names the type in some messages
    return parse


def finite(value: float, source: str) -> float:
    """``value`` when it is a finite number, else a UserError naming ``source``."""
    return Rule(float).check(value, source)


def yaml_problem(error: Exception) -> str:
    """A YAML parser's error as one line: where in the file and what is wrong."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


def rule_for_annotation(annotation: str) -> Rule | None:
    """The rule of a dataclass field annotated ``int``, ``float | None``, ``bool``, ``str``, ``Path |
    None``... (annotations are text: ``from __future__ import annotations``); None for other types (nested
    sections)."""
    kinds = {"int": int, "float": float, "bool": bool, "str": str, "Path": Path}
    parts = [part.strip() for part in str(annotation).split("|")]
    optional = "None" in parts
    named = [kinds.get(part) for part in parts if part != "None"]
    if len(named) != 1 or named[0] is None:
        return None
    return Rule(named[0], optional=optional)


#: A seed torch's generators accept (non-negative, 63 bits: the ComfyUI nodes' range too).
_SEED = Rule(int, least=0, most=2**63 - 1)

#: Every animation setting a user can give (job files, their defaults, animate's options, the app, ComfyUI),
#: by job-settings field name.  Cross-field rules (overlap < tile) stay with the job settings.
JOB_RULES: Mapping[str, Rule] = {
    "ref": Rule(Path, optional=True), "driving": Rule(Path, optional=True), "out": Rule(Path, optional=True),
    "side_by_side": Rule(Path, optional=True), "guidance": Rule(Path, optional=True),
    "poses": Rule(Path, optional=True),
    "resolution": Rule(int, least=SIZE_STEP, most=MAX_RESOLUTION, multiple=SIZE_STEP),
    "num_frames": Rule(int, least=2), "frames_overlap": Rule(int, least=1),
    "num_inference_steps": Rule(int, least=1),
    "guidance_scale": Rule(float, least=0), "min_guidance_scale": Rule(float, least=0, optional=True),
    "noise_aug_strength": Rule(float, least=0),
    "sample_stride": Rule(int, least=1), "fps": Rule(int, least=1), "conditioning_fps": Rule(int, least=1),
    "motion_bucket_id": Rule(int, least=0, most=1023), "decode_chunk_size": Rule(int, least=1),
    "seed": _SEED, "max_frames": Rule(int, least=1, optional=True),
    "controlnet_scale": Rule(float, least=0), "controlnet_interval": Rule(int, least=1),
    "baseline": Rule(bool), "release_missing_points": Rule(bool), "match_release": Rule(bool),
    "strict": Rule(bool), "align": Rule(str, choices=("global", "bones", "none")),  # dispose.pose.alignment
    "base": Rule(str, optional=True),
}


def job_option(field: str):
    """The argparse ``type=`` of the command-line option that sets the job field ``field``."""
    return option_type(JOB_RULES[field])

