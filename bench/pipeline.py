"""DisPose vs plain MimicMotion (the ``--baseline`` switch), and a saved guidance vs computing it: seconds per
frame, same job, one run, through the engine (:mod:`dispose.engine`).

Run by hand: ``python bench/pipeline.py [--frames 16] [--resolution 256] [--steps 4]``.  Builds the tiny
random weights of :mod:`dispose.bases.mimicmotion.tiny` in a temporary folder, loads them once, and animates
the shared dancer video with identical poses, steps, tiles and seed, in alternating rounds: with ``baseline``,
with DisPose (guidance encoded once per tile, the default), with DisPose re-encoding its guidance at every
step (``cache_guidance=False``; the release re-encodes at every step and for both CFG halves), and with
DisPose from a guidance computed beforehand (what ``dispose animate --guidance DIR`` does: no poses, DIFT or
dense field).  Prints seconds per output frame, the ratios, and where DisPose's extra time goes: DIFT,
motion fields, guidance encoding (motion encoder + point MLPs), ControlNet forward passes (both timed with
hooks inside sampling) and the rest.

The tiny models are far cheaper than the real ones relative to the guidance stages (DIFT, CMP/propagation,
pose detection do not shrink with them), so the ratio here overstates the overhead of the real pipeline;
the paper's figure is 2.36 / 1.61 = 1.47 at 576x1024 on a GPU.  The split is what this bench is for.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from timing import SHARED

from dispose.bases.mimicmotion.tiny import build_tiny_weights
from dispose.engine import Animator, Runtime


def _time_module(module: torch.nn.Module, totals: dict, key: str) -> None:
    def before(*_):
        totals[f"_{key}_start"] = time.perf_counter()

    def after(*_):
        totals[key] = totals.get(key, 0.0) + time.perf_counter() - totals.pop(f"_{key}_start")

    module.register_forward_pre_hook(before)
    module.register_forward_hook(after)


def _time_method(owner: object, name: str, totals: dict, key: str) -> None:
    method = getattr(owner, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start

    setattr(owner, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16, help="driving frames (after the stride)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dense", default="propagate", choices=("propagate", "none"))
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each; the fastest counts")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        root = build_tiny_weights(Path(folder) / "weights")
        runtime = Runtime(device="cpu", dtype="fp32", detector="mediapipe", dense=args.dense, progress=False)
        engine = Animator.load(weights=root, runtime=runtime)
        settings = engine.settings(resolution=args.resolution, max_frames=args.frames,
                                   num_inference_steps=args.steps)
        inputs = (SHARED / "musepose_ref.png", SHARED / "musepose_dance.mp4")
        saved = engine.compute_guidance(*inputs, settings=settings)
        totals: dict[str, float] = {}
        _time_module(engine.pipeline.controlnet, totals, "controlnet")
        _time_method(engine.pipeline.controlnet, "encode_guidance", totals, "encoding")
        runs = {"baseline": {"baseline": True}, "dispose": {}, "dispose_uncached": {}, "from_guidance": {}}
        results: dict[str, dict] = {}
        for _ in range(args.repeats):  # the first round also warms up MediaPipe and the kernels
            for name, change in runs.items():
                totals["controlnet"] = totals["encoding"] = 0.0
                runtime.cache_guidance = name != "dispose_uncached"
                start = time.perf_counter()
                result = engine.animate(*inputs, guidance=saved if name == "from_guidance" else None,
                                        settings=dataclasses.replace(settings, **change))
                meta = result.metadata
                run = {"total": time.perf_counter() - start, "dift": 0.0, "motion_fields": 0.0,
                       **meta["timings"], "controlnet": totals["controlnet"], "encoding": totals["encoding"],
                       "frames": meta["result"]["frames"], "tiles": meta["result"]["tiles"]}
                if name not in results or run["total"] < results[name]["total"]:
                    results[name] = run
    base, ours, uncached = results["baseline"], results["dispose"], results["dispose_uncached"]
    frames = ours["frames"]
    print(f"{frames} frames at resolution {args.resolution}, {ours['tiles']} tile(s), {args.steps} steps, "
          f"dense={args.dense}, tiny random models, CPU, fastest of {args.repeats} runs each")
    print(f"baseline (MimicMotion):              {base['total'] / frames:.3f} s/frame")
    print(f"DisPose (guidance encoded per tile): {ours['total'] / frames:.3f} s/frame")
    print(f"DisPose (guidance encoded per step): {uncached['total'] / frames:.3f} s/frame")
    print(f"DisPose from a saved guidance:       {results['from_guidance']['total'] / frames:.3f} s/frame "
          f"(one-shot / saved: {ours['total'] / results['from_guidance']['total']:.2f})")
    print(f"ratio DisPose / baseline: {ours['total'] / base['total']:.2f} (per step: "
          f"{uncached['total'] / base['total']:.2f}; paper, real models on GPU: 1.47)")
    print(f"guidance encoding: {uncached['encoding']:.2f} s per step -> {ours['encoding']:.2f} s per tile; "
          f"sampling {uncached['sampling']:.2f} s -> {ours['sampling']:.2f} s")
    extra = ours["total"] - base["total"]
    sampling_rest = ours["sampling"] - ours["controlnet"] - ours["encoding"] - base["sampling"]
    print(f"DisPose's extra time {extra:.2f} s:")
    for label, value in (("DIFT (SD1.5 features)", ours["dift"]), ("motion fields", ours["motion_fields"]),
                         ("guidance encoding (motion encoder, point MLPs)", ours["encoding"]),
                         ("ControlNet forward passes", ours["controlnet"]),
                         ("rest of sampling (guidance slicing, F_p grids)", sampling_rest),
                         ("poses, decoding, writing (difference)",
                          extra - ours["dift"] - ours["motion_fields"] - ours["encoding"] - ours["controlnet"]
                          - sampling_rest)):
        print(f"  {label:<48} {value:7.2f} s  ({100 * value / extra:5.1f} %)")


if __name__ == "__main__":
    main()
