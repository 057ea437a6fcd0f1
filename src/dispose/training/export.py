"""Export a trained hybrid ControlNet as ``DisPose.pth`` + ``DisPose.safetensors`` (the release's key layout).

The file holds the ControlNet's ``state_dict()`` and nothing else, key for key the release's
``ControlNetSVDModel`` (705 float32 tensors for SVD-xt), so ``dispose animate --dispose-ckpt DIR/DisPose.pth``
(or the ``.safetensors``, preferred by ``--weights``) loads it strictly through
:func:`dispose.bases.mimicmotion.weights.load_controlnet`.  With EMA, the EMA weights are exported.  Both files are
written atomically (a failure leaves the previous export in place).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dispose.media.files import atomic_path

CHECKPOINT_NAME = "DisPose"


def controlnet_state(controlnet: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous float32 CPU copies of every tensor of ``controlnet`` (no shared storage, as safetensors needs)."""
    return {key: value.detach().to("cpu", torch.float32).contiguous().clone()
            for key, value in controlnet.state_dict().items()}


def export_controlnet(controlnet: nn.Module, folder: str | Path, *, metadata: dict[str, str] | None = None,
                      name: str = CHECKPOINT_NAME) -> tuple[Path, Path]:
    """Write ``folder/NAME.pth`` and ``folder/NAME.safetensors`` (``DisPose`` by default); returns their paths."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = controlnet_state(controlnet)
    pth, safetensors = folder / f"{name}.pth", folder / f"{name}.safetensors"
    with atomic_path(pth) as tmp:
        torch.save(state, tmp)
    with atomic_path(safetensors) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", **(metadata or {})})
    return pth, safetensors
