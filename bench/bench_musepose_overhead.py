"""DisPose's overhead over plain MusePose per sampling step (run by hand).

1. Measured, tiny random weights (:mod:`dispose.bases.musepose.tiny`), CPU: plain MusePose and DisPose on the
   same inputs and seed, runs interleaved, time per denoising step (latents out, no decoding); prints min and
   median of each and their ratio.
2. Estimated, full size: forward FLOPs of the denoising UNet (with reference attention), of the reference UNet
   and of the SD1.5 hybrid ControlNet for one window of ``--window`` frames with classifier-free guidance,
   counted by ``torch.utils.flop_counter`` on meta-device models (no weights, no memory), at the paper's
   Table 7 size (576x1024); the paper's 3.37 s/frame for MusePose scaled by the FLOP ratio gives a DisPose
   estimate.

    python bench/bench_musepose_overhead.py [--runs 5] [--steps 3] [--frames 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

PAPER_MUSEPOSE_SECONDS_PER_FRAME = 3.37


def measured(runs: int, steps: int, frames: int) -> None:
    from dispose.bases.musepose.tiny import build_tiny_musepose_weights
    from dispose.bases.musepose.weights import load_pipeline
    from dispose.guidance.stage import GuidanceTensors

    size = 64
    with tempfile.TemporaryDirectory() as folder:
        root = build_tiny_musepose_weights(folder, dift=False)
        pipe = load_pipeline({"musepose": root / "MusePose",
                              "sd_image_variations": root / "sd-image-variations-diffusers",
                              "clip_image_encoder": root / "image_encoder", "sd_vae": root / "sd-vae-ft-mse",
                              "dispose_musepose": root / "DisPose_MusePose.pth"})
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=generator)
    poses = torch.rand(frames + 1, 3, size, size, generator=generator) * 2 - 1
    points = torch.rand(frames + 1, 18, 2, generator=generator)
    guidance = GuidanceTensors(points * size, torch.ones(frames + 1, 18, dtype=torch.bool), points,
                               torch.randn(frames, 2, size, size, generator=generator), torch.randn(18, 32),
                               size, size)
    settings = {"num_inference_steps": steps, "context_frames": frames, "context_overlap": 1,
                "output_type": "latent"}
    times: dict[str, list[float]] = {"musepose": [], "dispose": []}
    for run in range(runs + 1):  # the first round warms up
        for name, extra in (("musepose", None), ("dispose", guidance)):
            start = time.perf_counter()
            pipe(image, poses, extra, generator=torch.Generator().manual_seed(1), **settings)
            if run:
                times[name].append((time.perf_counter() - start) / steps)
    print(f"tiny models, {frames} frames, {steps} steps, {runs} interleaved runs (s/step):")
    for name, values in times.items():
        print(f"  {name:<9} min {min(values):.3f}  median {statistics.median(values):.3f}")
    print(f"  DisPose / MusePose: min {min(times['dispose']) / min(times['musepose']):.3f}  "
          f"median {statistics.median(times['dispose']) / statistics.median(times['musepose']):.3f}")


def full_size_flops(window: int, height: int, width: int) -> None:
    from accelerate import init_empty_weights
    from torch.utils.flop_counter import FlopCounterMode

    from dispose.bases.musepose.weights import SD_IMAGE_VARIATIONS_UNET_CONFIG as CONFIG
    from dispose.models.controlnet_sd import HybridControlNetSD
    from dispose.models.musepose.denoising_unet import MusePoseDenoisingUNet, motion_config_from_sd
    from dispose.models.musepose.reference import MusePoseReferenceUNet, connect_reference_attention

    with init_empty_weights(include_buffers=True):
        denoising = MusePoseDenoisingUNet.from_config(motion_config_from_sd(CONFIG))
        reference = MusePoseReferenceUNet.from_config(CONFIG)
        controlnet = HybridControlNetSD.from_unet(denoising, load_weights_from_unet=False)
    bank = connect_reference_attention(reference, denoising)
    meta = {"device": "meta"}
    h, w = height // 8, width // 8
    context = torch.empty(2, 1, 768, **meta)
    counts = {}
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            reference(torch.empty(1, 4, h, w, **meta), 0, encoder_hidden_states=context[:1])
        counts["reference UNet (once per video)"] = counter.get_total_flops()
        bank.reads = [None, 0]
        sample = torch.empty(2, 4, window, h, w, **meta)
        pose = torch.empty(2, 320, window, h, w, **meta)
        with FlopCounterMode(display=False) as counter:
            denoising(sample, 10, context, pose_features=pose)
        counts["denoising UNet"] = counter.get_total_flops()
        # The point MLPs (18 points a frame) are left out: their gather is data-dependent (no meta kernel).
        with FlopCounterMode(display=False) as counter:
            guidance = controlnet.encode_guidance(torch.empty(window, 2, height, width, **meta))
        counts["motion encoder (once per window)"] = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            controlnet(sample.transpose(1, 2), 10, context, guidance=guidance)
        counts["hybrid ControlNet"] = counter.get_total_flops()
    print(f"full size, {width}x{height}, one window of {window} frames with CFG (batch 2), forward FLOPs:")
    for name, flops in counts.items():
        print(f"  {name:<32} {flops / 1e12:9.2f} TFLOP   {flops / 1e12 / window:7.3f} TFLOP/frame")
    ratio = (counts["denoising UNet"] + counts["hybrid ControlNet"]) / counts["denoising UNet"]
    print(f"  (UNet + ControlNet) / UNet per step: {ratio:.3f}")
    print(f"  paper Table 7: MusePose {PAPER_MUSEPOSE_SECONDS_PER_FRAME} s/frame -> DisPose on MusePose ~"
          f"{PAPER_MUSEPOSE_SECONDS_PER_FRAME * ratio:.2f} s/frame if time follows FLOPs "
          "(guidance extraction not included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--window", type=int, default=48, help="frames per window for the FLOP count")
    parser.add_argument("--skip-measured", action="store_true")
    args = parser.parse_args()
    if not args.skip_measured:
        measured(args.runs, args.steps, args.frames)
    full_size_flops(args.window, height=1024, width=576)  # Table 7: 576x1024 (portrait)


if __name__ == "__main__":
    main()
