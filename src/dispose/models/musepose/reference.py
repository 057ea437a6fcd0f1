"""MusePose's reference UNet and reference attention, as diffusers attention processors.

The reference UNet (an SD1.5 :class:`~diffusers.UNet2DConditionModel`, ``reference_unet.pth``) runs once per
video on the reference image's latent at timestep 0 with the CLIP image embedding as context.  Every
spatial self-attention of the denoising UNet then attends to its own tokens *and* the tokens that the
same-named self-attention of the reference UNet saw (its input, the LayerNorm'd hidden states), repeated
for every frame: keys/values = ``concat([x_frame, x_reference], tokens)``, queries = ``x_frame``.

What the release (``musepose/models/mutual_self_attention.py``, ``fusion_blocks="full"``) does, and we
reproduce:

* Writer and reader blocks are paired by sorting each UNet's transformer blocks by width (a stable sort of
  the module order); both UNets have the same module tree, so block ``i`` of one is the block with the same
  path in the other.  Here the pairing is by that path (the attention module's name).
* With classifier-free guidance, the unconditional half does *not* read the reference (plain
  self-attention); only the conditional half does.  The release computes the reference attention for both
  halves and overwrites the unconditional rows; here each half runs only what it keeps.  The reference
  UNet's unconditional half is therefore never read: we run the reference UNet on the conditional
  embedding only (batch 1 instead of the release's 2; same numbers for the half that is used).
* The reference UNet's output convolution is never used: ``reference_unet.pth`` has no ``conv_norm_out``
  / ``conv_out`` (the release's class comments them out), and :class:`MusePoseReferenceUNet` has none.

The bank (:class:`ReferenceBank`) holds the recorded states, keyed by attention name, and which batch rows
of the denoising UNet read them; the pipeline fills it once per video and clears it afterwards.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from torch import nn

#: Names of the spatial self-attentions (not the motion modules' temporal ones).
SPATIAL_SELF_ATTENTION = re.compile(r"(^|\.)attentions\.\d+\.transformer_blocks\.\d+\.attn1$")
#: Keys of diffusers' SD UNet that MusePose's reference UNet does not have.
REFERENCE_UNET_ABSENT = ("conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias")


class MusePoseReferenceUNet(UNet2DConditionModel):
    """SD1.5 UNet without the output normalisation and convolution (their output is never used)."""

    # functools.wraps keeps the signature diffusers reads the config keys from
    @functools.wraps(UNet2DConditionModel.__init__)
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.conv_norm_out = None
        self.conv_act = None
        self.conv_out = nn.Identity()


@dataclass
class ReferenceBank:
    """Reference self-attention inputs by attention name, (R, L, C) for R references, and ``reads``: for each
    batch element of the denoising UNet, the reference row it reads, or None (plain self-attention)."""

    states: dict[str, torch.Tensor] = field(default_factory=dict)
    reads: list[int | None] = field(default_factory=list)

    def clear(self) -> None:
        self.states.clear()
        self.reads = []


class _BankProcessor:
    def __init__(self, bank: ReferenceBank, name: str) -> None:
        self.bank = bank
        self.name = name
        self.inner = AttnProcessor2_0()


class WriteReferenceProcessor(_BankProcessor):
    """Self-attention of the reference UNet that records its input in the bank."""

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs) -> torch.Tensor:
        self.bank.states[self.name] = hidden_states
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ReadReferenceProcessor(_BankProcessor):
    """Self-attention of the denoising UNet whose keys/values also cover the reference tokens."""

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs) -> torch.Tensor:
        reference = self.bank.states.get(self.name)
        reads = self.bank.reads
        if reference is None or not any(row is not None for row in reads):
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if hidden_states.shape[0] % len(reads):
            raise ValueError(f"{hidden_states.shape[0]} frames do not split into the bank's {len(reads)} "
                             "batch elements")
        per_element = hidden_states.unflatten(0, (len(reads), -1))
        frames = per_element.shape[1]
        outputs = []
        for tokens, row in zip(per_element, reads):
            context = None
            if row is not None:
                own = reference[row:row + 1].to(tokens.dtype).expand(frames, -1, -1)
                context = torch.cat([tokens, own], dim=1)
            outputs.append(self.inner(attn, tokens, context, attention_mask, temb))
        return torch.cat(outputs)


def _attach(unet: nn.Module, bank: ReferenceBank, processor: type[_BankProcessor]) -> int:
    count = 0
    for name, module in unet.named_modules():
        if SPATIAL_SELF_ATTENTION.search(name):
            module.set_processor(processor(bank, name))
            count += 1
    return count


def connect_reference_attention(reference_unet: nn.Module, denoising_unet: nn.Module,
                                bank: ReferenceBank | None = None) -> ReferenceBank:
    """Install the writing processors in ``reference_unet`` and the reading ones in ``denoising_unet``
    (in place); returns the bank they share."""
    bank = bank if bank is not None else ReferenceBank()
    written = _attach(reference_unet, bank, WriteReferenceProcessor)
    read = _attach(denoising_unet, bank, ReadReferenceProcessor)
    if written != read or not written:
        raise ValueError(f"the reference UNet has {written} spatial self-attentions, "
                         f"the denoising UNet {read}")
    return bank
