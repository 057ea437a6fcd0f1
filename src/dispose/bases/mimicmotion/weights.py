"""Build :class:`DisPoseMimicMotionPipeline` from the release's weight files (see :mod:`.weights`).

As the release's ``mimicmotion/utils/loader.py``: VAE, CLIP image encoder, scheduler and feature
extractor come from the SVD-xt-1.1 folder; the UNet is built from SVD's ``unet/config.json`` and gets
its weights, with PoseNet's, from ``MimicMotion_1-1.pth`` (keys ``unet.*`` / ``pose_net.*``); the
ControlNet is built from the UNet's config and loads ``DisPose.pth``.

Checkpoint contents (key mapping):

* ``DisPose.pth``: the state dict of the release's ``ControlNetSVDModel`` = our
  :class:`~dispose.models.controlnet_svd.HybridControlNetSVD`, key for key (705 tensors, fp32).  The
  DisPose-specific widths (point embedding width, point MLP width, motion encoder widths) are read from
  the tensor shapes, so tiny test checkpoints load through the same code.
* ``MimicMotion_1-1.pth``: the state dict of the release's ``MimicMotionModel`` wrapper, so
  ``unet.*`` -> :class:`~dispose.models.unet_mimicmotion.MimicMotionUNet` (diffusers' names) and
  ``pose_net.*`` -> :class:`~dispose.models.pose_net.PoseNet`.  That wrapper also holds the SVD VAE and
  CLIP image encoder, so ``vae.*`` and ``image_encoder.*`` entries may be present: they are SVD's frozen
  weights (MimicMotion trains only the UNet and PoseNet) and are skipped; we take both from the SVD
  folder.  Any other entry is an error.
* ``.safetensors`` versions of both (``dispose convert``) hold the same keys.

Memory: the UNet and the ControlNet are built on the meta device (accelerate's ``init_empty_weights``)
and take the checkpoint tensors as their parameters (``load_state_dict(assign=True)``); ``.pth`` files
are memory-mapped when their format allows.  Peak memory is about one copy of the weights.

Deliberate difference: the release loads both checkpoints with ``strict=False``; here every key must
match (a mismatch names the keys as the file spells them), except for the skipped SVD entries above.
Reading and strict loading are :mod:`dispose.checkpoints`' (missing or unreadable files raise a
UserError naming the file and where to download it).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dispose.bases.mimicmotion.pipeline import DisPoseMimicMotionPipeline
from dispose.checkpoints import load_strict, read_state_dict
from dispose.errors import UserError
from dispose.pipelines import weights as pipeline_weights
from dispose.pipelines.weights import COMPONENTS, WeightPaths

#: Prefixes of MimicMotion_1-1.pth entries that are not ours to load (SVD parts saved along).
_IGNORED_PREFIXES = ("vae.", "image_encoder.")


def required_components(dispose: bool) -> list[str]:
    """Keys of MimicMotion's components a run needs (the DisPose checkpoint only with ``dispose``)."""
    return ["svd", "mimicmotion", *(["dispose"] if dispose else [])]


def _what(component: str) -> str:
    known = COMPONENTS.get(component)
    return (f"the {known.what} checkpoint ({known.hub_file})" if known
            else "DisPose.pth or MimicMotion_1-1.pth")


def read_checkpoint(path: Path, component: str) -> dict[str, torch.Tensor]:
    """The state dict in a ``.pth`` or ``.safetensors`` file of ``component`` (a :data:`COMPONENTS` key, or
    ``""`` when not known yet), memory-mapped when the format allows; errors name where to get the file."""
    known = COMPONENTS.get(component)
    return read_state_dict(path, what=_what(component), source=known.source if known else None, mmap=True)


def split_mimicmotion(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """``MimicMotion_1-1.pth`` -> (UNet state, PoseNet state)."""
    unet, pose_net = {}, {}
    for key, value in state.items():
        if key.startswith("unet."):
            unet[key[5:]] = value
        elif key.startswith("pose_net."):
            pose_net[key[9:]] = value
        elif not key.startswith(_IGNORED_PREFIXES):
            raise UserError(f"MimicMotion checkpoint has an unexpected entry {key!r}; "
                            "is it MimicMotion_1-1.pth?")
    return unet, pose_net


def image_processor_class():
    """CLIP's image processor without torchvision (transformers >= 5 names it ``CLIPImageProcessorPil``)."""
    try:
        from transformers import CLIPImageProcessorPil
    except ImportError:  # transformers 4
        from transformers import CLIPImageProcessor as CLIPImageProcessorPil
    return CLIPImageProcessorPil


def read_unet_config(path: str | Path | None) -> dict:
    """The UNet config of an SVD folder (``unet/config.json``), a ``unet`` folder or a ``config.json`` file;
    None gives SVD-xt-1.1's (built in)."""
    from dispose.models.unet_mimicmotion import SVD_XT_UNET_CONFIG

    return pipeline_weights.read_unet_config(path, SVD_XT_UNET_CONFIG)


def load_mimicmotion(checkpoint: Path, svd: Path | None = None, unet_config: dict | None = None):
    """(MimicMotionUNet, PoseNet) from ``MimicMotion_1-1.pth`` (or its .safetensors); the UNet's config comes
    from ``unet_config`` or the SVD folder's ``unet/config.json``.  Built on the meta device, the modules
    take the checkpoint's tensors (and dtype)."""
    from accelerate import init_empty_weights

    from dispose.models.pose_net import PoseNet
    from dispose.models.unet_mimicmotion import MimicMotionUNet

    if unet_config is None:
        if svd is None:
            raise ValueError("give the SVD folder or a UNet config")
        unet_config = read_unet_config(svd)
    with init_empty_weights():
        unet = MimicMotionUNet.from_config(unet_config)
        pose_net = PoseNet(noise_latent_channels=unet.config.block_out_channels[0])
    unet_state, pose_state = split_mimicmotion(read_checkpoint(checkpoint, "mimicmotion"))
    load_strict(unet, unet_state, checkpoint, what=_what("mimicmotion"), file_prefix="unet.")
    load_strict(pose_net, pose_state, checkpoint, what=_what("mimicmotion"), file_prefix="pose_net.")
    return unet, pose_net


def load_controlnet(checkpoint: Path, unet: torch.nn.Module):
    """HybridControlNetSVD shaped after ``unet`` (any device, meta included) with ``DisPose.pth``'s
    weights."""
    from accelerate import init_empty_weights

    from dispose.models.controlnet_svd import HybridControlNetSVD

    state = read_checkpoint(checkpoint, "dispose")
    with init_empty_weights():
        controlnet = HybridControlNetSVD.from_unet(unet, load_weights_from_unet=False,
                                                   **HybridControlNetSVD.options_from_state_dict(state))
    load_strict(controlnet, state, checkpoint, what=_what("dispose"))
    return controlnet


def load_pipeline(paths: WeightPaths, *, dispose: bool = True, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> DisPoseMimicMotionPipeline:
    """The pipeline from resolved weight paths; ``dispose=False`` skips the ControlNet (baseline only)."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from transformers import CLIPVisionModelWithProjection

    from dispose.guidance.dift import from_local_folder

    svd = paths.svd
    vae = from_local_folder(AutoencoderKLTemporalDecoder, svd, "vae", dtype)
    image_encoder = from_local_folder(CLIPVisionModelWithProjection, svd, "image_encoder", dtype)
    scheduler = EulerDiscreteScheduler.from_pretrained(svd, subfolder="scheduler", local_files_only=True)
    feature_extractor = image_processor_class().from_pretrained(svd, subfolder="feature_extractor",
                                                                local_files_only=True)

    unet, pose_net = load_mimicmotion(paths.mimicmotion, svd)
    controlnet = load_controlnet(paths.dispose, unet) if dispose else None

    modules = [unet, pose_net] + ([controlnet] if controlnet is not None else [])
    for module in modules:  # nn.Module.to: diffusers' ModelMixin.to logs a spurious warning on dtype casts
        torch.nn.Module.to(module, dtype=dtype).eval().requires_grad_(False)
    vae.eval().requires_grad_(False)
    image_encoder.eval().requires_grad_(False)
    pipeline = DisPoseMimicMotionPipeline(vae=vae, image_encoder=image_encoder, unet=unet, pose_net=pose_net,
                                          scheduler=scheduler, controlnet=controlnet,
                                          feature_extractor=feature_extractor)
    return pipeline.to(device)
