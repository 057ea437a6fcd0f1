"""Convert DisPose.pth / MimicMotion_1-1.pth (or another base's checkpoints, --base) to .safetensors once
(faster, safer loading), verified.

Each file is read with ``torch.load(weights_only=True)``, written next to it (or to --out) with the same
tensor names and read back before it takes its name: every tensor must be equal and the file must load
strictly into its network (DisPose.pth: the hybrid ControlNet; MimicMotion_1-1.pth: UNet + PoseNet, whose
config comes from --unet-config, by default SVD-xt-1.1's).  A failure or Ctrl-C leaves no output file.
Pass the new file with --dispose-ckpt / --mimicmotion.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dispose.bases import BASES, DEFAULT_BASE

    parser.add_argument("--base", choices=sorted(BASES), default=DEFAULT_BASE,
                        help=f"the base model the checkpoints belong to ({DEFAULT_BASE})")
    parser.add_argument("checkpoints", nargs="+", type=Path, metavar="FILE.pth",
                        help="DisPose.pth and/or MimicMotion_1-1.pth")
    parser.add_argument("--out", type=Path, help="output file (one input only; default: FILE.safetensors)")
    parser.add_argument("--unet-config", type=Path, metavar="PATH",
                        help="SVD folder or UNet config.json the checkpoints belong to (default: SVD-xt-1.1)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _kind(state: dict, path: Path, base) -> str:
    """Which of the base's checkpoint files ``state`` is (by a key prefix only that file has)."""
    from dispose.errors import UserError

    for kind, marker in base.checkpoint_kinds.items():
        if any(key.startswith(marker) for key in state):
            return kind
    from dispose.pipelines.weights import COMPONENTS

    names = " nor ".join(COMPONENTS[kind].layout[0] for kind in base.checkpoint_kinds)
    markers = " or ".join(f"{marker}*" for marker in base.checkpoint_kinds.values())
    raise UserError(f"{path} is neither {names} (no {markers} entries); check --base ({base.name})")


def _unshared(state: dict) -> dict:
    """Contiguous tensors, none sharing storage (safetensors refuses shared memory)."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        tensor = tensor.contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        out[key] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return out


def _verify(kind: str, source: dict, written_file: Path, out: Path, base, config: Path | None) -> None:
    """Check ``written_file`` (the temporary file that becomes ``out``) against ``source``, then load it
    strictly into its network (``base.verify_checkpoint``)."""
    import torch

    from dispose.bases.mimicmotion.weights import read_checkpoint
    from dispose.errors import UserError

    written = read_checkpoint(written_file, kind)
    if written.keys() != source.keys():
        raise UserError(f"{out}: the written tensor names differ from the source; the disk may be full")
    for key, tensor in source.items():
        if not torch.equal(written[key], tensor):
            raise UserError(f"{out}: tensor {key} differs from the source; the disk may be faulty")
    del written
    base.verify_checkpoint(kind, written_file, config)


def run(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from dispose.bases import get_base
    from dispose.bases.mimicmotion.weights import read_checkpoint
    from dispose.errors import UserError
    from dispose.media.files import atomic_path, check_apart, check_writable_dir

    if args.out is not None and len(args.checkpoints) != 1:
        raise UserError("--out needs exactly one input checkpoint")
    jobs = []
    for path in args.checkpoints:
        if not path.is_file():
            raise UserError(f"checkpoint {path} does not exist")
        jobs.append((path, args.out or path.with_suffix(".safetensors")))
    check_apart([*(("checkpoint", source) for source in args.checkpoints),
                 ("--unet-config", args.unet_config)],
                [("--out" if args.out else "output", out) for _, out in jobs])
    for _, out in jobs:
        if out.exists() and not args.force:
            raise UserError(f"{out} exists; pass --force to overwrite it")
        check_writable_dir(out)
    base = get_base(args.base)

    with tqdm(total=3 * len(jobs), desc="convert", unit="step", disable=args.no_progress) as bar:
        for path, out in jobs:
            bar.set_postfix_str(f"reading {path.name}")
            state = read_checkpoint(path, "")
            kind = _kind(state, path, base)
            bar.update()
            bar.set_postfix_str(f"writing {out.name}")
            with atomic_path(out) as tmp:
                save_file(_unshared(state), str(tmp), metadata={"format": "pt", "source": path.name})
                bar.update()
                bar.set_postfix_str(f"verifying {out.name}")
                try:
                    _verify(kind, state, tmp, out, base, args.unet_config)
                except (UserError, ValueError) as error:  # name the input, not the temporary file that goes
                    raise UserError(str(error).replace(str(tmp), f"{path} (converted)")) from None
            bar.update()
            size = out.stat().st_size
            tqdm.write(f"{out}: {len(state)} tensors, {size / 2**30:.2f} GiB, verified ({kind})")
            del state
    return 0
