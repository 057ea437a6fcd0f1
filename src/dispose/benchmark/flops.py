"""FLOPs and activation memory of the full-size networks on the meta device (no weights, no memory).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions, 2 per
multiply-add); attention is counted as one fused kernel (FlashAttention: ``2 * B * heads * Lq * Lk * (d_qk +
d_v)`` FLOPs, no ``Lq x Lk`` matrix in memory).  Activation memory is the peak of the live tensors a
forward call creates (each freed when its last reference goes).  Used by ``bench/cost_model.py`` (every
stage at 576x1024) and by ``dispose benchmark speed`` (the per-step ControlNet / UNet ratio predicted at the
run's size, printed beside the measured one).
"""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

HALF = torch.float16


class FusedAttention(TorchFunctionMode):
    """Runs ``F.scaled_dot_product_attention`` as a fused kernel would: output only, FLOPs recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            query, key, value = args[:3]
            batch = math.prod(query.shape[:-2])
            self.flops += 2 * batch * query.shape[-2] * key.shape[-2] * (query.shape[-1] + value.shape[-1])
            return query.new_empty((*query.shape[:-1], value.shape[-1]))
        return func(*args, **kwargs)


class PeakMemory(TorchDispatchMode):
    """Peak bytes of the tensors created inside (views and in-place results share their base's storage)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0

    def _free(self, size: int) -> None:
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {id(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and id(tensor) not in given and not tensor._is_view():
                size = tensor.untyped_storage().nbytes()
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(tensor, self._free, size)
        return out


def measure(fn) -> tuple[float, float, object]:
    """(FLOPs, peak activation bytes, output) of ``fn()`` run without gradients."""
    with (
        torch.no_grad(),
        FusedAttention() as attention,
        FlopCounterMode(display=False) as counter,
        PeakMemory() as memory,
    ):
        out = fn()
    return counter.get_total_flops() + attention.flops, memory.peak, out


def weight_bytes(module: torch.nn.Module, dtype: torch.dtype = HALF) -> float:
    return sum(p.numel() for p in module.parameters()) * torch.finfo(dtype).bits / 8


def meta(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, device="meta", dtype=HALF)


def build(cls, *args, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        module = cls(*args, **kwargs)
    # a few diffusers parameters are created on the CPU regardless; nn.Module.to: ModelMixin.to warns on casts
    return torch.nn.Module.to(module, "meta", HALF).eval()


def svd_networks() -> tuple[torch.nn.Module, torch.nn.Module]:
    """(MimicMotion's SVD-xt UNet, DisPose's hybrid ControlNet) at full size on the meta device, fp16."""
    from dispose.models.controlnet_svd import HybridControlNetSVD
    from dispose.models.unet_mimicmotion import SVD_XT_UNET_CONFIG, MimicMotionUNet

    unet = build(MimicMotionUNet, **SVD_XT_UNET_CONFIG)
    with torch.device("meta"):
        controlnet = HybridControlNetSVD.from_unet(unet, load_weights_from_unet=False)
    controlnet = torch.nn.Module.to(controlnet, "meta", HALF).eval()
    return unet, controlnet


def svd_step(unet, controlnet, width: int, height: int, tile: int, cfg: int = 2) -> dict:
    """One denoising step of one tile of ``tile`` frames at ``width`` x ``height`` with CFG as a batch of
    ``cfg``: ``rows`` {name: (FLOPs, peak bytes)} for the motion encoder (once per tile), the ControlNet with
    cached guidance encodings, the UNet with the ControlNet's residuals and the UNet alone, plus the tensors
    a caller measures further (``inputs`` of the ControlNet call, ``guidance``, ``motion``, ``levels``,
    ``residuals``)."""
    from dispose.models.hybrid_controlnet import EncodedGuidance

    lat_h, lat_w = height // 8, width // 8
    sample, context, time_ids = meta(cfg, tile, 8, lat_h, lat_w), meta(cfg, 1, 1024), meta(cfg, 3)
    pose_latents = meta(cfg * tile, 320, lat_h, lat_w)
    timestep = torch.tensor(500.0, device="meta")
    rows = {}
    with torch.device("meta"):
        flops, peak, motion = measure(
            lambda: controlnet.controlnet_cond_embedding(
                meta(tile, 2, height, width), meta(tile, 2, height, width)
            )
        )
        rows["motion encoder (per tile)"] = (flops, peak)
        sizes = [(lat_h // d, lat_w // d) for d in (2, 4, 8, 8)]  # hidden sizes after each down block
        levels = {i: meta(tile, c, *s) for i, (c, s) in enumerate(zip((320, 640, 1280, 1280), sizes))}
        guidance = EncodedGuidance(
            tile, motion, cells=object(), levels=levels
        )  # cached encodings: no MLP calls
        flops, peak, (down, mid) = measure(
            lambda: controlnet(sample, timestep, context, time_ids, guidance=guidance)
        )
        rows["ControlNet (per step, CFG batch)"] = (flops, peak)
        flops, peak, _ = measure(
            lambda: unet(
                sample,
                timestep,
                context,
                time_ids,
                pose_latents=pose_latents,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
                return_dict=False,
            )
        )
        rows["UNet + residuals (per step)"] = (flops, peak)
        flops, peak, _ = measure(
            lambda: unet(sample, timestep, context, time_ids, pose_latents=pose_latents, return_dict=False)
        )
        rows["UNet alone (per step)"] = (flops, peak)
    return {
        "rows": rows,
        "inputs": (sample, timestep, context, time_ids),
        "guidance": guidance,
        "motion": motion,
        "levels": levels,
        "residuals": (down, mid),
    }


def svd_controlnet_unet_ratio(width: int, height: int, tile: int) -> float:
    """FLOPs of the ControlNet / FLOPs of the UNet with its residuals, per denoising step of one tile: the
    per-step time ratio the cost model predicts for a compute-bound device."""
    rows = svd_step(*svd_networks(), width, height, tile)["rows"]
    return rows["ControlNet (per step, CFG batch)"][0] / rows["UNet + residuals (per step)"][0]
