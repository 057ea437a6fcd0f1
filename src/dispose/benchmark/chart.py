"""Bar charts drawn with Pillow (a dependency; matplotlib is not), written atomically as PNG.

One chart = groups of bars (e.g. the stages of a run), one bar per series in each group (e.g. base and
base + DisPose), a value printed at the end of each bar; bars are horizontal so long labels fit.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from dispose.media.files import atomic_path

COLOURS = ((70, 110, 180), (220, 120, 40), (90, 160, 90), (170, 80, 160))
ROW, BAR, PAD, LABEL, WIDTH = 18, 14, 10, 230, 900


def bar_chart(
    path: str | Path, title: str, groups: list[tuple[str, dict[str, float | None]]], unit: str
) -> None:
    """Write ``groups`` ``[(label, {series: value or None})]`` as a horizontal bar chart PNG at ``path``."""
    font = ImageFont.load_default()
    series = list(dict.fromkeys(name for _, values in groups for name in values))
    known = [v for _, values in groups for v in values.values() if v is not None]
    top = max(known, default=0.0) or 1.0
    height = PAD * 4 + ROW * (2 + len(series)) + sum(ROW * len(series) + PAD for _ in groups)
    image = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((PAD, PAD), title, fill="black", font=font)
    y = PAD + ROW
    for index, name in enumerate(series):  # legend
        draw.rectangle((PAD, y + 2, PAD + BAR, y + 2 + BAR - 4), fill=COLOURS[index % len(COLOURS)])
        draw.text((PAD + BAR + 6, y), name, fill="black", font=font)
        y += ROW
    y += PAD
    span = WIDTH - LABEL - PAD * 2 - 90
    for label, values in groups:
        draw.text((PAD, y), label, fill="black", font=font)
        for index, name in enumerate(series):
            value = values.get(name)
            if value is not None:
                length = max(1, round(span * value / top))
                draw.rectangle((LABEL, y, LABEL + length, y + BAR - 2), fill=COLOURS[index % len(COLOURS)])
                draw.text((LABEL + length + 4, y), f"{value:.4g} {unit}", fill="black", font=font)
            else:
                draw.text((LABEL, y), "n/a", fill="grey", font=font)
            y += ROW
        y += PAD
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
