"""What ``data.dense_field=cmp`` adds to a DisPose training step (MimicMotion base), against ``flow``.

1. FLOPs at full size (the paper's setting: 16 frames at 768x1024, one clip), counted by
   ``torch.utils.flop_counter.FlopCounterMode`` on the real networks built on the meta device (no weights, no
   memory): CMP (``resnet50_vip+mpii_liteflow``) encoding the reference once and decoding the 15 frames on its
   384 x 384 grid, against the rest of the step: the frozen VAE encoder (16 frames + the reference), CLIP
   ViT-H/14 and PoseNet under no_grad, and the ControlNet + UNet forward, backward and, with gradient
   checkpointing, the recomputed forward (counted as a second forward).
2. The tiny CPU ratio: one training step (forward + backward) of the tiny random models of
   :mod:`dispose.bases.mimicmotion.tiny` on one sample of the example clip (prepared at 64x64, 4 frames),
   ``cmp`` batch vs ``flow`` batch, interleaved, median of ``--repeats`` each.  CMP's cost does not shrink
   with the tiny models (it is the full network on its fixed 384 grid), so this ratio is large.

Run by hand from ``bench/``: ``python train_cmp_cost.py [--repeats 5] [--work DIR]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from timing import SHARED
from torch.utils.flop_counter import FlopCounterMode

from dispose.bases import training_base
from dispose.bases.mimicmotion.tiny import build_tiny_weights
from dispose.benchmark.train_memory import HALF, meta, networks
from dispose.cli import main as cli
from dispose.guidance.cmp import CMP, CMP_SIZE
from dispose.guidance.tiny import DIFT_CHANNELS
from dispose.models.hybrid_controlnet import EncodedGuidance
from dispose.training.config import TrainConfig
from dispose.training.dataset import TrainingDataset

FRAMES, WIDTH, HEIGHT = 16, 768, 1024


def flops(run) -> int:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def full_size() -> None:
    with torch.device("meta"):
        cmp = CMP()
    cmp = torch.nn.Module.to(cmp, dtype=torch.float32).eval()
    unet, controlnet, pose_net, vae, clip = networks()
    h, w = HEIGHT // 8, WIDTH // 8

    def run_cmp():
        with torch.no_grad():
            features = cmp.encode_image(meta(1, 3, CMP_SIZE, CMP_SIZE, dtype=torch.float32))
            cmp.predict_flow(features, meta(FRAMES - 1, 4, CMP_SIZE, CMP_SIZE, dtype=torch.float32))

    def run_frozen():
        with torch.no_grad():
            vae.encoder(meta(FRAMES + 1, 3, HEIGHT, WIDTH))
            clip(meta(1, 3, 224, 224))
            pose_net(meta(FRAMES, 3, HEIGHT, WIDTH))

    def run_denoiser(backward: bool):
        controlnet.requires_grad_(True)
        unet.requires_grad_(False)
        sample = meta(1, FRAMES, 8, h, w)
        timestep, context, time_ids = meta(1, dtype=torch.float32), meta(1, 1, 1024), meta(1, 3)
        flow = meta(FRAMES, 2, HEIGHT, WIDTH)
        motion = controlnet.controlnet_cond_embedding(flow, flow)
        guidance = EncodedGuidance(FRAMES, motion, None)
        down, mid = controlnet(sample, timestep, context, time_ids, guidance=guidance)
        out = unet(sample, timestep, context, time_ids, pose_latents=meta(FRAMES, 320, h, w),
                   down_block_additional_residuals=down, mid_block_additional_residual=mid,
                   return_dict=False)[0]
        if backward:
            out.float().square().mean().backward()

    cmp_flops = flops(run_cmp)
    frozen = flops(run_frozen)
    forward = flops(lambda: run_denoiser(False))
    forward_backward = flops(lambda: run_denoiser(True))
    step = frozen + forward_backward + forward  # + the recomputed forward of gradient checkpointing
    print(f"full size ({FRAMES} x {WIDTH}x{HEIGHT}, one clip): CMP {cmp_flops / 1e12:.2f} TFLOP (reference "
          f"encoded once, {FRAMES - 1} frames decoded at {CMP_SIZE}x{CMP_SIZE}); step without CMP "
          f"{step / 1e12:.1f} TFLOP (frozen VAE/CLIP/PoseNet {frozen / 1e12:.1f}, ControlNet + UNet forward "
          f"{forward / 1e12:.1f}, forward + backward {forward_backward / 1e12:.1f}, recomputed forward "
          f"{forward / 1e12:.1f}) -> CMP adds "
          f"{100 * cmp_flops / step:.2f} % (ratio cmp/flow {1 + cmp_flops / step:.4f})")


def tiny(work: Path, repeats: int) -> None:
    weights = work / "weights"
    if not (weights / "DisPose.pth").is_file():
        build_tiny_weights(weights)
    data = work / "dataset"
    if not (data / "manifest.jsonl").is_file():
        code = cli(["prepare", str(SHARED / "musepose_dance.mp4"), "--out", str(data), "--size", "64x64",
                    "--max-frames", "24", "--min-frames", "8", "--references", "2", "--flow-downscale", "1",
                    "--sd15", str(weights / "stable-diffusion-v1-5"), "--detector", "mediapipe",
                    "--no-progress"])
        if code:
            raise SystemExit(f"dispose prepare failed ({code})")
    config = TrainConfig.from_dict({"weights": {"dir": str(weights), "point_channels": DIFT_CHANNELS},
                                    "data": {"num_frames": 4, "width": 64, "height": 64,
                                             "dense_field": "cmp"},
                                    "train": {"mixed_precision": "no"}})
    model = training_base("mimicmotion").build(config)
    model.train()
    batches = {field: torch.utils.data.default_collate(
        [TrainingDataset(data, size=(64, 64), num_frames=4, dense_field=field, flip_probability=0)[0]])
        for field in ("cmp", "flow")}
    draw = model.draw(batches["flow"], torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {"cmp": [], "flow": []}
    for _ in range(repeats):
        for field, batch in batches.items():
            started = time.perf_counter()
            model(batch, draw).mean().backward()
            times[field].append(time.perf_counter() - started)
            model.controlnet.zero_grad(set_to_none=True)
    cmp_s, flow_s = (statistics.median(times[field]) for field in ("cmp", "flow"))
    print(f"tiny models on the CPU ({torch.get_num_threads()} threads), one step of one 4-frame 64x64 "
          "sample: "
          f"cmp {cmp_s:.2f} s, flow {flow_s:.2f} s (median of {repeats}, interleaved) -> ratio "
          f"{cmp_s / flow_s:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", help="working folder (kept; default: a new temporary folder)")
    args = parser.parse_args()
    full_size()
    tiny(Path(args.work or tempfile.mkdtemp(prefix="dispose-cmp-cost-")), args.repeats)


if __name__ == "__main__":
    assert HALF is torch.bfloat16
    main()
