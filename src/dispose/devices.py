"""Where models run: ``--device auto`` is CUDA, else Apple's MPS, else the CPU; explicit names are checked."""

from __future__ import annotations

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
