"""Serve a local web page for previews and animations (needs the `app` extra: pip install -e ".[app]").

The page takes a reference image and a driving video (uploaded, or the examples in DISPOSE_SHARED_DATA), or a
saved guidance folder.  With no weights it previews the pose alignment and the guidance (skeleton | F_s | F_d
per frame) and lists the weights an animation would still need; with them it animates, with progress, a
Cancel button, and the result, side-by-side video and JSON sidecar to download.  Models load once and stay
loaded; one job runs at a time.  It binds to 127.0.0.1 (only this machine) unless --host says otherwise; no
share links, no analytics, nothing fetched from the internet.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes it to the "
                        "network)")
    parser.add_argument("--port", type=int, default=7860, help="port (7860)")
    parser.add_argument("--weights", type=Path, help="default weights folder (pretrained_weights/ layout)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--out", type=Path,
                        help="folder for the animations (default: a new folder under the system's temp dir)")
    parser.add_argument("--examples", type=Path,
                        help="folder of example images and videos (default: DISPOSE_SHARED_DATA when set)")


def run(args: argparse.Namespace) -> int:
    from dispose.errors import UserError

    try:
        from dispose.app.ui import launch
    except ImportError as error:
        raise UserError(f"dispose app needs the `app` extra ({error.name} is not installed): "
                        'pip install -e ".[app]"') from None
    from dispose.app.state import AppState
    from dispose.devices import resolve_device
    from dispose.media.files import ensure_folder

    resolve_device(args.device)  # a bad --device fails here, not on the first job
    examples = args.examples or os.environ.get("DISPOSE_SHARED_DATA")
    if args.examples is not None and not args.examples.is_dir():
        raise UserError(f"--examples {args.examples} is not a folder")
    out = ensure_folder(args.out) if args.out is not None else Path(tempfile.mkdtemp(prefix="dispose-app-"))
    state = AppState(weights=args.weights, device=args.device, output_dir=out, examples_dir=examples)
    print(f"dispose app: http://{args.host}:{args.port}/ (animations go to {out}; Ctrl-C stops)")
    launch(state, host=args.host, port=args.port, extra_paths=[examples] if examples else [])
    return 0
