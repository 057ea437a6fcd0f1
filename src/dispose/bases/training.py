"""What the training models of every base share (:mod:`dispose.bases.<name>.training`): the frozen-base
module, the recipe interface the trainer uses (a base's registry entry hands out its recipe:
``Base.training``), the export of a trained ControlNet, a random sample in the dataset's contract, and the
conversion of a dataset batch to what the models read (:func:`model_inputs`: images normalised on the device,
``F_d`` from the stored flow or from CMP on the watershed samples).

The export writes ``NAME.pth`` + ``NAME.safetensors`` holding the ControlNet's ``state_dict()`` and nothing
else, key for key the release's layout (``ControlNetSVDModel``: 705 float32 tensors for SVD-xt), so
``dispose animate`` loads it strictly; with EMA, the EMA weights are exported.  Both files are written
atomically (a failure leaves the previous export in place).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from dispose.guidance.stage import GuidanceTensors
from dispose.media.files import atomic_path
from dispose.pipelines.weights import resolve_weights

#: The export's file name (without suffix) for the MimicMotion base, the release's ``DisPose.pth``.
CHECKPOINT_NAME = "DisPose"


#: ``data.dense_field``: F_d from CMP on watershed samples of the stored flow (paper App. A), or the raw flow.
DENSE_FIELDS = ("cmp", "flow")


def random_sample(num_frames: int = 4, width: int = 64, height: int = 64, *, keypoints: int = 18,
                  point_channels: int = 1280,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """A random training sample in the dataset's contract (what ``dispose.training.dataset`` yields with
    ``dense_field="flow"``; for smoke runs, tests and benches): ``pixels`` / ``pose_images`` (T, 3, H, W)
    uint8 ([0] = the reference), ``trajectories`` (T, K, 2) pixels of W x H, ``visible`` (T, K) bool,
    ``dense_flow`` (T - 1, 2, H, W) float16 relative to the reference, ``point_embeddings`` (K, C) float16,
    ``points`` (T, K, 2) normalised."""
    def uniform(*shape):
        return torch.rand(*shape, generator=generator)

    def image(*shape):
        return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)

    scale = torch.tensor([width, height], dtype=torch.float32)
    trajectories = uniform(num_frames, keypoints, 2) * (scale - 1)
    visible = uniform(num_frames, keypoints) > 0.2
    trajectories = torch.where(visible[..., None], trajectories, 0.0)
    return {"pixels": image(num_frames, 3, height, width), "pose_images": image(num_frames, 3, height, width),
            "trajectories": trajectories, "visible": visible,
            "dense_flow": (torch.randn(num_frames - 1, 2, height, width, generator=generator) * 2).half(),
            "point_embeddings": torch.randn(keypoints, point_channels, generator=generator).half(),
            "points": trajectories / scale}


def device_inputs(batch: dict) -> dict:
    """The dataset's transport dtypes as the models read them, on the batch's device: uint8 ``pixels`` and
    ``pose_images`` to float32 in [-1, 1], the float16 fields to float32."""
    out = dict(batch)
    for key in ("pixels", "pose_images"):
        if batch[key].dtype != torch.uint8:
            raise TypeError(f"batch[{key!r}] must be uint8 (the dataset's contract), got {batch[key].dtype}")
        out[key] = batch[key].float().div_(127.5).sub_(1.0)
    for key in ("dense_flow", "point_embeddings"):
        if key in batch:
            out[key] = batch[key].float()
    return out


def dense_field(batch: dict, cmp: nn.Module | None) -> torch.Tensor:
    """``F_d`` (B, T - 1, 2, H, W) float32 on the batch's device: the batch's ``dense_flow``
    (``data.dense_field=flow``), or CMP's field of its watershed samples (``watershed_flow`` /
    ``watershed_mask`` on CMP's grid, paper App. A) and uint8 reference ``pixels[:, 0]`` through
    :func:`dispose.guidance.motion_fields.cmp_motion_field`, the call inference makes: CMP in float32 (outside
    autocast), one frame per call on the CPU and 8 elsewhere, as the guidance stage."""
    from dispose.guidance.motion_fields import cmp_motion_field

    if "dense_flow" in batch:
        return batch["dense_flow"].float()
    if cmp is None:
        raise ValueError("a batch of watershed samples needs the CMP model (data.dense_field=cmp)")
    device = batch["pixels"].device
    chunk = 1 if device.type == "cpu" else 8
    fields = []
    with torch.autocast(device.type, enabled=False):
        for index in range(len(batch["pixels"])):
            reference = batch["pixels"][index, 0].permute(1, 2, 0).cpu().numpy()
            flow = cmp_motion_field(cmp, reference, batch["watershed_flow"][index].float(),
                                    batch["watershed_mask"][index].float(), chunk_size=chunk)
            fields.append(torch.from_numpy(flow))
    return torch.stack(fields).to(device)


def model_inputs(batch: dict, cmp: nn.Module | None) -> dict:
    """The batch a training forward reads: :func:`device_inputs` with ``dense_flow`` = :func:`dense_field`."""
    field_ = dense_field(batch, cmp)
    out = device_inputs({key: value for key, value in batch.items() if not key.startswith("watershed_")})
    out["dense_flow"] = field_
    return out


def cmp_checkpoint(config: Any) -> Path | None:
    """The CMP checkpoint a run (a ``dispose.training.config.TrainConfig``) with ``data.dense_field=cmp``
    needs (None for ``flow``), or one line naming ``--set data.dense_field=flow`` when it is not found
    (``weights.cmp``, else the ``weights.dir`` layout)."""
    from dispose.errors import UserError
    from dispose.pipelines.weights import find_weights

    if config.data.dense_field not in DENSE_FIELDS:
        raise UserError(f"data.dense_field must be {' or '.join(DENSE_FIELDS)}, got "
                        f"{config.data.dense_field!r}")
    if config.data.dense_field == "flow":
        return None
    paths, problems = find_weights(config.weights.dir, {"cmp": config.weights.cmp}, ["cmp"])
    if problems:
        raise UserError("data.dense_field=cmp (the paper's F_d: CMP on watershed samples of the flow) needs "
                        "the CMP checkpoint ckpt_iter_42000.pth.tar (weights.cmp, or cmp/ under "
                        "weights.dir); pass --set data.dense_field=flow to train on the raw optical flow "
                        "instead")
    return paths.cmp


def load_training_cmp(config: Any) -> nn.Module | None:
    """The frozen CMP of a run with ``data.dense_field=cmp`` (None for ``flow``), strictly loaded, float32 (as
    inference runs it; it is not cast with the frozen base)."""
    from dispose.guidance.cmp import load_cmp

    path = cmp_checkpoint(config)
    return load_cmp(path) if path is not None else None


def checkpoint_blocks(module: nn.Module, blocks: tuple[str, ...], checkpoint: Callable | None = None) -> int:
    """Gradient checkpointing of every submodule of ``module`` whose class name is in ``blocks`` (once);
    returns how many it wrapped.  ``checkpoint(fn, *args, **kwargs)`` defaults to
    ``torch.utils.checkpoint.checkpoint`` (non-reentrant); without gradients (validation, frozen passes)
    the blocks run plainly."""
    import functools

    from torch.utils.checkpoint import checkpoint as torch_checkpoint

    run = checkpoint or functools.partial(torch_checkpoint, use_reentrant=False)
    count = 0
    for block in module.modules():
        if type(block).__name__ in blocks and not getattr(block, "_checkpointed", False):
            block.forward = functools.partial(_checkpointed, run, block.forward)
            block._checkpointed = True
            count += 1
    return count


def _checkpointed(run: Callable, forward: Callable, *args, **kwargs):
    return run(forward, *args, **kwargs) if torch.is_grad_enabled() else forward(*args, **kwargs)


class FrozenBaseModel(nn.Module):
    """What every training model shares: a frozen base (:meth:`frozen_modules`, cast to the mixed-precision
    dtype, no gradients, always in eval mode) and a trainable hybrid ControlNet (``self.controlnet``)."""

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

    def untrained_modules(self) -> list[nn.Module]:
        """Every module that gets no gradient: the frozen base and, with ``data.dense_field=cmp``, the frozen
        CMP (kept in float32, so not among :meth:`frozen_modules`)."""
        cmp = getattr(self, "cmp", None)
        return [*self.frozen_modules(), *([cmp] if cmp is not None else [])]

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

    def assemble(self, config: Any, base: Any, controlnet: nn.Module | None = None, *,
                 copy_weights: bool = True) -> nn.Module:
        """The training model around ``base``, the base's pipeline without DisPose in the frozen dtype (what
        :meth:`build` loads, or full-size random networks for a benchmark): ``controlnet``, or one initialised
        from the denoising UNet (``copy_weights=False``: random, not copied)."""

    def controlnet(self, model: nn.Module) -> nn.Module:
        """The trainable network whose state dict is the exported checkpoint."""

    def pipeline(self, model: nn.Module):
        """A sampling pipeline sharing the model's networks (validation)."""

    def export(self, controlnet: nn.Module, folder: Path, metadata: dict[str, str]) -> tuple[Path, ...]:
        """Write the checkpoint file(s) ``dispose animate`` loads for this base into ``folder``."""


def sample_guidance(batch: dict, index: int) -> GuidanceTensors:
    """The DisPose guidance of clip ``index`` of a collated batch (all its T frames, [0] = the reference)."""
    height, width = batch["pixels"].shape[-2:]
    return GuidanceTensors(trajectories=batch["trajectories"][index], visible=batch["visible"][index],
                           points=batch["points"][index], dense_flow=batch["dense_flow"][index],
                           point_embeddings=batch["point_embeddings"][index], width=width, height=height)


def frozen_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype the frozen base is created and kept in for ``train.mixed_precision`` (no, fp16, bf16)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)


def load_frozen_base(config: Any, keys: tuple[str, ...], required_components: Callable[[bool], list[str]],
                     load_pipeline: Callable[..., Any]):
    """The base pipeline (no DisPose) a training run freezes, for a ``dispose.training.config.TrainConfig``:
    read from ``weights.dir`` and the components ``weights.<key>`` names one by one (``keys``), created in the
    frozen dtype (:func:`frozen_dtype`; no float32 host copy) on the CPU."""
    weights = config.weights
    overrides = {key: getattr(weights, key) for key in keys if getattr(weights, key) is not None}
    paths = resolve_weights(weights.dir, overrides, required_components(False))
    return load_pipeline(paths, dispose=False, dtype=frozen_dtype(config.train.mixed_precision), device="cpu")


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
