"""Print the parameter counts of the full-size networks per module (built empty: no weights needed, no memory).

The DisPose hybrid ControlNet (what DisPose.pth holds and what DisPose trains; the paper's "653.40 MB" in
appendix G is its parameter count / 2^20), MimicMotion's UNet and PoseNet (MimicMotion_1-1.pth), all for
SVD-xt-1.1's UNet config or the one given with --unet-config.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: Top-level parts of the hybrid ControlNet, with what they are.
CONTROLNET_PARTS = (
    ("conv_in", "input conv (copied from the UNet)"),
    ("time_embedding", "timestep embedding (copied)"),
    ("add_embedding", "added-time-ids embedding"),
    ("down_blocks", "encoder down blocks (copied)"),
    ("mid_block", "mid block (copied)"),
    ("controlnet_down_blocks", "zero 1x1 convs, skips"),
    ("controlnet_mid_block", "zero 1x1 conv, mid"),
    ("controlnet_cond_embedding", "motion encoder (Eq. 5)"),
    ("point_adapter", "point encoder (Eq. 7)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unet-config", type=Path, metavar="PATH",
                        help="SVD folder or UNet config.json (default: SVD-xt-1.1's, built in)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _count(module) -> dict:
    state = module.state_dict()
    return {"tensors": len(state), "parameters": sum(tensor.numel() for tensor in state.values())}


def parameter_counts(unet_config: dict) -> dict:
    """Tensor and parameter counts of the ControlNet (total and per part), the UNet and PoseNet."""
    from accelerate import init_empty_weights

    from dispose.models.controlnet_svd import HybridControlNetSVD
    from dispose.models.pose_net import PoseNet
    from dispose.models.unet_mimicmotion import MimicMotionUNet

    with init_empty_weights():
        unet = MimicMotionUNet.from_config(unet_config)
        controlnet = HybridControlNetSVD.from_unet(unet, load_weights_from_unet=False)
        pose_net = PoseNet(noise_latent_channels=unet.config.block_out_channels[0])
    return {
        "controlnet": {**_count(controlnet),
                       "parts": {name: _count(getattr(controlnet, name)) for name, _ in CONTROLNET_PARTS}},
        "unet": _count(unet),
        "pose_net": _count(pose_net),
    }


def _row(label: str, counts: dict, note: str = "") -> str:
    params = counts["parameters"]
    return (f"  {label:<28} {counts['tensors']:>5} tensors {params:>15,} params {params / 2**20:>10.2f} Mi "
            f"{params * 4 / 1e9:>6.2f} GB fp32  {note}").rstrip()


def run(args: argparse.Namespace) -> int:
    from dispose.pipelines.loading import read_unet_config

    counts = parameter_counts(read_unet_config(args.unet_config))
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    notes = dict(CONTROLNET_PARTS)
    print("DisPose hybrid ControlNet (DisPose.pth, trainable):")
    print(_row("total", counts["controlnet"]))
    for name, part in counts["controlnet"]["parts"].items():
        print(_row(name, part, notes[name]))
    print("MimicMotion (MimicMotion_1-1.pth, frozen in DisPose):")
    print(_row("unet", counts["unet"], "SVD UNet"))
    print(_row("pose_net", counts["pose_net"], "PoseNet"))
    return 0
