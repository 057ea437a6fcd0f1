"""Does ``dispose train`` learn?  Tiny random models, one short real clip at 64x64, a few hundred CPU steps.

1. Tiny random weights in the release layout (:mod:`dispose.bases.mimicmotion.tiny`, with a random CMP); the
   example dancer (``musepose_dance.mp4``) prepared by ``dispose prepare`` at 64x64 (MediaPipe poses, OpenCV
   DIS flow, DIFT from the tiny SD1.5); samples of 4 frames ([reference, 3 frames]), no flip.  ``F_d`` is
   ``--dense-field``: ``cmp`` (the random CMP on the watershed samples, as ``data.dense_field=cmp``) or
   ``flow`` (the stored flow).
2. ``dispose.training.trainer.train`` from the zero-initialised ControlNet (``from_unet``) on that clip.
   Every ``--eval-every`` steps the loss is evaluated on fixed samples with fixed sigmas (0.2 .. 20,
   log-spaced) and fixed noise, so the curve shows learning, not the randomness of the training draws.  The
   learning rate is 1e-3 (the paper's 2e-5 is for 10,000 steps of batch 8 on full-size models; this is a few
   hundred steps of batch 1 on tiny ones).
3. The exported ``DisPose.safetensors`` and the zero-initialised ControlNet each animate the example
   reference + driving video through ``dispose animate`` (same seed, 256 px: MediaPipe finds no person in a
   64 px reference; 3 driving frames, 4 steps): the trained checkpoint must load strictly and change the
   output (the zero ControlNet adds nothing to the UNet).

Prints the loss drop (%) from step 0 and the time; writes the curve to ``docs/training_loss_FIELD.png``.  Run
by hand: ``python bench/train_learning.py [--dense-field cmp|flow] [--steps 300] [--work DIR]``
(``flow``: about 10-20 minutes on 2 CPU cores; ``cmp`` runs the full-size CMP on a 384 grid every step,
several times longer).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import SHARED

from dispose.bases import training_base
from dispose.bases.mimicmotion.tiny import build_tiny_weights
from dispose.bases.training import DENSE_FIELDS, export_controlnet
from dispose.cli import main as cli
from dispose.guidance.tiny import DIFT_CHANNELS
from dispose.media.video import read_video
from dispose.training.config import TrainConfig
from dispose.training.dataset import TrainingDataset
from dispose.training.heldout import EVAL_SIGMAS, HeldOutLoss
from dispose.training.trainer import train

SIZE, FRAMES = 64, 4
DOCS = Path(__file__).resolve().parents[1] / "docs"


def prepare(work: Path, weights: Path) -> Path:
    dataset = work / "dataset"
    code = cli(["prepare", str(SHARED / "musepose_dance.mp4"), "--out", str(dataset),
                "--size", f"{SIZE}x{SIZE}", "--max-frames", "24", "--min-frames", "8", "--references", "2",
                "--flow-downscale", "1", "--sd15", str(weights / "stable-diffusion-v1-5"),
                "--detector", "mediapipe", "--no-progress"])
    if code:
        raise SystemExit(f"dispose prepare failed ({code})")
    return dataset


def config(work: Path, weights: Path, steps: int, field: str) -> TrainConfig:
    return TrainConfig.from_dict({
        "output_dir": str(work / f"run-{field}"),
        "weights": {"dir": str(weights), "point_channels": DIFT_CHANNELS},
        "data": {"num_frames": FRAMES, "width": SIZE, "height": SIZE, "num_workers": 0,
                 "flip_probability": 0.0, "dense_field": field, "detector": "mediapipe"},
        "train": {"max_steps": steps, "batch_size": 1, "learning_rate": 1e-3, "mixed_precision": "no",
                  "gradient_checkpointing": False, "lr_warmup_steps": 10},
        "loss": {"conditioning_dropout": 0.0}, "checkpoints": {"every": steps}, "logging": {"every": 10}})


class FixedEvaluation:
    """The held-out loss the trainer logs (:class:`dispose.training.heldout.HeldOutLoss`: fixed samples, one
    per sigma of ``EVAL_SIGMAS``, fixed noise), as an ``on_step`` callback."""

    def __init__(self, dataset) -> None:
        self.loss = HeldOutLoss(dataset, count=len(EVAL_SIGMAS))
        self.curve: list[tuple[int, float]] = []
        self.every = 1

    def __call__(self, step: int, model) -> None:
        if step % self.every:
            return
        loss = self.loss(model)
        self.curve.append((step, loss))
        print(f"step {step:4d}  fixed-sigma loss {loss:.5f}", flush=True)


def animate(weights: Path, checkpoint: Path, out: Path) -> np.ndarray:
    code = cli(["animate", "--ref", str(SHARED / "musepose_ref.png"),
                "--driving", str(SHARED / "musepose_dance.mp4"),
                "--weights", str(weights), "--dispose-ckpt", str(checkpoint), "--out", str(out),
                "--resolution", "256", "--max-frames", str(FRAMES - 1), "--num-frames", str(FRAMES),
                "--frames-overlap", "1", "--steps", "4", "--detector", "mediapipe", "--dense", "propagate",
                "--device", "cpu", "--no-progress"])
    if code:
        raise SystemExit(f"dispose animate failed ({code})")
    return read_video(out, sample_stride=1).frames.astype(np.float32)


def plot(curve: list[tuple[int, float]], path: Path, drop: float, field: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = zip(*curve)
    figure, axis = plt.subplots(figsize=(6, 3.4), dpi=120)
    axis.plot(steps, losses, marker="o", markersize=3)
    axis.set_xlabel("optimiser step (batch 1, lr 1e-3)")
    axis.set_ylabel("EDM loss at fixed sigmas + noise")
    axis.set_title(f"dispose train, tiny random models, 64x64 dancer clip, F_d = {field}: -{drop:.0f}%",
                   fontsize=9)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def run(args: argparse.Namespace) -> None:
    work = Path(args.work or tempfile.mkdtemp(prefix="dispose-train-learning-"))
    weights = work / "weights"
    if not (weights / "DisPose.pth").is_file():
        build_tiny_weights(weights)
    dataset_dir = (work / "dataset" if (work / "dataset" / "manifest.jsonl").is_file()
                   else prepare(work, weights))
    dataset = TrainingDataset(dataset_dir, size=(SIZE, SIZE), num_frames=FRAMES, flip_probability=0.0,
                              samples_per_clip=8, dense_field=args.dense_field)
    settings = config(work, weights, args.steps, args.dense_field)
    start_model = training_base("mimicmotion").build(settings)
    zero = export_controlnet(start_model.controlnet, work / "zero")[1]
    evaluation = FixedEvaluation(dataset)
    evaluation.every = args.eval_every
    started = time.perf_counter()
    result = train(settings, dataset=dataset, on_step=evaluation, cpu=True)
    seconds = time.perf_counter() - started
    first, last = evaluation.curve[0][1], evaluation.curve[-1][1]
    best = min(loss for _, loss in evaluation.curve)
    drop = 100 * (1 - last / first)
    print(f"\nfixed-sigma loss: step 0 {first:.5f} -> step {result.step} {last:.5f} (-{drop:.1f} %, best "
          f"-{100 * (1 - best / first):.1f} %) in {result.step} steps, {seconds:.0f} s "
          f"({seconds / result.step:.2f} s/step, CPU)")
    figure = DOCS / f"training_loss_{args.dense_field}.png"
    plot(evaluation.curve, figure, drop, args.dense_field)
    print(f"wrote {figure}")

    trained = animate(weights, result.exported[1], work / f"trained-{args.dense_field}.mp4")
    untrained = animate(weights, zero, work / "zero.mp4")
    difference = np.abs(trained - untrained).mean()
    print(f"dispose animate with the exported checkpoint vs the zero-initialised ControlNet: "
          f"mean |difference| {difference:.2f} of 255 over {len(trained)} frames "
          f"({'changed' if difference > 0 else 'UNCHANGED'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dense-field", choices=DENSE_FIELDS, default="cmp", help="F_d in training (cmp)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--work", help="working folder (kept; default: a new temporary folder)")
    run(parser.parse_args())
