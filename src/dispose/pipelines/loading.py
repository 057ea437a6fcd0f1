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
match (a mismatch names the keys), except for the skipped SVD entries above.  Unreadable checkpoint
files raise a UserError naming the file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dispose.errors import UserError
from dispose.pipelines.mimicmotion import DisPoseMimicMotionPipeline
from dispose.pipelines.weights import COMPONENTS, WeightPaths

#: Prefixes of MimicMotion_1-1.pth entries that are not ours to load (SVD parts saved along).
_IGNORED_PREFIXES = ("vae.", "image_encoder.")


def _load_file(path: Path):
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:  # memory-mapped: the tensors become the parameters without a second copy
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) serialisation cannot be mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: Path, component: str) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth`` (``torch.load(weights_only=True)``) or ``.safetensors`` file, turning a
    damaged file into one clear UserError."""
    source = COMPONENTS[component].source if component in COMPONENTS else ""
    path = Path(path)
    try:
        state = _load_file(path)
    except Exception as error:  # noqa: BLE001 - pickle/zip/header errors of many kinds mean "damaged file"
        raise UserError(f"cannot read checkpoint {path} ({type(error).__name__}: {error}); the file is damaged "
                        f"or incomplete: download it again{' from ' + source if source else ''}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"checkpoint {path} is not a state dict of tensors; is it the right file?")
    return state


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` with every key matching, else a UserError listing (a few of) the differing keys.

    A module built on the meta device takes the state's tensors as its own (``assign``; they keep the
    state's dtype); otherwise they are copied into the existing parameters."""
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
    on_meta = any(tensor.is_meta for tensor in own.values())
    module.load_state_dict(state, strict=True, assign=on_meta)
    left = [name for name, tensor in [*module.named_parameters(), *module.named_buffers()] if tensor.is_meta]
    if left:
        raise RuntimeError(f"{type(module).__name__} still has tensors without values after loading {path}: "
                           f"{', '.join(left[:5])}")


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


def read_unet_config(path: str | Path | None) -> dict:
    """A UNet config from an SVD folder (``unet/config.json``), a ``unet`` folder or a ``config.json`` file;
    None gives SVD-xt-1.1's (built in)."""
    import json

    from dispose.models.unet_mimicmotion import SVD_XT_UNET_CONFIG

    if path is None:
        return dict(SVD_XT_UNET_CONFIG)
    path = Path(path)
    candidates = [path] if path.is_file() else [path / "unet" / "config.json", path / "config.json"]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (OSError, ValueError) as error:
                raise UserError(f"cannot read the UNet config {candidate}: {error}") from None
    raise UserError(f"{path} holds no UNet config: pass the SVD folder (with unet/config.json) or a config.json")


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
    load_strict(unet, unet_state, checkpoint)
    load_strict(pose_net, pose_state, checkpoint)
    return unet, pose_net


def load_controlnet(checkpoint: Path, unet: torch.nn.Module):
    """HybridControlNetSVD shaped after ``unet`` (any device, meta included) with ``DisPose.pth``'s weights."""
    from accelerate import init_empty_weights

    from dispose.models.controlnet_svd import HybridControlNetSVD

    state = read_checkpoint(checkpoint, "dispose")
    with init_empty_weights():
        controlnet = HybridControlNetSVD.from_unet(unet, load_weights_from_unet=False,
                                                   **HybridControlNetSVD.options_from_state_dict(state))
    load_strict(controlnet, state, checkpoint)
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
