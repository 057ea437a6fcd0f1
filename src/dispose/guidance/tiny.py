"""A tiny random Stable Diffusion 1.5 in the diffusers folder layout (UNet, VAE, text encoder, tokenizer,
scheduler), for DIFT (:mod:`dispose.guidance.dift`) in tests and benchmarks: it loads through exactly the code
that loads the real folder."""

from __future__ import annotations

import string
from pathlib import Path

#: Channels of the tiny SD1.5's up block 1 (the DIFT features the point encoder reads).
DIFT_CHANNELS = 32


def build_tiny_sd15(folder: Path) -> None:
    """Write the tiny SD1.5 folder at ``folder``."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16, DIFT_CHANNELS, DIFT_CHANNELS), norm_num_groups=4, cross_attention_dim=16,
        attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    ).save_pretrained(folder / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=2,
                  block_out_channels=(4, 4, 4, 4), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4).save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig(vocab_size=54, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=77, bos_token_id=0,
                                 eos_token_id=1, pad_token_id=1)).save_pretrained(folder / "text_encoder")
    letters = list(string.ascii_lowercase)
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]
    CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[],
                  model_max_length=77).save_pretrained(folder / "tokenizer")
    DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  clip_sample=False, set_alpha_to_one=False, steps_offset=1).save_pretrained(folder / "scheduler")
