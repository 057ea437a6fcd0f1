"""MusePose's published weight files and our modules: which keys each file holds, and the mapping.

``TMElyralab/MusePose`` publishes four state dicts (``torch.save`` of ``model.state_dict()``):

* ``denoising_unet.pth``: the 2D part of the denoising UNet, saved by the release's stage-1 training, where
  the 3D UNet has no motion modules; the names are SD1.5's (diffusers), 686 tensors at full size, i.e. every
  key of :class:`~.denoising_unet.MusePoseDenoisingUNet` outside ``*.motion_modules.*``.
* ``motion_module.pth``: the keys of the stage-2 denoising UNet containing ``motion_module`` (21 modules:
  2 per down block, 1 in the mid block, 3 per up block), 28 tensors each in AnimateDiff's names, 2 of them
  the fixed position tables ``pos_encoder.pe`` (588 tensors, 546 learned); mapped by
  :mod:`.motion_module`.
* ``reference_unet.pth``: the SD1.5 UNet without ``conv_norm_out`` / ``conv_out`` (682 tensors), key for key
  :class:`~.reference.MusePoseReferenceUNet`.
* ``pose_guider.pth``: ``conv_in``, ``blocks.0-5``, ``conv_out`` (16 tensors), key for key diffusers'
  :class:`~diffusers.models.controlnets.controlnet.ControlNetConditioningEmbedding` (the release's
  ``PoseGuider`` is that module with its convolutions inflated to video).

The release loads ``denoising_unet.pth`` with ``strict=False`` (on top of the SD weights and the motion
module); here the two denoising files together must cover the UNet exactly, and each must hold only its
own part (see :func:`denoising_state`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

from dispose.errors import UserError
from dispose.models.musepose.motion_module import our_key_to_release, release_key_to_ours

#: File names of the release (``pretrained_weights/MusePose/``).
DENOISING_FILE = "denoising_unet.pth"
MOTION_FILE = "motion_module.pth"
REFERENCE_FILE = "reference_unet.pth"
POSE_GUIDER_FILE = "pose_guider.pth"
RELEASE_FILES = (DENOISING_FILE, REFERENCE_FILE, POSE_GUIDER_FILE, MOTION_FILE)
#: The pose guider of ``test_stage_2.py``: ``PoseGuider(320, block_out_channels=(16, 32, 96, 256))``.
POSE_GUIDER_CHANNELS = (16, 32, 96, 256)
_MOTION = ".motion_modules."


class PoseGuider(ControlNetConditioningEmbedding):
    """MusePose's pose guider: skeleton images in [0, 1] (N, 3, H, W) -> (N, C_0, H/8, W/8), per frame;
    diffusers' ControlNet conditioning embedding with the ``dtype`` / ``device`` pipeline components need."""

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def build_pose_guider(embedding_channels: int = 320,
                      block_out_channels: tuple[int, ...] = POSE_GUIDER_CHANNELS) -> PoseGuider:
    """The pose guider of ``test_stage_2.py`` for a UNet whose first block is ``embedding_channels`` wide."""
    return PoseGuider(embedding_channels, 3, block_out_channels)


def is_motion_key(key: str) -> bool:
    return _MOTION in f".{key}"


def denoising_state(denoising: Mapping[str, torch.Tensor], motion: Mapping[str, torch.Tensor],
                    denoising_origin: str | Path, motion_origin: str | Path) -> dict[str, torch.Tensor]:
    """Our denoising-UNet state dict from the contents of ``denoising_unet.pth`` and ``motion_module.pth``.

    Raises UserError when a file holds the other file's part (motion keys in ``denoising_unet.pth``, 2D keys
    in ``motion_module.pth``): such files come from another training stage or were mixed up."""
    state = {}
    for key, value in denoising.items():
        if is_motion_key(key):
            raise UserError(f"{denoising_origin} holds motion-module weights ({key}); is it MusePose's "
                            f"{DENOISING_FILE} (the motion modules come from {MOTION_FILE})?")
        state[key] = value
    for key, value in motion.items():
        if not is_motion_key(key):
            raise UserError(f"{motion_origin} holds a key outside the motion modules ({key}); "
                            f"is it MusePose's {MOTION_FILE}?")
        ours = release_key_to_ours(key)
        if ours is not None:
            state[ours] = value
    return state


def release_states(denoising_unet: torch.nn.Module, reference_unet: torch.nn.Module,
                   pose_guider: torch.nn.Module,
                   position_tables: bool = True) -> dict[str, dict[str, torch.Tensor]]:
    """The four release files' state dicts (file name -> state) of our modules: the inverse of the loading
    mapping, with the position tables the release saves (``position_tables``)."""
    unet_state = denoising_unet.state_dict()
    motion = {}
    for key, value in unet_state.items():
        if is_motion_key(key):
            motion[our_key_to_release(key)] = value
    if position_tables:
        for name, module in denoising_unet.named_modules():
            if is_motion_key(name) and name.endswith(".pos_embed"):
                block = our_key_to_release(name + ".x").rsplit(".", 2)[0]  # ...transformer_blocks.N
                for index in (0, 1):
                    motion[f"{block}.attention_blocks.{index}.pos_encoder.pe"] = module.pe.clone()
    return {
        DENOISING_FILE: {key: value for key, value in unet_state.items() if not is_motion_key(key)},
        MOTION_FILE: motion,
        REFERENCE_FILE: reference_unet.state_dict(),
        POSE_GUIDER_FILE: pose_guider.state_dict(),
    }
