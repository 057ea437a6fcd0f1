"""``dispose train``: the training loop on accelerate (one process per GPU; DDP, DeepSpeed or FSDP by the launch).

What runs (:func:`train`):

* The training model of the configured base (:mod:`dispose.bases.mimicmotion.training`): frozen base, trainable hybrid
  ControlNet.  Optimiser AdamW (``torch.optim.AdamW``, or bitsandbytes' ``AdamW8bit`` on CUDA) over the
  ControlNet's parameters only; diffusers' LR schedule with warm-up; gradient clipping; optional EMA
  (``diffusers.training_utils.EMAModel``); gradient checkpointing of every block of the ControlNet and of the frozen
  UNet (the loss reaches the ControlNet through the UNet's up blocks, whose activations dominate memory;
  ``model.enable_gradient_checkpointing``, for SVD :func:`dispose.bases.mimicmotion.training.checkpoint_blocks`).
* Batch: ``train.batch_size`` clips per optimiser step over all processes, ``train.micro_batch_size`` per
  forward; the gradient accumulation makes up the rest (:mod:`dispose.training.config`).
* Randomness: the sigmas, noise and CFG-dropout flags come from one ``torch.Generator`` per process (seed +
  process index), saved with every checkpoint; the data order is accelerate's seedable sampler (seed +
  epoch).  So a run resumed from a checkpoint continues bit for bit like an uninterrupted one (tested on CPU).
* Checkpoints: ``accelerate save_state`` into ``OUT/checkpoints/checkpoint-STEP`` every
  ``checkpoints.every`` steps (model, optimiser, LR schedule, EMA, generator, RNG states); the last
  ``checkpoints.keep`` are kept.  ``resume="latest"`` or a checkpoint folder continues from it.
* Export: ``OUT/export/DisPose.pth`` + ``.safetensors`` at the end (:mod:`dispose.bases.training`;
  ``DisPose_MusePose.pth`` for the MusePose base: the base's ``export``), plus
  ``OUT/export/step-STEP/`` every ``checkpoints.export_every`` steps.
* Validation every ``validation.every`` steps: a callable ``animate(pipeline) -> (N, H, W, 3) uint8`` runs
  on the main process with the current (EMA) weights; the video goes to ``OUT/validation/step-STEP.mp4`` and
  a few frames to TensorBoard.  :func:`validation_animate` builds it from the held-out reference + driving
  pair of the config (poses and guidance computed once at start, sampling at a small size).
* Logging (TensorBoard, ``OUT/logs``): loss, learning rate, gradient norm, step time, samples/s and, on CUDA,
  peak GPU memory, every ``logging.every`` steps.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dispose.errors import UserError
from dispose.training.config import TrainConfig

CHECKPOINT_PREFIX = "checkpoint-"
TRAINABLE_FILE = "controlnet.safetensors"
STATE_FILE = "trainer_state.json"
Animate = Callable[[object], np.ndarray]


@dataclass
class TrainResult:
    """What a run did: optimiser steps reached, per-step mean loss of this run, export paths, the trained network."""

    step: int
    output_dir: Path
    controlnet: torch.nn.Module | None = None
    losses: list[float] = field(default_factory=list)
    exported: tuple[Path, ...] = ()


class GeneratorState:
    """A ``torch.Generator`` that accelerate saves and restores with the checkpoint (``register_for_checkpointing``)."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


def checkpoints(folder: Path) -> list[Path]:
    """Complete ``checkpoint-STEP`` folders below ``folder`` (``trainer_state.json`` is written last), oldest first."""
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if path.name.startswith(CHECKPOINT_PREFIX)
             and path.name[len(CHECKPOINT_PREFIX):].isdigit() and (path / STATE_FILE).is_file()]
    return sorted(found, key=lambda path: int(path.name[len(CHECKPOINT_PREFIX):]))


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    """The checkpoint folder to resume from: ``latest`` (None if there is none yet) or a path."""
    if resume is None:
        return None
    if resume == "latest":
        found = checkpoints(output_dir / "checkpoints")
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise UserError(f"--resume {resume}: not a complete checkpoint folder (no {STATE_FILE}); pass 'latest' or "
                        f"a {CHECKPOINT_PREFIX}STEP folder below OUT/checkpoints")
    return path


def _accumulation(config: TrainConfig, processes: int) -> int:
    train = config.train
    per_step = train.micro_batch_size * processes
    if train.batch_size % per_step:
        raise UserError(f"train.batch_size {train.batch_size} is not a multiple of micro_batch_size x processes = "
                        f"{train.micro_batch_size} x {processes}; change one of them")
    return train.batch_size // per_step


def _optimizer_class(config: TrainConfig, device: torch.device):
    """AdamW, or bitsandbytes' AdamW8bit (CUDA only) with ``train.use_8bit_adam``."""
    if not config.train.use_8bit_adam:
        return torch.optim.AdamW
    if device.type != "cuda":
        raise UserError(f"train.use_8bit_adam needs a CUDA GPU (bitsandbytes); this run is on {device}: set "
                        "train.use_8bit_adam=false")
    try:
        import bitsandbytes
    except ImportError:
        raise UserError("train.use_8bit_adam needs bitsandbytes: pip install bitsandbytes") from None
    return bitsandbytes.optim.AdamW8bit


def _open_dataset(config: TrainConfig):
    """The prepared dataset of ``data.root`` (``dispose prepare``'s reader)."""
    if config.data.root is None:
        raise UserError("data.root is not set: pass --data DATASET (a folder written by dispose prepare)")
    try:
        from dispose.training.dataset import TrainingDataset
    except ImportError as error:
        raise UserError(f"the training dataset reader is not available ({error})") from None
    data = config.data
    return TrainingDataset(data.root, num_frames=data.num_frames, size=(data.width, data.height),
                           flip_probability=data.flip_probability, seed=config.train.seed)


def _hparams(config: TrainConfig) -> dict:
    """Flat scalar settings for TensorBoard's hparams (None and lists as text)."""
    flat = {}
    for section, values in config.to_dict().items():
        if isinstance(values, dict):
            flat.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            flat[section] = values
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in flat.items()}


def train(config: TrainConfig, *, resume: str | None = None, dataset=None, animate: Animate | None = None,
          on_step: Callable[[int, torch.nn.Module], None] | None = None, cpu: bool = False) -> TrainResult:
    """Train (see module docstring).  ``dataset``: a map-style dataset of samples (default: ``data.root``);
    ``animate``: the validation callable (default: :func:`validation_animate` when ``validation.every``);
    ``on_step(step, model)``: called on the main process with the training model before the first step and
    after every optimiser step (monitoring, benches)."""
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    from dispose.bases import training_base

    output_dir = Path(config.output_dir)
    base = training_base(config.base)
    state = PartialState(cpu=cpu)
    accumulation = _accumulation(config, state.num_processes)
    optimizer_class = _optimizer_class(config, state.device)
    start_from = resolve_resume(resume, output_dir)
    dataset = dataset if dataset is not None else _open_dataset(config)
    accelerator = Accelerator(
        gradient_accumulation_steps=accumulation, mixed_precision=config.train.mixed_precision, cpu=cpu,
        log_with="tensorboard", project_config=ProjectConfiguration(project_dir=str(output_dir),
                                                                    logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    try:
        return _run(config, base, accelerator, accumulation, optimizer_class, start_from, dataset, animate, on_step)
    finally:
        # the accelerator's settings are process-wide: a later run in this process (tests, notebooks) sets its own
        AcceleratorState._reset_state()
        GradientState._reset_state()


def _run(config: TrainConfig, base, accelerator, accumulation: int, optimizer_class, start_from: Path | None,
         dataset, animate: Animate | None, on_step) -> TrainResult:
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler

    output_dir = Path(config.output_dir)
    set_seed(config.train.seed)
    model = base.build(config)
    if config.train.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    parameters = [p for module in model.trainable_modules() for p in module.parameters()]
    train_settings = config.train
    optimizer = optimizer_class(parameters, lr=train_settings.learning_rate,
                                betas=(train_settings.adam_beta1, train_settings.adam_beta2),
                                weight_decay=train_settings.adam_weight_decay, eps=train_settings.adam_epsilon)
    schedule = get_scheduler(config.train.lr_scheduler, optimizer,
                             num_warmup_steps=config.train.lr_warmup_steps * accelerator.num_processes,
                             num_training_steps=config.train.max_steps * accelerator.num_processes)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.train.micro_batch_size, shuffle=True,
                                         drop_last=True, num_workers=config.data.num_workers)
    if len(loader) == 0:
        raise UserError(f"the dataset has {len(dataset)} samples, fewer than one micro-batch of "
                        f"{config.train.micro_batch_size} per process")
    model, optimizer, loader, schedule = accelerator.prepare(model, optimizer, loader, schedule)
    inner = accelerator.unwrap_model(model)
    controlnet = base.controlnet(inner)
    _checkpoint_trainable_only(accelerator, controlnet)

    ema = None
    if config.train.use_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(controlnet.parameters(), decay=config.train.ema_decay)
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    noise = GeneratorState(config.train.seed + accelerator.process_index, accelerator.device)
    accelerator.register_for_checkpointing(noise)

    step = 0
    if start_from is not None:
        saved = json.loads((start_from / STATE_FILE).read_text())
        if saved.get("use_ema", False) != config.train.use_ema:
            raise UserError(f"--resume {start_from}: it was written with train.use_ema={saved.get('use_ema', False)}; "
                            "resume with the same setting")
        accelerator.load_state(str(start_from))
        step = saved["step"]
        accelerator.print(f"resumed from {start_from} at step {step}")
    if animate is None and config.validation.every:
        animate = validation_animate(config, accelerator.device)
    if accelerator.is_main_process:
        accelerator.init_trackers("dispose-train", config=_hparams(config))

    result = TrainResult(step=step, output_dir=output_dir, controlnet=controlnet)
    batches_per_epoch = len(loader)
    done = step * accumulation  # micro-batches this process has consumed
    epoch, skip = divmod(done, batches_per_epoch)
    if on_step is not None and accelerator.is_main_process:
        on_step(step, inner)
    model.train()
    losses: list[torch.Tensor] = []
    started = time.perf_counter()
    while step < config.train.max_steps:
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        batches.set_epoch(epoch)  # the data order of this epoch (seed + epoch), also for a skipping loader
        skip = 0
        for batch in batches:
            with accelerator.accumulate(model):
                draw = inner.draw(batch, noise.generator).to(accelerator.device)
                loss = model(batch, draw).mean()
                accelerator.backward(loss)
                grad_norm = None
                if accelerator.sync_gradients:
                    grad_norm = _clip(accelerator, parameters, config.train.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            if not accelerator.sync_gradients:
                continue
            step += 1
            if ema is not None:
                ema.step(controlnet.parameters())
            mean_loss = accelerator.gather(torch.stack(losses).mean()[None]).mean().item()
            losses = []
            result.losses.append(mean_loss)
            elapsed = time.perf_counter() - started  # the step itself, without checkpoints and validation
            if step % config.logging.every == 0 or step == config.train.max_steps:
                _log(accelerator, step, mean_loss, schedule, grad_norm, elapsed, config.train.batch_size)
            if step % config.checkpoints.every == 0 or step == config.train.max_steps:
                save_checkpoint(accelerator, output_dir, step, config.checkpoints.keep, use_ema=ema is not None)
            if config.checkpoints.export_every and step % config.checkpoints.export_every == 0:
                _export(accelerator, base, controlnet, ema, output_dir / "export" / f"step-{step}", step)
            if animate is not None and config.validation.every and step % config.validation.every == 0:
                run_validation(accelerator, base.pipeline(inner), controlnet, ema, animate, output_dir, step)
            if on_step is not None and accelerator.is_main_process:
                on_step(step, inner)
            started = time.perf_counter()
            if step >= config.train.max_steps:
                break
        epoch += 1

    result.step = step
    result.exported = _export(accelerator, base, controlnet, ema, output_dir / "export", step)
    accelerator.end_training()
    return result


def _checkpoint_trainable_only(accelerator, controlnet: torch.nn.Module) -> None:
    """Checkpoints hold the trainable network, not the frozen base (which the weight files give back): accelerate's
    model save/load is replaced by ``controlnet.safetensors`` (DeepSpeed and FSDP save their own way)."""
    from safetensors.torch import save_file

    from dispose.bases.training import controlnet_state
    from dispose.checkpoints import load_strict, read_state_dict

    def save(models, weights, output_dir) -> None:
        if accelerator.is_main_process and models:
            save_file(controlnet_state(controlnet), str(Path(output_dir) / TRAINABLE_FILE))
        weights.clear()

    def load(models, input_dir) -> None:
        if models:
            path = Path(input_dir) / TRAINABLE_FILE
            load_strict(controlnet, read_state_dict(path, what="a dispose train checkpoint"), path)
            models.clear()

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def _clip(accelerator, parameters: list[torch.nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """Gradient norm before clipping (clipped to ``max_norm`` when given)."""
    if max_norm is not None:
        return accelerator.clip_grad_norm_(parameters, max_norm)
    grads = [p.grad.detach().float().norm() for p in parameters if p.grad is not None]
    return torch.stack(grads).norm() if grads else torch.zeros(())


def _log(accelerator, step: int, loss: float, schedule, grad_norm, elapsed: float, batch_size: int) -> None:
    values = {"train/loss": loss, "train/lr": schedule.get_last_lr()[0], "train/step_time_s": elapsed,
              "train/samples_per_s": batch_size / elapsed if elapsed > 0 else 0.0}
    if grad_norm is not None:
        values["train/grad_norm"] = float(grad_norm)
    if accelerator.device.type == "cuda":
        values["train/gpu_max_allocated_gb"] = torch.cuda.max_memory_allocated(accelerator.device) / 2 ** 30
    accelerator.log(values, step=step)


def save_checkpoint(accelerator, output_dir: Path, step: int, keep: int, *, use_ema: bool = False) -> Path:
    """``accelerate save_state`` into ``checkpoints/checkpoint-STEP`` (all processes), then keep the last ``keep``."""
    from dispose.media.files import atomic_write_text

    folder = output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        atomic_write_text(folder / STATE_FILE, json.dumps({"step": step, "use_ema": use_ema}))  # marks it complete
        for old in checkpoints(output_dir / "checkpoints")[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder


def _export(accelerator, base, controlnet, ema, folder: Path, step: int) -> tuple[Path, ...]:
    paths: tuple[Path, ...] = ()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with _ema_weights(controlnet, ema):
            paths = base.export(controlnet, folder, {"step": str(step)})
    accelerator.wait_for_everyone()
    return paths


class _ema_weights:
    """Context: the ControlNet holds the EMA weights inside (no-op without EMA)."""

    def __init__(self, controlnet, ema) -> None:
        self.controlnet, self.ema = controlnet, ema

    def __enter__(self):
        if self.ema is not None:
            self.ema.store(self.controlnet.parameters())
            self.ema.copy_to(self.controlnet.parameters())

    def __exit__(self, *exc) -> None:
        if self.ema is not None:
            self.ema.restore(self.controlnet.parameters())


def run_validation(accelerator, pipeline, controlnet, ema, animate: Animate, output_dir: Path, step: int) -> Path | None:
    """Animate with the current (EMA) weights on the main process; save the mp4 and log frames.  Returns the mp4."""
    from dispose.media.video import write_video

    path = None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        controlnet.eval()
        with _ema_weights(controlnet, ema), accelerator.autocast():
            frames = np.asarray(animate(pipeline))
        controlnet.train()
        path = output_dir / "validation" / f"step-{step}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, frames, fps=8)
        writer = accelerator.get_tracker("tensorboard", unwrap=True)
        picks = frames[np.linspace(0, len(frames) - 1, min(4, len(frames))).round().astype(int)]
        writer.add_images("validation/frames", picks, step, dataformats="NHWC")
    accelerator.wait_for_everyone()
    return path


def validation_animate(config: TrainConfig, device: torch.device) -> Animate:
    """``animate(pipeline)`` for the config's held-out pair through the in-memory engine (:mod:`dispose.engine`):
    poses and DisPose guidance are computed now, once; each call samples at ``validation.resolution`` with the
    pipeline's current weights."""
    from dispose.engine import Animator, Runtime
    from dispose.guidance.stage import GuidanceModels
    from dispose.pipelines.weights import resolve_weights
    from dispose.pose.detector_factory import load_detector

    settings = config.validation
    if settings.ref is None or settings.driving is None:
        raise UserError("validation.every is set but validation.ref / validation.driving are not: give a held-out "
                        "reference image and driving video, or set validation.every=0")
    needed = ["sd15"] + (["cmp"] if settings.dense == "cmp" else []) + (["dwpose"] if settings.detector == "dwpose"
                                                                        else [])
    paths = resolve_weights(config.weights.dir, {"sd15": settings.sd15} if settings.sd15 else {}, needed)
    detector = load_detector(dwpose_dir=paths.dwpose if settings.detector == "dwpose" else None, device=str(device))
    dtype = {"no": "fp32"}.get(config.train.mixed_precision, config.train.mixed_precision)
    runtime = Runtime(device=str(device), dtype=dtype, detector=settings.detector, dense=settings.dense,
                      progress=False)
    engine = Animator.from_pipeline(None, base=config.base, runtime=runtime,
                                    guidance_models=GuidanceModels(detector=detector, cmp=paths.cmp, sd15=paths.sd15))
    tile = min(config.data.num_frames, settings.max_frames + 1)
    overlap = min(engine.base.defaults["frames_overlap"], tile - 1)
    given = {name: getattr(settings, name) for name in ("guidance_scale", "seed")
             if getattr(settings, name) is not None}  # unset: the base's defaults
    job = engine.settings(resolution=settings.resolution, num_frames=tile, frames_overlap=overlap,
                          num_inference_steps=settings.num_inference_steps,
                          sample_stride=settings.sample_stride, max_frames=settings.max_frames, **given)
    guidance = engine.compute_guidance(settings.ref, settings.driving, settings=job)

    def animate(pipeline) -> np.ndarray:
        engine.pipeline = pipeline
        return engine.animate(guidance=guidance, settings=job).frames

    return animate
