"""Full-size cost model of DisPose on MimicMotion: FLOPs and memory per denoising step and per stage, and the
predicted DisPose / MimicMotion time ratio next to the paper's Table 7.

Every network is built at full size on the meta device (no weights, no memory, seconds to run): MimicMotion's
SVD-xt UNet (``SVD_XT_UNET_CONFIG``), DisPose's hybrid ControlNet (``HybridControlNetSVD.from_unet``), the
motion encoder, PoseNet, SVD's temporal VAE decoder, CMP, and the SD1.5 UNet that DIFT stops after up block 1.
FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions, 2 per
multiply-add); attention is counted as one fused kernel (FlashAttention: ``2 * B * heads * Lq * Lk * (d_qk +
d_v)`` FLOPs, no ``Lq x Lk`` matrix in memory).  Activation memory is the peak of the live tensors a forward
call creates (each freed when its last reference goes), fp16.  The point encoder's shapes depend on the
data, so it is counted on the CPU on 16 random correspondence grids.

Settings (the release's ``configs/test.yaml``): 576x1024 (latents 72x128), 25 steps, tiles of 16 frames
overlapping by 6, classifier-free guidance as one batch of 2, fp16.  Time is assumed proportional to FLOPs
(the sampling is compute-bound at this size on a GPU); stages whose cost is the same with and without
DisPose (pose detection, CLIP, VAE encoding of the reference) are left out of both sides, which slightly
overstates the ratio.  Run by hand: ``python bench/cost_model.py [--frames 100]`` (about a minute on a CPU);
``--resolution 128 --tile-frames 5`` evaluates it at the size of a small run (``dispose benchmark speed
--resolution 128 --frames 4`` prints the measured per-step ratio beside the same prediction).  The counting
modes and the per-step calls live in :mod:`dispose.benchmark.flops`.
"""

from __future__ import annotations

import argparse
import math

import diffusers
import torch
from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from dispose.benchmark.flops import FusedAttention, build, measure, meta, svd_networks, svd_step, weight_bytes
from dispose.benchmark.paper import TABLE7
from dispose.guidance.cmp import CMP
from dispose.guidance.correspondence import correspondence_map
from dispose.media.geometry import target_size
from dispose.models.pose_net import PoseNet
from dispose.pipelines.tiling import tile_indices

#: s/frame at 576x1024, the paper's Table 7
PAPER_MIMICMOTION, PAPER_DISPOSE = (TABLE7["mimicmotion"][row][2] for row in ("base", "dispose"))
GB = 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100,
                        help="driving frames of the video (per-video costs)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--resolution", type=int, default=576,
                        help="generation size of a portrait video (576: 576x1024, 128: 128x192)")
    parser.add_argument("--tile-frames", type=int, default=16,
                        help="frames per tile (a video shorter than a tile is one tile of its length)")
    args = parser.parse_args()
    diffusers.utils.logging.set_verbosity_error()
    width, height = target_size(9, 16, args.resolution)
    tile, overlap, cfg = args.tile_frames, min(6, args.tile_frames - 1), 2
    lat_h, lat_w = height // 8, width // 8
    tiles = len(tile_indices(args.frames + 1, tile, overlap))

    unet, controlnet = svd_networks()
    step = svd_step(unet, controlnet, width, height, tile, cfg)
    rows = dict(step["rows"])
    sample, timestep, context, time_ids = step["inputs"]
    guidance, motion, levels = step["guidance"], step["motion"], step["levels"]
    down, mid = step["residuals"]
    with torch.device("meta"):
        residual_bytes = sum(t.numel() for t in (*down, mid)) * 2
        controlnet_blocks = block_split(controlnet, sample, timestep, context, time_ids, guidance)
        pose_net = build(PoseNet)
        rows["PoseNet (per tile)"] = measure(lambda: pose_net(meta(tile, 3, height, width)))[:2]
        vae = build(AutoencoderKLTemporalDecoder, block_out_channels=(128, 256, 512, 512),
                    down_block_types=("DownEncoderBlock2D",) * 4, layers_per_block=2, latent_channels=4)
        rows["VAE decode (per 8-frame chunk)"] = measure(lambda: vae.decode(meta(8, 4, lat_h, lat_w),
                                                                            num_frames=8))[:2]
        cmp = build(CMP)
        features = cmp.encode_image(meta(1, 3, 384, 384))
        rows["CMP image encoder (per video)"] = measure(
            lambda: cmp.encode_image(meta(1, 3, 384, 384)))[:2]
        rows["CMP flow decoder (per frame)"] = measure(
            lambda: cmp.predict_flow(features, meta(1, 4, 384, 384)))[:2]
        sd = build(UNet2DConditionModel, cross_attention_dim=768, sample_size=64)
        rows["DIFT SD1.5 UNet to up block 1 (per video, 8 members)"] = measure(
            lambda: dift_forward(sd, meta(8, 4, lat_h, lat_w), meta(8, 77, 768)))[:2]
        sd_vae = build(AutoencoderKL, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                       down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        rows["DIFT SD1.5 VAE encoder (per video)"] = measure(
            lambda: sd_vae.encode(meta(1, 3, height, width)))[:2]
    point = point_encoder_cost(controlnet, tile, height, width)
    rows["point encoder (per tile, occupied cells)"] = point
    rows["point encoder (per tile, release's dense grid)"] = (
        dense_point_flops(controlnet, tile, height, width), 0.0)
    rows["F_s on the device (per tile)"] = (2 * tile * 2 * height * width * 18, 4 * tile * 2 * height * width)

    print(f"{width}x{height}, {args.steps} steps, tiles of {tile} overlapping by {overlap} ({tiles} tiles "
          f"for {args.frames} driving frames), CFG batch {cfg}, fp16, full-size networks on the meta device")
    print(f"weights (fp16): UNet {weight_bytes(unet) / GB:.2f} GB "
          f"({sum(p.numel() for p in unet.parameters()):,} parameters), "
          f"hybrid ControlNet {weight_bytes(controlnet) / GB:.2f} GB "
          f"({sum(p.numel() for p in controlnet.parameters()):,})")
    print(f"{'stage':56s} {'TFLOP':>9s} {'peak act. GB':>13s}")
    for name, (flops, peak) in rows.items():
        print(f"{name:56s} {flops / 1e12:9.3f} {peak / GB:13.2f}")
    unet_peak, control_peak = (rows["UNet + residuals (per step)"][1],
                               rows["ControlNet (per step, CFG batch)"][1])
    baseline = weight_bytes(unet) + rows["UNet alone (per step)"][1]
    dispose = weight_bytes(unet) + weight_bytes(controlnet) + max(control_peak, unet_peak + residual_bytes)
    cached = (motion.numel() + sum(t.numel() for t in levels.values())) * 2
    print(f"per step, weights + peak activations: MimicMotion {baseline / GB:.2f} GB; "
          f"DisPose {dispose / GB:.2f} GB (the ControlNet's residuals, {residual_bytes / GB:.2f} GB, live "
          f"through the UNet call), plus the cached guidance encodings of one tile ({cached / GB:.2f} GB)")
    report_ratio(rows, controlnet_blocks, tiles, args.frames, args.steps)


def dift_forward(unet: UNet2DConditionModel, latents: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    from dispose.guidance.dift import _StopForward

    def stop(_module, _args, output):
        raise _StopForward(output)

    handle = unet.up_blocks[1].register_forward_hook(stop)
    try:
        unet(latents, torch.tensor(261, device="meta"), encoder_hidden_states=prompt)
    except _StopForward as stopped:
        return stopped.output
    finally:
        handle.remove()
    raise RuntimeError("up block 1 did not run")


def block_split(controlnet, sample, timestep, context, time_ids, guidance) -> dict[str, float]:
    """FLOPs of the ControlNet per part, and of its layers before the first cross-attention."""
    with torch.no_grad(), FusedAttention() as attention, FlopCounterMode(display=False) as counter:
        controlnet(sample, timestep, context, time_ids, guidance=guidance)
    per_module = counter.get_flop_counts()
    total = counter.get_total_flops() + attention.flops

    def module_flops(prefix: str) -> float:
        return sum(per_module.get(f"HybridControlNetSVD.{prefix}", {}).values())

    first_block = controlnet.down_blocks[0]
    before_cross = module_flops("conv_in") + module_flops("down_blocks.0.resnets.0")
    cross = sum(1 for name, _ in first_block.named_modules() if name.endswith("attn2"))
    return {"total": total, "before first cross-attention": before_cross, "cross-attention layers": cross,
            "blocks with cross-attention": sum(getattr(b, "has_cross_attention", False)
                                               for b in controlnet.down_blocks) + 1}


def point_encoder_cost(controlnet, tile: int, height: int, width: int) -> tuple[float, float]:
    encoder = controlnet.point_adapter
    cpu = type(encoder)(encoder.embedding_channels, [m.mlp[2].out_features for m in encoder.model_list],
                        encoder.model_list[0].mlp[0].out_features)
    features, mask = correspondence_map(torch.randn(18, 1280), torch.rand(tile, 18, 2),
                                        torch.ones(tile, 18, dtype=torch.bool), (width, height))
    sizes = [(height // d, width // d) for d in (16, 32, 64, 64)]
    flops, peak, _ = measure(lambda: cpu(features, mask, sizes))
    return flops, peak / 2  # fp32 on the CPU; fp16 in the pipeline


def dense_point_flops(controlnet, tile: int, height: int, width: int) -> float:
    cells = tile * (height // 16) * (width // 16)
    per_cell = sum(m.mlp[0].in_features * m.mlp[0].out_features + m.mlp[2].in_features * m.mlp[2].out_features
                   for m in controlnet.point_adapter.model_list)
    return 2.0 * cells * per_cell


def report_ratio(rows: dict, split: dict, tiles: int, frames: int, steps: int) -> None:
    flops = {name: value[0] for name, value in rows.items()}
    unet, unet_res, control = (flops["UNet alone (per step)"], flops["UNet + residuals (per step)"],
                               flops["ControlNet (per step, CFG batch)"])
    decode = flops["VAE decode (per 8-frame chunk)"] * math.ceil((frames + 1) / 8)
    common = tiles * steps * unet + tiles * flops["PoseNet (per tile)"] + decode
    per_tile_guidance = (flops["motion encoder (per tile)"]
                         + flops["point encoder (per tile, occupied cells)"]
                         + flops["F_s on the device (per tile)"])
    per_video = (flops["DIFT SD1.5 UNet to up block 1 (per video, 8 members)"]
                 + flops["DIFT SD1.5 VAE encoder (per video)"] + flops["CMP image encoder (per video)"]
                 + frames * flops["CMP flow decoder (per frame)"])
    extra_sampling = tiles * steps * (control + unet_res - unet)

    def ratio(sampling_extra: float, guidance_per_tile: float) -> float:
        return (common + sampling_extra + tiles * guidance_per_tile + per_video) / common

    release_guidance = 2 * steps * (flops["motion encoder (per tile)"]
                                    + flops["point encoder (per tile, release's dense grid)"])
    print("\nPer denoising step of one tile: ControlNet / UNet = "
          f"{control / unet:.3f}; (UNet + residuals + ControlNet) / UNet = {(unet_res + control) / unet:.3f}")
    print(f"Whole job, {frames} driving frames, time taken proportional to FLOPs:")
    print(f"  MimicMotion: {common / 1e12:8.1f} TFLOP; DisPose adds sampling {extra_sampling / 1e12:.1f}, "
          f"guidance encoders {tiles * per_tile_guidance / 1e12:.2f} (once per tile, cached), "
          f"DIFT + CMP {per_video / 1e12:.1f}")
    print(f"  predicted DisPose / MimicMotion: default path {ratio(extra_sampling, per_tile_guidance):.3f}x; "
          f"release (encoders rerun every step for both halves) "
          f"{ratio(extra_sampling, release_guidance):.3f}x; "
          f"paper Table 7: {PAPER_DISPOSE} / {PAPER_MIMICMOTION} = {PAPER_DISPOSE / PAPER_MIMICMOTION:.3f}x")
    throughput = common / frames / PAPER_MIMICMOTION
    print(f"  at the paper's MimicMotion speed ({PAPER_MIMICMOTION} s/frame = "
          f"{throughput / 1e12:.0f} TFLOP/s effective), DisPose would take "
          f"{PAPER_MIMICMOTION * ratio(extra_sampling, per_tile_guidance):.2f} s/frame "
          f"(paper {PAPER_DISPOSE})")
    print("\nSharing ControlNet work between the CFG halves (default path):")
    print(f"  the unconditional half zeroes the CLIP context AND the reference latent in channels 4-7 of the "
          f"ControlNet input, so even conv_in differs between the halves; the CLIP context enters "
          f"{split['blocks with cross-attention']} of the 5 ControlNet stages (down blocks 0-2 and the mid "
          f"block; {split['cross-attention layers']} cross-attention layers in block 0 alone).  Layers "
          f"before the first cross-attention: {split['before first cross-attention'] / split['total']:.1%} "
          "of the ControlNet's FLOPs, and not shareable either.  Only the guidance encoders are shared "
          "(already done).")
    posenet = flops["PoseNet (per tile)"]
    print(f"\nPoseNet and guidance encoders of a tile recomputed at every step "
          f"(tiles beyond --guidance-cache-mb): "
          f"{(posenet + per_tile_guidance) / (unet_res + control):.2%} of that tile's step")
    print("\nOutput-changing options (estimated in the same model; the first two are --controlnet-interval 2 "
          "and 3, their effect on frames: bench/controlnet_interval.py):")
    for name, extra in (("ControlNet residuals reused for 2 adjacent steps (ControlNet every 2nd step)",
                         tiles * (steps * (unet_res - unet) + math.ceil(steps / 2) * control)),
                        ("ControlNet residuals reused for 3 adjacent steps",
                         tiles * (steps * (unet_res - unet) + math.ceil(steps / 3) * control)),
                        ("ControlNet on the conditional half only (unconditional half without residuals)",
                         tiles * steps * (unet_res - unet + control / 2)),
                        ("ControlNet in the first 15 of 25 steps only",
                         tiles * min(steps, 15) * (unet_res - unet + control))):
        print(f"  {name:82s} {ratio(extra, per_tile_guidance):.3f}x")


if __name__ == "__main__":
    main()
