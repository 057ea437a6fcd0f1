"""Plain-text tables and the JSON report of a benchmark, both written atomically beside the chart."""

from __future__ import annotations

import json
import math
from pathlib import Path

from dispose.evaluation.report import json_safe
from dispose.media.files import atomic_write_text


def cell(value, digits: int = 3) -> str:
    """A table cell: n/a for None, 3 significant decimals, scientific below 0.01."""
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and abs(value) < 1e-2:
        return f"{value:.2E}"
    return f"{value:.{digits}f}"


def table(headers: list[str], rows: list[list]) -> str:
    """Columns padded to their widest cell, a rule under the header."""
    text = [[str(h) for h in headers]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in text) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in text]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def write_outputs(folder: Path, name: str, report: dict, text: str) -> list[Path]:
    """``folder/NAME.json`` and ``folder/NAME.txt`` (the printed tables), each written atomically."""
    json_path, text_path = folder / f"{name}.json", folder / f"{name}.txt"
    atomic_write_text(json_path, json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    atomic_write_text(text_path, text + "\n")
    return [json_path, text_path]
