"""Print the parameter counts of a base model's full-size networks and its DisPose ControlNet (built empty: no
weights needed, no memory).

--base mimicmotion (default): the DisPose hybrid ControlNet (what DisPose.pth holds and what DisPose trains),
MimicMotion's UNet and PoseNet (MimicMotion_1-1.pth), for SVD-xt-1.1's UNet config or the one given with
--unet-config.  --base musepose: MusePose's four networks and the SD1.5 hybrid ControlNet.  The paper's
Table 7 "MB" are these parameter counts / 2^20 (the Mi column).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dispose.bases import BASES, DEFAULT_BASE

    parser.add_argument("--base", choices=sorted(BASES), default=DEFAULT_BASE,
                        help=f"base model ({DEFAULT_BASE})")
    parser.add_argument("--unet-config", type=Path, metavar="PATH",
                        help="the base's UNet config folder or config.json (default: built in)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _row(label: str, tensors: int, params: int, note: str = "") -> str:
    return (f"  {label:<28} {tensors:>5} tensors {params:>15,} params {params / 2**20:>10.2f} Mi "
            f"{params * 4 / 1e9:>6.2f} GB fp32  {note}").rstrip()


def run(args: argparse.Namespace) -> int:
    from dispose.bases import get_base

    sections = get_base(args.base).parameter_counts(args.unet_config)
    if args.json:
        print(json.dumps({title: {label: {"tensors": tensors, "parameters": params, "note": note}
                                  for label, tensors, params, note in rows}
                          for title, rows in sections}, indent=2))
        return 0
    for title, rows in sections:
        print(f"{title.rstrip(':')}:")
        for row in rows:
            print(_row(*row))
    return 0
