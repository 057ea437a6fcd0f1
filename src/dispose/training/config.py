"""``dispose train`` settings: a YAML file (``configs/train/*.yaml``) of sections, each a dataclass below.

Unknown sections or keys are errors (a typo must not silently train with a default).  Command-line
``--set section.key=value`` overrides any entry (the value is parsed as YAML).  Every value is typed by its
field's annotation (:func:`dispose.validation.rule_for_annotation`: ``1e-3`` is a number, ``abc`` is not one,
booleans are true or false), the error naming the file and key or the ``--set`` entry.  The shipped
``configs/train/mimicmotion.yaml`` holds the paper's MimicMotion settings (sec. 5, "Implementation
details"): 16 frames, 768x1024, batch 8, learning rate 2e-5, 10,000 steps; AdamW (the paper names no
optimiser settings, warm-up or clipping: the defaults are diffusers' training-script defaults).

Batch: ``train.batch_size`` is the number of clips per optimiser step over all GPUs (the paper's 8);
``train.micro_batch_size`` clips go through one forward per GPU; the gradient accumulation is what makes
up the difference, ``batch_size / (micro_batch_size * processes)`` (must divide).  So one config gives the
paper's batch on 1, 2, 4 or 8 GPUs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dispose.bases import DEFAULT_BASE, get_base
from dispose.bases.training import DENSE_FIELDS
from dispose.errors import UserError
from dispose.pose.detector_factory import DETECTORS
from dispose.validation import rule_for_annotation, yaml_problem


@dataclass
class WeightsConfig:
    """Frozen base weights (``dispose.pipelines.weights`` layout) and an optional ControlNet to start from."""

    dir: str | None = None  # the release's pretrained_weights/ folder
    svd: str | None = None  # stable-video-diffusion-img2vid-xt-1-1 folder (VAE, CLIP, scheduler, UNet config)
    mimicmotion: str | None = None  # MimicMotion_1-1.pth
    controlnet: str | None = None  # a DisPose.pth to fine-tune; None = from the SVD UNet (paper)
    musepose: str | None = None  # MusePose base: the MusePose/ release folder
    sd_image_variations: str | None = None  # MusePose base: sd-image-variations-diffusers folder
    clip_image_encoder: str | None = None  # MusePose base: image_encoder folder
    sd_vae: str | None = None  # MusePose base: sd-vae-ft-mse folder
    point_channels: int = 1280  # width of the DIFT point embeddings (SD1.5 up block 1)
    cmp: str | None = None  # ckpt_iter_42000.pth.tar for data.dense_field=cmp (default: cmp/ under dir)


@dataclass
class DataConfig:
    root: str | None = None  # dataset folder written by `dispose prepare`
    num_frames: int = 16  # frames per sample, the reference frame included (one inference tile)
    width: int = 768
    height: int = 1024
    flip_probability: float = 0.5  # random horizontal flip (poses, flows and keypoint labels flip with it)
    num_workers: int = 4
    samples_per_clip: int = 1  # draws of every clip per epoch (the dataset's length is clips x this)
    dense_field: str = "cmp"  # F_d: cmp (CMP on watershed samples of the flow, App. A) | flow (raw flow)
    detector: str = "dwpose"  # the detector the dataset must have been prepared with (dwpose | mediapipe)


@dataclass
class TrainSettings:
    max_steps: int = 10_000
    batch_size: int = 8  # clips per optimiser step, all GPUs together
    micro_batch_size: int = 1  # clips per forward per GPU
    learning_rate: float = 2e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    use_8bit_adam: bool = False  # bitsandbytes AdamW8bit (CUDA only)
    lr_scheduler: str = "constant"  # any diffusers.optimization.get_scheduler name
    lr_warmup_steps: int = 0
    max_grad_norm: float | None = 1.0  # None: no clipping
    mixed_precision: str = "bf16"  # no | fp16 | bf16
    gradient_checkpointing: bool = True
    use_ema: bool = False
    ema_decay: float = 0.9999
    seed: int = 42
    vae_encode_chunk: int = 8  # frames per VAE encoder call (memory)
    max_nonfinite_steps: int = 10  # stop after this many steps in a row with a non-finite loss or gradient
    allow_tf32: bool = True  # TF32 matmuls and convolutions on CUDA

    def __post_init__(self) -> None:
        if self.mixed_precision is False:  # YAML reads a bare `no` as false
            self.mixed_precision = "no"


@dataclass
class LossConfig:
    p_mean: float = 0.7  # log-normal sigma sampling (dispose.bases.mimicmotion.loss)
    p_std: float = 1.6
    conditioning_dropout: float = 0.1  # probability of a clip trained as the CFG unconditional half
    fps: int = 7  # the conditioning the UNet sees at inference: added time ids [fps - 1, bucket, noise aug]
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.0
    # MusePose base only (dispose.bases.musepose.loss): offset noise, min-SNR gamma
    noise_offset: float = 0.05
    snr_gamma: float = 5.0


@dataclass
class CheckpointConfig:
    every: int = 500  # accelerate save_state every N optimiser steps
    keep: int = 3  # keep the last K states
    export_every: int = 0  # also export DisPose.pth every N steps (0: only at the end)


@dataclass
class ValidationConfig:
    every: int = 0  # animate the held-out pair every N steps (0: never)
    ref: str | None = None
    driving: str | None = None
    resolution: int = 256
    max_frames: int = 16
    sample_stride: int = 2
    num_inference_steps: int = 10
    guidance_scale: float | None = None  # None: the base's (dispose.bases: Base.defaults)
    detector: str = "auto"  # dwpose | mediapipe | auto: dwpose when weights.dir holds it (as dispose animate)
    dense: str = "auto"  # cmp | propagate | none | auto: cmp when its checkpoint is found (as animate)
    sd15: str | None = None  # SD1.5 folder for DIFT (default: under weights.dir)
    seed: int | None = None  # None: the base's (dispose.bases: Base.defaults)
    loss_every: int = 0  # held-out loss at fixed noise every N steps (0: never; dispose.training.heldout)
    loss_data: str | None = None  # held-out dataset folder written by `dispose prepare`
    loss_samples: int = 5  # held-out samples per evaluation (one forward each)


@dataclass
class LoggingConfig:
    every: int = 10  # TensorBoard scalars every N optimiser steps
    samples: bool = False  # write what each process consumed to OUT/logs/samples-rankR.jsonl (debugging)


@dataclass
class TrainConfig:
    base: str = DEFAULT_BASE
    output_dir: str = "runs/dispose"
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    loss: LossConfig = field(default_factory=LossConfig)
    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        """Validation settings left unset take the base's sampling defaults (a UserError for an unknown
        base)."""
        defaults = get_base(self.base).defaults
        for name in ("guidance_scale", "seed"):
            if getattr(self.validation, name) is None:
                setattr(self.validation, name, defaults[name])

    @classmethod
    def from_dict(cls, data: dict, origin: str = "config") -> TrainConfig:
        """Build from nested dicts, rejecting unknown sections and keys."""
        return _build(cls, data or {}, origin)

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] | None = None, *,
             base: str | None = None) -> TrainConfig:
        """The YAML file (or the defaults with ``path=None``) with ``section.key=value`` overrides applied and
        ``base`` (``--base``) over the file's: settings derived from the base are derived from that one."""
        data: dict = {}
        if path is not None:
            path = Path(path)
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except OSError as error:
                raise UserError(f"--config {path}: cannot read it ({error})") from None
            except yaml.YAMLError as error:
                raise UserError(f"--config {path}: not valid YAML ({yaml_problem(error)})") from None
            if not isinstance(data, dict):
                raise UserError(f"--config {path}: expected a mapping of sections, got {type(data).__name__}")
        given = {apply_override(data, item) for item in overrides or []}
        if base is not None:
            data["base"] = base
        config = _build(cls, data, str(path) if path else "config", overridden=given)
        config.check()
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Value checks that do not need the launch (batch divisibility is checked by the trainer)."""
        train = self.train
        if train.mixed_precision not in ("no", "fp16", "bf16"):
            raise UserError(f"train.mixed_precision must be no, fp16 or bf16, got {train.mixed_precision!r}")
        for name in ("max_steps", "batch_size", "micro_batch_size", "vae_encode_chunk",
                     "max_nonfinite_steps"):
            if getattr(train, name) < 1:
                raise UserError(f"train.{name} must be at least 1, got {getattr(train, name)}")
        if self.data.num_frames < 2:
            raise UserError(f"data.num_frames must be at least 2 (reference + one frame), "
                            f"got {self.data.num_frames}")
        if self.data.samples_per_clip < 1:
            raise UserError(f"data.samples_per_clip must be at least 1, got {self.data.samples_per_clip}")
        for key, allowed in (("dense_field", DENSE_FIELDS), ("detector", DETECTORS)):
            if getattr(self.data, key) not in allowed:
                raise UserError(f"data.{key} must be {' or '.join(allowed)}, got {getattr(self.data, key)!r}")
        if self.data.width % 64 or self.data.height % 64:
            raise UserError(f"data.width/height must be multiples of 64, "
                            f"got {self.data.width}x{self.data.height}")
        if not 0.0 <= self.loss.conditioning_dropout < 1.0:
            raise UserError(f"loss.conditioning_dropout must be in [0, 1), "
                            f"got {self.loss.conditioning_dropout}")
        if self.validation.loss_samples < 1:
            raise UserError(f"validation.loss_samples must be at least 1, got {self.validation.loss_samples}")
        if self.checkpoints.keep < 1:
            raise UserError(f"checkpoints.keep must be at least 1, got {self.checkpoints.keep}")
        for name in ("learning_rate", "adam_epsilon"):  # the optimiser would refuse them after models load
            if not getattr(train, name) > 0:
                raise UserError(f"train.{name} must be above 0, got {getattr(train, name)}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(train, name) < 1:
                raise UserError(f"train.{name} must be in [0, 1), got {getattr(train, name)}")


def apply_override(data: dict, item: str) -> str:
    """``section.key=value`` (value parsed as YAML) into nested ``data``; returns ``section.key``."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise UserError(f"--set {item!r}: expected section.key=value, e.g. train.max_steps=100")
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {item!r}: {part} is not a section")
    try:
        node[leaf] = yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise UserError(f"--set {item!r}: not a YAML value ({yaml_problem(error)})") from None
    return key.strip()


def _build(cls, data: dict, where: str, prefix: str = "", overridden: set[str] = frozenset()):
    """``cls`` from ``data`` (from ``where``), each value typed by its field's annotation; a value that came
    from ``--set`` (its dotted key in ``overridden``) is named as such in errors."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    values = {}
    for name, value in data.items():
        default = (fields[name].default_factory if fields[name].default_factory is not dataclasses.MISSING
                   else None)
        if default is not None and dataclasses.is_dataclass(default):
            values[name] = _build(default, value or {}, f"{where}: {name}", f"{prefix}{name}.", overridden)
            continue
        rule = rule_for_annotation(fields[name].type)
        if rule is None or (rule.kind is str and isinstance(value, bool)):  # YAML's bare `no` (precision)
            values[name] = value
        else:
            key = f"{prefix}{name}"
            values[name] = rule.check(value, f"--set {key}" if key in overridden else f"{where}: {name}")
    return cls(**values)
