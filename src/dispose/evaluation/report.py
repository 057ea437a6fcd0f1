"""The evaluation report: JSON (per-video + aggregate values, settings, weight hashes) and tables.

JSON conventions: an infinite value (PSNR of identical frames) is written as the string ``"inf"``
(JSON has no infinity); a metric that could not be computed is absent from ``aggregate`` and
listed in ``skipped`` with the reason -- it is never given a placeholder number.

The printed tables follow the paper: Table 1 (VBench columns x100, FID-FVD, FVD, CD-FVD) and
Table 6 (SSIM, PSNR, LPIPS, L1), plus the columns the paper does not print (aesthetic quality, which
its text lists, DisCo's 3D-ResNet FID-VID, the DisCo-scale L1 and the DIS-flow dynamic degree).
Both L1 columns are printed in one format, the paper's: scientific notation with three significant
digits (``2.46E-05``), whatever their size; other values get 3 decimals below 1, 2 above, and
scientific notation below 0.01.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dispose.media.files import atomic_write_text

TABLE1 = (("temporal_flickering", "Temporal Flickering", 100),
          ("subject_consistency", "Subject Consistency", 100),
          ("background_consistency", "Background Consistency", 100),
          ("motion_smoothness", "Motion Smoothness", 100),
          ("dynamic_degree", "Dynamic Degree", 100), ("imaging_quality", "Imaging Quality", 100),
          ("fid_vid", "FID-FVD", 1), ("fvd", "FVD", 1), ("cd_fvd", "CD-FVD", 1))
TABLE6 = (("ssim", "SSIM", 1), ("psnr", "PSNR", 1), ("lpips", "LPIPS", 1), ("l1", "L1", 1))
EXTRA = (("aesthetic_quality", "Aesthetic Quality", 100), ("fid_vid_r3d", "FID-VID (3D ResNet-50, DisCo)", 1),
         ("l1_disco", "L1 (DisCo scale)", 1), ("dynamic_degree_dis", "Dynamic Degree (DIS flow)", 100))


def json_safe(value: Any) -> Any:
    """Replace non-finite floats by strings (``"inf"``, ``"-inf"``, ``"nan"``), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_report(report: dict, path: str | Path) -> None:
    atomic_write_text(Path(path), json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")


#: columns printed in the paper's L1 format
SCIENTIFIC = ("l1", "l1_disco")


def _cell(report: dict, key: str, scale: float) -> str:
    if key not in report["aggregate"]:
        return "skipped" if key in report["skipped"] else "-"
    value = report["aggregate"][key] * scale
    if math.isinf(value):
        return "inf"
    if key in SCIENTIFIC:
        return f"{value:.2E}"
    if value != 0 and abs(value) < 1e-2:
        return f"{value:.3e}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def _table(report: dict, columns: tuple, method: str) -> str:
    heads = ["Method", *(title for _, title, _ in columns)]
    row = [method, *(_cell(report, key, scale) for key, _, scale in columns)]
    widths = [max(len(h), len(c)) for h, c in zip(heads, row, strict=True)]
    line = " | ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))
    return "\n".join([line, "-" * len(line),
                      " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))])


def format_tables(report: dict, method: str) -> str:
    """Plain-text tables laid out like the paper's Table 1 and Table 6, then skipped reasons."""
    parts = ["Table 1 layout (VBench x100):", _table(report, TABLE1, method), "",
             "Table 6 layout (image metrics):", _table(report, TABLE6, method), "",
             "Other:", _table(report, EXTRA, method)]
    if report["skipped"]:
        parts += ["", "Skipped:"] + [f"  {key}: {reason}" for key, reason in report["skipped"].items()]
    return "\n".join(parts)
