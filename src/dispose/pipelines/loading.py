"""Build :class:`DisPoseMimicMotionPipeline` from the release's weight files (see :mod:`.weights`).

As the release's ``mimicmotion/utils/loader.py``: VAE, CLIP image encoder, scheduler and feature
extractor come from the SVD-xt-1.1 folder; the UNet is built from SVD's ``unet/config.json`` and gets
its weights, with PoseNet's, from ``MimicMotion_1-1.pth`` (keys ``unet.*`` / ``pose_net.*``); the
ControlNet is built from the UNet's config and loads ``DisPose.pth``.

Deliberate difference: the release loads both checkpoints with ``strict=False``; here every key must
match (a mismatch names the keys), except for the parts of ``MimicMotion_1-1.pth`` that belong to the
SVD components the release ignores there (``vae.*``, ``image_encoder.*``), which are skipped.  Unreadable
checkpoint files raise a UserError naming the file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dispose.errors import UserError
from dispose.pipelines.mimicmotion import DisPoseMimicMotionPipeline
from dispose.pipelines.weights import COMPONENTS, WeightPaths

#: Prefixes of MimicMotion_1-1.pth entries that are not ours to load (SVD parts saved along).
_IGNORED_PREFIXES = ("vae.", "image_encoder.")


def read_checkpoint(path: Path, component: str) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` a state dict, turning a damaged file into one clear UserError."""
    source = COMPONENTS[component].source if component in COMPONENTS else ""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle/zip errors of many kinds mean "damaged file"
        raise UserError(f"cannot read checkpoint {path} ({type(error).__name__}: {error}); the file is damaged "
                        f"or incomplete: download it again{' from ' + source if source else ''}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"checkpoint {path} is not a state dict of tensors; is it the right file?")
    return state


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` with every key matching, else a UserError listing (a few of) the differing keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        def few(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = [f"{label}: {few(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if keys]
        raise UserError(f"checkpoint {path} does not fit {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def split_mimicmotion(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """``MimicMotion_1-1.pth`` -> (UNet state, PoseNet state)."""
    unet, pose_net = {}, {}
    for key, value in state.items():
        if key.startswith("unet."):
            unet[key[5:]] = value
        elif key.startswith("pose_net."):
            pose_net[key[9:]] = value
        elif not key.startswith(_IGNORED_PREFIXES):
            raise UserError(f"MimicMotion checkpoint has an unexpected entry {key!r}; is it MimicMotion_1-1.pth?")
    return unet, pose_net


def image_processor_class():
    """CLIP's image processor without torchvision (transformers >= 5 names it ``CLIPImageProcessorPil``)."""
    try:
        from transformers import CLIPImageProcessorPil
    except ImportError:  # transformers 4
        from transformers import CLIPImageProcessor as CLIPImageProcessorPil
    return CLIPImageProcessorPil


def _from_folder(cls, folder: Path, sub: str, dtype: torch.dtype):
    options = {"subfolder": sub, "local_files_only": True, "torch_dtype": dtype}
    try:
        return cls.from_pretrained(folder, **options)
    except (OSError, ValueError) as error:
        try:  # snapshots holding the fp16 variant only
            return cls.from_pretrained(folder, variant="fp16", **options)
        except (OSError, ValueError):
            raise UserError(f"cannot load {sub}/ of {folder}: {error}") from None


def load_pipeline(paths: WeightPaths, *, dispose: bool = True, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> DisPoseMimicMotionPipeline:
    """The pipeline from resolved weight paths; ``dispose=False`` skips the ControlNet (baseline only)."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from transformers import CLIPVisionModelWithProjection

    from dispose.models.pose_net import PoseNet
    from dispose.models.unet_mimicmotion import MimicMotionUNet

    svd = paths.svd
    vae = _from_folder(AutoencoderKLTemporalDecoder, svd, "vae", dtype)
    image_encoder = _from_folder(CLIPVisionModelWithProjection, svd, "image_encoder", dtype)
    scheduler = EulerDiscreteScheduler.from_pretrained(svd, subfolder="scheduler", local_files_only=True)
    feature_extractor = image_processor_class().from_pretrained(svd, subfolder="feature_extractor",
                                                                local_files_only=True)

    unet = MimicMotionUNet.from_config(MimicMotionUNet.load_config(svd, subfolder="unet", local_files_only=True))
    pose_net = PoseNet(noise_latent_channels=unet.config.block_out_channels[0])
    unet_state, pose_state = split_mimicmotion(read_checkpoint(paths.mimicmotion, "mimicmotion"))
    load_strict(unet, unet_state, paths.mimicmotion)
    load_strict(pose_net, pose_state, paths.mimicmotion)
    del unet_state, pose_state

    controlnet = None
    if dispose:
        from dispose.models.controlnet_svd import HybridControlNetSVD

        controlnet = HybridControlNetSVD.from_unet(unet)
        load_strict(controlnet, read_checkpoint(paths.dispose, "dispose"), paths.dispose)

    modules = [unet, pose_net] + ([controlnet] if controlnet is not None else [])
    for module in modules:
        module.to(dtype=dtype).eval().requires_grad_(False)
    vae.eval().requires_grad_(False)
    image_encoder.eval().requires_grad_(False)
    pipeline = DisPoseMimicMotionPipeline(vae=vae, image_encoder=image_encoder, unet=unet, pose_net=pose_net,
                                          scheduler=scheduler, controlnet=controlnet,
                                          feature_extractor=feature_extractor)
    return pipeline.to(device)
