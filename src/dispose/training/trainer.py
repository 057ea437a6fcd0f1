"""``dispose train``: the training loop on accelerate (one process per GPU; DDP, DeepSpeed or FSDP by the
launch).

What runs (:func:`train`):

* The training model of the configured base (``dispose.bases.<base>.training``): frozen base, trainable hybrid
  ControlNet.  Optimiser AdamW (``torch.optim.AdamW``, or bitsandbytes' ``AdamW8bit`` on CUDA) over the
  ControlNet's parameters only; diffusers' LR schedule with warm-up; gradient clipping; optional EMA
  (``diffusers.training_utils.EMAModel``); gradient checkpointing of every block of the ControlNet and of the
  frozen UNet (the loss reaches the ControlNet through the UNet's up blocks, whose activations dominate
  memory; ``model.enable_gradient_checkpointing``, for SVD
  :func:`dispose.bases.training.checkpoint_blocks`).
* Batch: ``train.batch_size`` clips per optimiser step over all processes, ``train.micro_batch_size`` per
  forward; the gradient accumulation makes up the rest (:mod:`dispose.training.config`).
* Data and randomness: accelerate's seedable sampler shards every epoch over the processes (a different order
  each epoch, seed + epoch; ranks disjoint; the last ``len % (micro_batch_size x processes)`` samples of each
  epoch's order are dropped).  The trainer itself calls ``dataset.set_epoch(epoch)`` before each epoch (the
  reference, window and flip of every sample change with the epoch): accelerate's loader forwards
  ``set_epoch`` to the dataset only when its sampler has none, which is never the case with two or more
  processes.  The sigmas, noise and CFG-dropout flags of micro-batch ``k`` of an epoch on process ``r`` come
  from a generator seeded with ``(seed, r, epoch, k)``.  An epoch of ``L`` micro-batches per process is
  ``ceil(L / accumulation)`` optimiser steps (accelerate steps at the end of every epoch, with a partial
  accumulation), so a step number gives the exact data position, and a run resumed from a checkpoint continues
  like an uninterrupted one, bit for bit (tested with 3 CPU processes).  ``logging.samples: true`` writes what
  each process consumed (``OUT/logs/samples-rankR.jsonl``: per micro-batch the step, epoch, position and each
  sample's index, clip, reference, window start and flip).
* Checkpoints: ``accelerate save_state`` every ``checkpoints.every`` steps, written into
  ``OUT/checkpoints/.checkpoint-STEP.partial`` and renamed to ``checkpoint-STEP`` once complete (model,
  optimiser, LR schedule, EMA, RNG states, then ``trainer_state.json``), so an interruption never leaves a
  checkpoint folder that looks usable; the last ``checkpoints.keep`` are kept.  ``resume="latest"`` continues
  from the newest complete one and refuses (one line) when there is none; a checkpoint folder can be named
  instead.
* Export: ``OUT/export/DisPose.pth`` + ``.safetensors`` at the end (:mod:`dispose.bases.training`;
  ``DisPose_MusePose.pth`` for the MusePose base: the base's ``export``), plus
  ``OUT/export/step-STEP/`` every ``checkpoints.export_every`` steps.
* Validation every ``validation.every`` steps: a callable ``animate(pipeline) -> (N, H, W, 3) uint8`` runs
  on the main process with the current (EMA) weights; the video goes to ``OUT/validation/step-STEP.mp4`` and
  a few frames to TensorBoard.  :func:`validation_animate` builds it from the held-out reference + driving
  pair of the config (poses and guidance computed once at start, sampling at a small size).
* Held-out loss every ``validation.loss_every`` steps on ``validation.loss_samples`` samples of the dataset
  ``validation.loss_data`` at fixed noise levels and fixed noise (:mod:`dispose.training.heldout`).
* A step whose loss or gradient norm is not finite is skipped (no update, no EMA step, no LR step), logged
  (``train/nonfinite_steps``) and printed; ``train.max_nonfinite_steps`` of them in a row stop the run.
* Logging (TensorBoard, ``OUT/logs``): loss, learning rate, gradient norm, step time, samples/s and, on CUDA,
  peak GPU memory, every ``logging.every`` steps.  TF32 matmuls on CUDA (``train.allow_tf32``).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from dispose.errors import UserError
from dispose.training.config import TrainConfig

CHECKPOINT_PREFIX = "checkpoint-"
TRAINABLE_FILE = "controlnet.safetensors"
STATE_FILE = "trainer_state.json"
#: Batch key of the sample indices (only with ``logging.samples``).
SAMPLE_INDEX = "sample_index"
Animate = Callable[[object], np.ndarray]


@dataclass
class TrainResult:
    """What a run did: optimiser steps reached, per-step mean loss of this run, export paths, the trained
    network, the number of processes it ran on."""

    step: int
    output_dir: Path
    processes: int = 1
    controlnet: torch.nn.Module | None = None
    losses: list[float] = field(default_factory=list)
    exported: tuple[Path, ...] = ()


def noise_generator(seed: int, process: int, epoch: int, position: int,
                    device: torch.device) -> torch.Generator:
    """The generator of the sigmas, noise and dropout flags of micro-batch ``position`` of ``epoch`` on
    ``process`` (a function of the data position only, so nothing needs saving for an exact resume)."""
    state = np.random.SeedSequence([seed, process, epoch, position]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state))


def checkpoints(folder: Path) -> list[Path]:
    """Complete ``checkpoint-STEP`` folders below ``folder`` (``trainer_state.json`` is written last), oldest
    first."""
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if path.name.startswith(CHECKPOINT_PREFIX)
             and path.name[len(CHECKPOINT_PREFIX):].isdigit() and (path / STATE_FILE).is_file()]
    return sorted(found, key=lambda path: int(path.name[len(CHECKPOINT_PREFIX):]))


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    """The checkpoint folder to resume from: the newest complete one for ``latest``, or the folder given; a
    UserError when there is none (a resume must never silently start again from step 0)."""
    if resume is None:
        return None
    if resume == "latest":
        folder = output_dir / "checkpoints"
        found = checkpoints(folder)
        if not found:
            incomplete = (sorted(path.name for path in folder.glob(f"{CHECKPOINT_PREFIX}*"))
                          if folder.is_dir() else [])
            what = (f"only incomplete ones ({', '.join(incomplete)}: no {STATE_FILE})" if incomplete
                    else "none")
            raise UserError(f"--resume latest: {folder} holds no complete checkpoint ({what}); start without "
                            "--resume, or pass a checkpoint folder")
        return found[-1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise UserError(f"--resume {resume}: not a complete checkpoint folder (no {STATE_FILE}); pass "
                        f"'latest' or a {CHECKPOINT_PREFIX}STEP folder below OUT/checkpoints")
    return path


def data_position(step: int, batches_per_epoch: int, accumulation: int) -> tuple[int, int]:
    """``(epoch, micro-batches to skip in it)`` after ``step`` optimiser steps: every epoch ends with an
    optimiser step, over a partial accumulation when ``accumulation`` does not divide
    ``batches_per_epoch``."""
    epoch, within = divmod(step, math.ceil(batches_per_epoch / accumulation))
    return epoch, within * accumulation


def _accumulation(config: TrainConfig, processes: int) -> int:
    train = config.train
    per_step = train.micro_batch_size * processes
    if train.batch_size % per_step:
        raise UserError(f"train.batch_size {train.batch_size} is not a multiple of micro_batch_size x "
                        f"processes = {train.micro_batch_size} x {processes}; change one of them")
    return train.batch_size // per_step


def optimizer_class(config: TrainConfig, device: torch.device):
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


def build_optimizer(adamw, parameters, train) -> torch.optim.Optimizer:
    """``adamw`` (:func:`optimizer_class`) over ``parameters`` with ``train``'s (``TrainConfig.train``)
    learning rate, betas, weight decay and epsilon."""
    return adamw(parameters, lr=train.learning_rate, betas=(train.adam_beta1, train.adam_beta2),
                 weight_decay=train.adam_weight_decay, eps=train.adam_epsilon)


def _open_dataset(config: TrainConfig):
    """The prepared dataset of ``data.root`` (``dispose prepare``'s reader, after its cheap checks)."""
    from dispose.training.dataset import open_dataset

    return open_dataset(config)


def _held_out_config(config: TrainConfig) -> TrainConfig:
    """The config whose dataset is the held-out one (``validation.loss_data``: no flip, one sample per
    clip)."""
    data = replace(config.data, root=config.validation.loss_data, flip_probability=0.0, samples_per_clip=1)
    return replace(config, data=data)


class IndexedSamples(torch.utils.data.Dataset):
    """``dataset`` whose samples also carry their index (``logging.samples``: what each process consumed)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], SAMPLE_INDEX: torch.tensor(index)}


class SampleLog:
    """``OUT/logs/samples-rankR.jsonl``: one line per micro-batch this process consumed (appended on
    resume)."""

    def __init__(self, output_dir: Path, process: int, dataset) -> None:
        self.path = output_dir / "logs" / f"samples-rank{process}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dataset = dataset

    def write(self, step: int, epoch: int, position: int, indices: torch.Tensor) -> None:
        samples = []
        for index in indices.tolist():
            entry = {"index": index}
            if hasattr(self.dataset, "choose"):  # TrainingDataset: its draws of this epoch
                draw = self.dataset.choose(index)
                entry.update(clip=draw["clip"], reference=draw["reference"], start=draw["window"][0],
                             flip=draw["flip"])
            samples.append(entry)
        line = {"step": step, "epoch": epoch, "position": position, "samples": samples}
        with self.path.open("a") as handle:
            handle.write(json.dumps(line) + "\n")


def _hparams(config: TrainConfig) -> dict:
    """Flat scalar settings for TensorBoard's hparams (None and lists as text)."""
    flat = {}
    for section, values in config.to_dict().items():
        if isinstance(values, dict):
            flat.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            flat[section] = values
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value)
            for key, value in flat.items()}


def train(config: TrainConfig, *, resume: str | None = None, dataset=None, animate: Animate | None = None,
          on_step: Callable[[int, torch.nn.Module], None] | None = None, cpu: bool = False) -> TrainResult:
    """Train (see module docstring).  ``dataset``: a map-style dataset of samples (default: ``data.root``);
    ``animate``: the validation callable (default: :func:`validation_animate` when ``validation.every``);
    ``on_step(step, model)``: called on the main process with the training model before the first step and
    after every optimiser step (monitoring, benches)."""
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration

    from dispose.bases import training_base

    output_dir = Path(config.output_dir)
    base = training_base(config.base)
    state = PartialState(cpu=cpu)
    accumulation = _accumulation(config, state.num_processes)
    adamw = optimizer_class(config, state.device)
    start_from = resolve_resume(resume, output_dir)
    if config.validation.loss_every and config.validation.loss_data is None:
        raise UserError("validation.loss_every is set but validation.loss_data is not: pass a held-out "
                        "dataset folder written by dispose prepare (--set validation.loss_data=FOLDER)")
    dataset = dataset if dataset is not None else _open_dataset(config)
    held_out = _open_dataset(_held_out_config(config)) if config.validation.loss_every else None
    if state.device.type == "cuda" and config.train.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    accelerator = Accelerator(
        gradient_accumulation_steps=accumulation, mixed_precision=config.train.mixed_precision, cpu=cpu,
        log_with="tensorboard", project_config=ProjectConfiguration(project_dir=str(output_dir),
                                                                    logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # DDP re-buckets the gradients after its first step unless it looks for unused parameters; a resumed
        # run would then sum them over the processes in another order (ring all-reduce chunks follow the
        # buckets) and drift from an uninterrupted one by rounding.  The search costs one walk of the autograd
        # graph per step.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    try:
        return _run(config, base, accelerator, accumulation, adamw, start_from, dataset, held_out,
                    animate, on_step)
    finally:
        # the accelerator's settings are process-wide: a later run in this process (tests, notebooks) sets its
        # own; the process group stays (a new one cannot rendezvous under torchrun): end_process_group() ends
        # it
        AcceleratorState._reset_state()
        GradientState._reset_state()


def _run(config: TrainConfig, base, accelerator, accumulation: int, adamw, start_from: Path | None,
         dataset, held_out, animate: Animate | None, on_step) -> TrainResult:
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler

    output_dir = Path(config.output_dir)
    train_settings = config.train
    set_seed(train_settings.seed)
    model = base.build(config)
    if train_settings.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    controlnet = base.controlnet(model)
    ema = None
    if train_settings.use_ema:  # from the float32 weights, before prepare() may cast them (DeepSpeed)
        from diffusers.training_utils import EMAModel

        ema = EMAModel(controlnet.parameters(), decay=train_settings.ema_decay)
    parameters = [p for module in model.trainable_modules() for p in module.parameters()]
    optimizer = build_optimizer(adamw, parameters, train_settings)
    schedule = get_scheduler(train_settings.lr_scheduler, optimizer,
                             num_warmup_steps=train_settings.lr_warmup_steps * accelerator.num_processes,
                             num_training_steps=train_settings.max_steps * accelerator.num_processes)
    log = SampleLog(output_dir, accelerator.process_index, dataset) if config.logging.samples else None
    loader = torch.utils.data.DataLoader(IndexedSamples(dataset) if log else dataset,
                                         batch_size=train_settings.micro_batch_size, shuffle=True,
                                         drop_last=True, num_workers=config.data.num_workers)
    if len(loader) < accelerator.num_processes:
        raise UserError(f"the dataset has {len(dataset)} samples, fewer than one micro-batch of "
                        f"{train_settings.micro_batch_size} per process ({accelerator.num_processes} "
                        "processes)")
    _deepspeed_clipping(accelerator.state.deepspeed_plugin, train_settings.max_grad_norm)
    _fsdp_settings(accelerator, model)
    model, optimizer, loader, schedule = accelerator.prepare(model, optimizer, loader, schedule)
    inner = accelerator.unwrap_model(model)
    controlnet = base.controlnet(inner)
    _checkpoint_trainable_only(accelerator, controlnet)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)

    step = 0
    if start_from is not None:
        saved = json.loads((start_from / STATE_FILE).read_text())
        if saved.get("use_ema", False) != train_settings.use_ema:
            raise UserError(f"--resume {start_from}: it was written with train.use_ema="
                            f"{saved.get('use_ema', False)}; resume with the same setting")
        accelerator.load_state(str(start_from))
        step = saved["step"]
    epoch, skip = data_position(step, len(loader), accumulation)
    accelerator.print(f"training on {accelerator.num_processes} process(es) "
                      f"({accelerator.distributed_type.value}), {len(loader)} micro-batches of "
                      f"{train_settings.micro_batch_size} per process and epoch, gradient accumulation "
                      f"{accumulation}")
    if start_from is not None:
        accelerator.print(f"resuming from {start_from}: step {step}, epoch {epoch}, micro-batch {skip} of "
                          f"{len(loader)} per process")
    if animate is None and config.validation.every:
        animate = validation_animate(config, accelerator.device)
    heldout = None
    if held_out is not None:
        from dispose.training.heldout import HeldOutLoss

        heldout = HeldOutLoss(held_out, count=config.validation.loss_samples, seed=train_settings.seed)
    if accelerator.is_main_process:
        accelerator.init_trackers("dispose-train", config=_hparams(config))

    result = TrainResult(step=step, output_dir=output_dir, controlnet=controlnet,
                         processes=accelerator.num_processes)
    if on_step is not None and accelerator.is_main_process:
        on_step(step, inner)
    model.train()
    losses: list[torch.Tensor] = []
    nonfinite = 0
    started = time.perf_counter()
    while step < train_settings.max_steps:
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        batches.set_epoch(epoch)  # the data order of this epoch (seed + epoch), also for a skipping loader
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)  # this epoch's draws (accelerate's loader does not reach the dataset)
        position = skip
        skip = 0
        for batch in batches:
            indices = batch.pop(SAMPLE_INDEX, None)
            if log is not None:
                log.write(step + 1, epoch, position, indices)
            generator = noise_generator(train_settings.seed, accelerator.process_index, epoch, position,
                                        accelerator.device)
            position += 1
            with accelerator.accumulate(model):
                draw = inner.draw(batch, generator).to(accelerator.device)
                loss = model(batch, draw).mean()
                accelerator.backward(loss)
                losses.append(loss.detach())
                if accelerator.sync_gradients:
                    mean_loss = accelerator.gather(torch.stack(losses).mean()[None]).mean().item()
                    losses = []
                    grad_norm = float(_clip(accelerator, model, parameters, train_settings.max_grad_norm))
                    finite = math.isfinite(mean_loss) and math.isfinite(grad_norm)
                    if finite:
                        optimizer.step()
                        schedule.step()
                    optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            step += 1
            if finite:
                nonfinite = 0
                if ema is not None:
                    with full_weights(accelerator, model):
                        ema.step(master_weights(accelerator, controlnet))
                result.losses.append(mean_loss)
            else:
                nonfinite = _skipped(accelerator, step, mean_loss, grad_norm, nonfinite + 1,
                                     train_settings.max_nonfinite_steps)
            elapsed = time.perf_counter() - started  # the step itself, without checkpoints and validation
            if step % config.logging.every == 0 or step == train_settings.max_steps:
                _log(accelerator, step, mean_loss, schedule, grad_norm, elapsed, train_settings.batch_size)
            if step % config.checkpoints.every == 0 or step == train_settings.max_steps:
                save_checkpoint(accelerator, output_dir, step, config.checkpoints.keep,
                                use_ema=ema is not None)
            if config.checkpoints.export_every and step % config.checkpoints.export_every == 0:
                _export(accelerator, base, model, ema, output_dir / "export" / f"step-{step}", step)
            if heldout is not None and step % config.validation.loss_every == 0:
                with full_weights(accelerator, model), _ema_weights(controlnet, ema), accelerator.autocast():
                    value = heldout(inner, accelerator.device)
                accelerator.log({"validation/loss": value}, step=step)
            if animate is not None and config.validation.every and step % config.validation.every == 0:
                with full_weights(accelerator, model):
                    run_validation(accelerator, base.pipeline(inner), controlnet, ema, animate, output_dir,
                                   step)
            if on_step is not None and accelerator.is_main_process:
                on_step(step, inner)
            started = time.perf_counter()
            if step >= train_settings.max_steps:
                break
        epoch += 1

    result.step = step
    result.exported = _export(accelerator, base, model, ema, output_dir / "export", step)
    for tracker in accelerator.trackers:  # accelerator.end_training() would also end the process group
        tracker.finish()
    return result


def end_process_group() -> None:
    """End the process group of a multi-process run (after the last :func:`train` of the process)."""
    from accelerate import PartialState

    PartialState().destroy_process_group()


def _skipped(accelerator, step: int, loss: float, grad_norm: float, in_a_row: int, limit: int) -> int:
    """Note a skipped non-finite step; stop the run after ``limit`` in a row.  Returns the count in a row."""
    accelerator.log({"train/nonfinite_steps": in_a_row}, step=step)
    accelerator.print(f"step {step}: loss {loss} / gradient norm {grad_norm} is not finite; the update was "
                      f"skipped ({in_a_row} in a row, the run stops at {limit})")
    if in_a_row >= limit:
        raise UserError(f"{in_a_row} optimiser steps in a row had a non-finite loss or gradient (last: "
                        f"step {step}); lower train.learning_rate, use train.mixed_precision=bf16 instead of "
                        "fp16, or resume from an earlier checkpoint (train.max_nonfinite_steps sets the "
                        "limit)")
    return in_a_row


def _deepspeed_clipping(plugin, max_grad_norm: float | None) -> None:
    """DeepSpeed clips inside its engine, with its config's ``gradient_clipping``: set it from
    ``train.max_grad_norm`` (0 = off), refusing an accelerate config that sets another value."""
    if plugin is None:
        return
    wanted = float(max_grad_norm or 0.0)
    current = plugin.deepspeed_config.get("gradient_clipping", "auto")
    if current not in ("auto", None) and float(current) != wanted:
        raise UserError(f"the DeepSpeed config sets gradient_clipping {current} but train.max_grad_norm is "
                        f"{max_grad_norm}: remove gradient_clipping from the accelerate config (the trainer "
                        "sets it)")
    plugin.deepspeed_config["gradient_clipping"] = wanted


def _checkpoint_trainable_only(accelerator, controlnet: torch.nn.Module) -> None:
    """Checkpoints hold the trainable network, not the frozen base (which the weight files give back):
    accelerate's model save/load is replaced by ``controlnet.safetensors`` (DeepSpeed and FSDP save their own
    way)."""
    from accelerate.utils import DistributedType
    from safetensors.torch import save_file

    from dispose.bases.training import controlnet_state
    from dispose.checkpoints import load_strict, read_state_dict

    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return

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


def _clip(accelerator, model, parameters: list[torch.nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """The global gradient norm before clipping (clipped to ``max_norm`` when given).  Under FSDP the norm is
    FSDP's own over every shard (accelerate's ``clip_grad_norm_`` falls back to a per-shard norm when the
    parameter list is not the whole wrapped model's); DeepSpeed clips inside its engine and reports its
    norm."""
    from accelerate.utils import DistributedType

    limit = max_norm if max_norm is not None else math.inf
    if accelerator.distributed_type == DistributedType.FSDP:
        accelerator.unscale_gradients()
        return model.clip_grad_norm_(limit)
    norm = accelerator.clip_grad_norm_(parameters, limit)
    return norm if norm is not None else torch.zeros(())  # DeepSpeed before its first step


def _log(accelerator, step: int, loss: float, schedule, grad_norm, elapsed: float, batch_size: int) -> None:
    values = {"train/loss": loss, "train/lr": schedule.get_last_lr()[0], "train/step_time_s": elapsed,
              "train/samples_per_s": batch_size / elapsed if elapsed > 0 else 0.0}
    if grad_norm is not None:
        values["train/grad_norm"] = float(grad_norm)
    if accelerator.device.type == "cuda":
        values["train/gpu_max_allocated_gb"] = torch.cuda.max_memory_allocated(accelerator.device) / 2 ** 30
    accelerator.log(values, step=step)


def save_checkpoint(accelerator, output_dir: Path, step: int, keep: int, *, use_ema: bool = False) -> Path:
    """``accelerate save_state`` into ``checkpoints/.checkpoint-STEP.partial`` (all processes),
    ``trainer_state.json`` last, then renamed to ``checkpoint-STEP``; keep the last ``keep``.  An interruption
    (Ctrl-C, SIGTERM, an error) removes the partial folder; one left by a killed process is removed by the
    next save."""
    from dispose.media.files import atomic_write_text

    folder = output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step}"
    partial = folder.with_name(f".{folder.name}.partial")
    try:
        if accelerator.is_main_process:
            for stale in folder.parent.glob(f".{CHECKPOINT_PREFIX}*.partial"):
                shutil.rmtree(stale, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(partial))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            atomic_write_text(partial / STATE_FILE, json.dumps({"step": step, "use_ema": use_ema}))
            if folder.exists():  # the same step saved by an earlier run that was resumed from before it
                shutil.rmtree(folder)
            partial.rename(folder)
            for old in checkpoints(output_dir / "checkpoints")[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    return folder


def _export(accelerator, base, model, ema, folder: Path, step: int) -> tuple[Path, ...]:
    """The base's export of the (EMA) ControlNet, full weights under FSDP, written by the main process."""
    paths: tuple[Path, ...] = ()
    controlnet = base.controlnet(accelerator.unwrap_model(model))
    accelerator.wait_for_everyone()
    with full_weights(accelerator, model):
        if accelerator.is_main_process:
            with _ema_weights(controlnet, ema):
                paths = base.export(controlnet, folder, {"step": str(step)})
    accelerator.wait_for_everyone()
    return paths


def full_weights(accelerator, model):
    """Context in which the unwrapped model holds its full weights: FSDP gathers the ControlNet's shards on
    every process (entered by all of them; changes are not written back); nothing to do otherwise."""
    import contextlib

    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:
        return contextlib.nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel.summon_full_params(model, writeback=False)


def master_weights(accelerator, controlnet) -> list[torch.Tensor]:
    """The ControlNet's float32 weights the optimiser updates: its parameters, or under DeepSpeed (whose
    module holds bf16/fp16 copies) the full float32 master weights
    (``deepspeed.utils.safe_get_full_fp32_param``, a collective: every process calls it)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return list(controlnet.parameters())
    from deepspeed.utils import safe_get_full_fp32_param

    return [safe_get_full_fp32_param(parameter) for parameter in controlnet.parameters()]


def _fsdp_settings(accelerator, model) -> None:
    """FSDP shards the trainable ControlNet only.  The frozen base and CMP go to ``ignored_modules`` (kept
    whole on every process in its bf16/fp16 dtype: FSDP cannot put it in one unit with the float32
    ControlNet); nothing is auto-wrapped, so the ControlNet is one unit, gathered for the training forward
    (its guidance encoders run outside its own ``forward``, which a unit of their own would not allow); the
    root's inputs keep their dtype (sigmas and noise stay float32).  FSDP2 (``fsdp_version: 2``) is refused:
    the trainer uses FSDP1's ``summon_full_params`` and ``clip_grad_norm_``."""
    import dataclasses

    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:
        return
    plugin = accelerator.state.fsdp_plugin
    if plugin.fsdp_version != 1:
        raise UserError(f"the accelerate config sets fsdp_version {plugin.fsdp_version}; dispose train "
                        "supports FSDP1 (fsdp_version: 1, as configs/accelerate/fsdp.yaml)")
    plugin.ignored_modules = model.untrained_modules()
    plugin.auto_wrap_policy = None
    if plugin.mixed_precision_policy is not None:
        plugin.mixed_precision_policy = dataclasses.replace(plugin.mixed_precision_policy,
                                                            cast_root_forward_inputs=False)


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


def run_validation(accelerator, pipeline, controlnet, ema, animate: Animate, output_dir: Path,
                   step: int) -> Path | None:
    """Animate with the current (EMA) weights on the main process; save the mp4 and log frames.  Returns the
    mp4."""
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
    """``animate(pipeline)`` for the config's held-out pair through the in-memory engine
    (:mod:`dispose.engine`): poses and DisPose guidance are computed now, once; each call samples at
    ``validation.resolution`` with the pipeline's current weights."""
    from dispose.engine import Animator, Runtime
    from dispose.guidance.stage import GuidanceModels
    from dispose.pipelines.weights import find_weights, resolve_weights
    from dispose.pose.detector_factory import load_detector

    settings = config.validation
    if settings.ref is None or settings.driving is None:
        raise UserError("validation.every is set but validation.ref / validation.driving are not: give a "
                        "held-out reference image and driving video, or set validation.every=0")
    found, _ = find_weights(config.weights.dir, {"cmp": config.weights.cmp}, ["dwpose", "cmp"])
    settings = replace(settings, detector={"auto": "dwpose" if found.dwpose else "mediapipe"}.get(
        settings.detector, settings.detector), dense={"auto": "cmp" if found.cmp else "propagate"}.get(
        settings.dense, settings.dense))  # "auto": animate's defaults if the run has their weights
    needed = (["sd15"] + (["cmp"] if settings.dense == "cmp" else [])
              + (["dwpose"] if settings.detector == "dwpose" else []))
    paths = resolve_weights(config.weights.dir, {"sd15": settings.sd15, "cmp": config.weights.cmp}, needed)
    detector = load_detector(dwpose_dir=paths.dwpose if settings.detector == "dwpose" else None,
                             device=str(device))
    dtype = {"no": "fp32"}.get(config.train.mixed_precision, config.train.mixed_precision)
    runtime = Runtime(device=str(device), dtype=dtype, detector=settings.detector, dense=settings.dense,
                      progress=False)
    engine = Animator.from_pipeline(None, base=config.base, runtime=runtime,
                                    guidance_models=GuidanceModels(detector=detector, cmp=paths.cmp,
                                                                   sd15=paths.sd15))
    tile = min(config.data.num_frames, settings.max_frames + 1)
    overlap = min(engine.base.defaults["frames_overlap"], tile - 1)
    given = {name: getattr(settings, name) for name in ("guidance_scale", "seed")
             if getattr(settings, name) is not None}  # unset (a section replaced in code): the base's
    job = engine.settings(resolution=settings.resolution, num_frames=tile, frames_overlap=overlap,
                          num_inference_steps=settings.num_inference_steps,
                          sample_stride=settings.sample_stride, max_frames=settings.max_frames, **given)
    guidance = engine.compute_guidance(settings.ref, settings.driving, settings=job)

    def animate(pipeline) -> np.ndarray:
        engine.pipeline = pipeline
        return engine.animate(guidance=guidance, settings=job).frames

    return animate
