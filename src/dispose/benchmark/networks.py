"""The networks a benchmark runs: full size with random weights on the target device, or the tiny test ones.

Speed and memory do not depend on the weights' values, so ``dispose benchmark speed`` and ``train`` run the
real architectures without any download.  A base builds its own (``Base.random_pipeline``, e.g.
:mod:`dispose.bases.mimicmotion.random_weights`): every parameter is allocated and initialised by the modules'
own initialisers on the device in the run's dtype (:func:`dispose.devices.on_device`), never as a float32
copy on the host; on ``"meta"`` nothing is allocated (parameter counts).  The guidance stage's networks are
the same for every base and built here: CMP (``resnet50_vip+mpii_liteflow``, float32 as the loaded one) and
Stable Diffusion 1.5 for DIFT (UNet, VAE encoder, CLIP ViT-L/14 text encoder :data:`SD15_TEXT`; a
letters-only tokenizer, as the prompt's cost is nil).
"""

from __future__ import annotations

import torch

from dispose.bases.musepose.random_weights import SD_VAE
from dispose.devices import on_device

#: SD1.5's ``text_encoder/config.json`` (CLIP ViT-L/14 text model).
SD15_TEXT = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
             "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
             "projection_dim": 768}
#: Pipeline components that are frozen pretrained encoders in every base (not counted as the base's
#: trainable parameters; the paper's Table 7 counts the rest, and DisPose's ControlNet on its own row).
FROZEN_ENCODERS = ("vae", "image_encoder")


def _entry(base: str, hook: str):
    from dispose.bases import get_base
    from dispose.errors import UserError

    builder = getattr(get_base(base), hook)
    if builder is None:
        raise UserError(f"base {base!r} does not provide {hook.replace('_', ' ')}; pass --weights to time "
                        "its real weights")
    return builder


def random_pipeline(base: str, dispose: bool, dtype: torch.dtype, device):
    """The base's pipeline at full size with random weights on ``device`` in ``dtype``."""
    return _entry(base, "random_pipeline")(dispose, dtype, device)


def tiny_weights(base: str, folder) -> None:
    """Write the base's tiny random test weights (release layout) into ``folder``, for ``--tiny`` runs."""
    _entry(base, "tiny_weights")(folder)


def random_cmp(device):
    """CMP at full size with random weights, in float32 (as :func:`dispose.guidance.cmp.load_cmp` keeps
    it)."""
    from dispose.guidance.cmp import CMP

    with on_device(device, torch.float32):
        return CMP().eval().requires_grad_(False)


def random_dift(dtype: torch.dtype, device):
    """A DIFT featurizer on Stable Diffusion 1.5 at full size with random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dispose.guidance.dift import DiftFeaturizer
    from dispose.guidance.tiny import letters_tokenizer

    with on_device(device, dtype):
        unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64)
        vae = AutoencoderKL(**SD_VAE)
        vae.decoder = None  # only the encoder is used (as DiftFeaturizer.from_pretrained)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT))
    for module in (unet, vae, text_encoder):
        torch.nn.Module.to(module, device=device, dtype=dtype)  # ModelMixin.to warns on dtype casts
    return DiftFeaturizer(unet, vae, text_encoder, letters_tokenizer())


def parameters(module: torch.nn.Module | None) -> int:
    """Parameter count of ``module`` (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def trainable_counts(pipeline) -> dict[str, int]:
    """Table 7's "trainable parameters": the base's networks (every component but the frozen encoders and
    the ControlNet) and DisPose's ControlNet, counted on the pipeline's own modules."""
    modules = {name: value for name, value in pipeline.components.items()
               if isinstance(value, torch.nn.Module)}
    base = sum(parameters(m) for name, m in modules.items() if name not in (*FROZEN_ENCODERS, "controlnet"))
    return {"base": base, "dispose": parameters(modules.get("controlnet"))}
