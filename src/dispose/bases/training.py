"""What the training models of every base share (:mod:`dispose.bases.<name>.training`): the frozen-base module,
the recipe interface the trainer uses (a base's registry entry hands out its recipe: ``Base.training``), the
export of a trained ControlNet, and a random sample in the dataset's contract.

The export writes ``NAME.pth`` + ``NAME.safetensors`` holding the ControlNet's ``state_dict()`` and nothing
else, key for key the release's layout (``ControlNetSVDModel``: 705 float32 tensors for SVD-xt), so
``dispose animate`` loads it strictly; with EMA, the EMA weights are exported.  Both files are written
atomically (a failure leaves the previous export in place).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from dispose.media.files import atomic_path

#: The export's file name (without suffix) for the MimicMotion base, the release's ``DisPose.pth``.
CHECKPOINT_NAME = "DisPose"


def random_sample(num_frames: int = 4, width: int = 64, height: int = 64, *, keypoints: int = 18,
                  point_channels: int = 1280, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """A random training sample in the dataset's contract (what ``dispose.training.dataset`` yields; for smoke
    runs, tests and benches): ``pixels`` / ``pose_images`` (T, 3, H, W) in [-1, 1] ([0] = the reference),
    ``trajectories`` (T, K, 2) pixels of W x H, ``visible`` (T, K) bool, ``dense_flow`` (T - 1, 2, H, W) relative
    to the reference, ``point_embeddings`` (K, C), ``points`` (T, K, 2) normalised."""
    def uniform(*shape):
        return torch.rand(*shape, generator=generator)

    scale = torch.tensor([width, height], dtype=torch.float32)
    trajectories = uniform(num_frames, keypoints, 2) * (scale - 1)
    visible = uniform(num_frames, keypoints) > 0.2
    trajectories = torch.where(visible[..., None], trajectories, 0.0)
    return {"pixels": uniform(num_frames, 3, height, width) * 2 - 1,
            "pose_images": uniform(num_frames, 3, height, width) * 2 - 1,
            "trajectories": trajectories, "visible": visible,
            "dense_flow": torch.randn(num_frames - 1, 2, height, width, generator=generator) * 2,
            "point_embeddings": torch.randn(keypoints, point_channels, generator=generator),
            "points": trajectories / scale}


class FrozenBaseModel(nn.Module):
    """What every training model shares: a frozen base (:meth:`frozen_modules`, cast to the mixed-precision dtype,
    no gradients, always in eval mode) and a trainable hybrid ControlNet (``self.controlnet``)."""

    controlnet: nn.Module

    def frozen_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def freeze(self, frozen_dtype: torch.dtype) -> None:
        for module in self.frozen_modules():
            nn.Module.to(module, dtype=frozen_dtype)  # ModelMixin.to warns about fp32 modules on dtype casts
            module.requires_grad_(False).eval()
        self.controlnet.requires_grad_(True)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.controlnet]

    def train(self, mode: bool = True) -> FrozenBaseModel:
        """Only the ControlNet switches to training mode; the frozen base stays in eval mode."""
        self.training = mode
        self.controlnet.train(mode)
        return self


class TrainingBase(Protocol):
    """What the trainer needs from a base model family (MimicMotion, MusePose)."""

    name: str

    def build(self, config: Any) -> nn.Module:
        """The training model (frozen base + trainable ControlNet) for a
        ``dispose.training.config.TrainConfig``, on the CPU, with ``trainable_modules()``,
        ``enable_gradient_checkpointing()``, ``draw(batch, generator)`` and ``forward(batch, draw) -> per-clip
        loss`` (its objective is the base's: EDM v-prediction here, MusePose's own for MusePose)."""

    def controlnet(self, model: nn.Module) -> nn.Module:
        """The trainable network whose state dict is the exported checkpoint."""

    def pipeline(self, model: nn.Module):
        """A sampling pipeline sharing the model's networks (validation)."""

    def export(self, controlnet: nn.Module, folder: Path, metadata: dict[str, str]) -> tuple[Path, ...]:
        """Write the checkpoint file(s) ``dispose animate`` loads for this base into ``folder``."""


def controlnet_state(controlnet: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous float32 CPU copies of every tensor of ``controlnet`` (no shared storage, as safetensors
    needs)."""
    return {key: value.detach().to("cpu", torch.float32).contiguous().clone()
            for key, value in controlnet.state_dict().items()}


def export_controlnet(controlnet: nn.Module, folder: str | Path, *, metadata: dict[str, str] | None = None,
                      name: str = CHECKPOINT_NAME) -> tuple[Path, Path]:
    """Write ``folder/NAME.pth`` and ``folder/NAME.safetensors`` (module docstring); returns their paths."""
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
