"""Where models run: ``--device auto`` is CUDA, else Apple's MPS, else the CPU; explicit names are checked.
Under torchrun / ``accelerate launch`` each process learns its share and its own device here."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from dispose.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for ``--device`` (auto, cpu, cuda, cuda:1, mps), or a UserError saying why not."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device name; use auto, cpu, cuda, cuda:N "
                        "or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: this torch build ({torch.__version__}) sees no CUDA GPU; "
                        "install a CUDA build of torch or use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: Apple's MPS backend is not available on this machine")
    return device


@contextlib.contextmanager
def on_device(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Modules constructed inside get their parameters created and initialised on ``device`` in ``dtype``
    (``"meta"``: nothing allocated); no host copy is made first."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def process_shard(device: str = "auto") -> tuple[int, int, str]:
    """``(index, count, device)`` of this process under torchrun / ``accelerate launch``, else
    ``(0, 1, device)``.  With several processes ``auto`` becomes the process's own device
    (``cuda:LOCAL_RANK``).  On the CPU accelerate sees the other processes only when asked for a CPU state
    (``PartialState(cpu=True)``); without it every process would think it is alone and do every job."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, device
    from accelerate import PartialState

    state = PartialState(cpu=resolve_device(device).type == "cpu")
    own = str(state.device) if device == "auto" else device
    return state.process_index, state.num_processes, own
