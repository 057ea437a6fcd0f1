"""MusePose as a base model: weight components and layout, loader, sampling call, default settings, tables.

Layout of ``--weights DIR`` (the release's ``pretrained_weights/``, MusePose README)::

  DIR/
    MusePose/denoising_unet.pth,                    TMElyralab/MusePose
             reference_unet.pth, pose_guider.pth,
             motion_module.pth
    sd-image-variations-diffusers/unet/config.json  lambdalabs/sd-image-variations-diffusers (config only)
    image_encoder/                                  lambdalabs/sd-image-variations-diffusers (image_encoder/)
    sd-vae-ft-mse/                                  stabilityai/sd-vae-ft-mse
    DisPose_MusePose.pth                            made by ``dispose train --base musepose`` (no public one)

plus, for DisPose, the SD1.5 (DIFT), DWPose and CMP components the guidance stage needs.  Only the UNet
*config* of sd-image-variations is read: the release loads its UNet weights and then overwrites every one of
them with ``denoising_unet.pth``.

Registering MusePose needs: :data:`COMPONENTS`, :func:`required_components`, :func:`load_pipeline`,
:data:`DEFAULT_SETTINGS`, :func:`sample`, :func:`tiles`, :func:`sampling_steps`, :func:`steps_per_video`,
:func:`parameter_counts` and :func:`verify_checkpoint` (the fields of :class:`dispose.bases.Base`), and the
pipeline class :class:`~dispose.bases.musepose.pipeline.DisPoseMusePosePipeline`.

Loading is strict (:mod:`dispose.checkpoints`): the networks are built on the meta device and take the files'
tensors; the key mapping of the motion modules and what each file must hold are in
:mod:`dispose.models.musepose.release_files`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from dispose.bases.musepose.pipeline import (
    DEFAULTS,
    MUSEPOSE_SCHEDULER,
    DisPoseMusePosePipeline,
    context_windows,
    padded_length,
)
from dispose.checkpoints import load_strict, read_state_dict
from dispose.models.musepose.release_files import (
    DENOISING_FILE,
    MOTION_FILE,
    POSE_GUIDER_FILE,
    REFERENCE_FILE,
    RELEASE_FILES,
    build_pose_guider,
    denoising_state,
)
from dispose.pipelines.weights import Component, read_unet_config

#: The DisPose ControlNet checkpoint for MusePose, as ``dispose train --base musepose`` exports it.
DISPOSE_MUSEPOSE_FILE = "DisPose_MusePose.pth"
#: diffusers' UNet config of lambdalabs/sd-image-variations-diffusers (SD1.x layout, CLIP-image context 768).
SD_IMAGE_VARIATIONS_UNET_CONFIG = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": (320, 640, 1280, 1280),
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), "downsample_padding": 1,
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-5, "norm_num_groups": 32, "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
}
_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
            "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin")

#: MusePose's own weight components (the guidance stage adds SD1.5, DWPose and CMP for DisPose runs).
COMPONENTS: tuple[Component, ...] = (
    Component("musepose", "--musepose", ("MusePose",), "TMElyralab/MusePose", None,
              tuple((name,) for name in RELEASE_FILES),
              "MusePose (denoising UNet, reference UNet, pose guider, motion module)"),
    Component("sd_image_variations", "--sd-image-variations", ("sd-image-variations-diffusers",),
              "lambdalabs/sd-image-variations-diffusers", None, (("unet/config.json",),),
              "SD image variations (the UNet config MusePose inflates)"),
    Component("clip_image_encoder", "--clip-image-encoder",
              ("image_encoder", "sd-image-variations-diffusers/image_encoder"),
              "lambdalabs/sd-image-variations-diffusers", None,
              (("config.json",), ("model.safetensors", "pytorch_model.bin", "model.fp16.safetensors",
                                  "pytorch_model.fp16.bin")),
              "CLIP image encoder of SD image variations (its image_encoder/ folder)"),
    Component("sd_vae", "--sd-vae", ("sd-vae-ft-mse",), "stabilityai/sd-vae-ft-mse", None,
              (("config.json",), _WEIGHTS), "sd-vae-ft-mse VAE"),
    Component("dispose_musepose", "--dispose-musepose", (DISPOSE_MUSEPOSE_FILE,), "", DISPOSE_MUSEPOSE_FILE,
              what="DisPose hybrid ControlNet for MusePose "
                   "(no public checkpoint: dispose train --base musepose)"),
)
_BY_KEY = {component.key: component for component in COMPONENTS}

#: :class:`~dispose.settings.JobSettings` values of a MusePose run (the release's ``test_stage_2.py``: windows
#: of 48 frames overlapping by 4, 20 DDIM steps, guidance 3.5, every 2nd pose frame, at most 300 pose frames,
#: seed 99, 768x768).  MusePose resizes the reference and the aligned pose video to 768x768 without cropping
#: and scales the result back to the video's size; DisPose trained its MusePose ControlNet at 512x512.
DEFAULT_SETTINGS = {"resolution": DEFAULTS["width"], "num_frames": DEFAULTS["context_frames"],
                    "frames_overlap": DEFAULTS["context_overlap"],
                    "num_inference_steps": DEFAULTS["num_inference_steps"],
                    "guidance_scale": DEFAULTS["guidance_scale"], "sample_stride": DEFAULTS["sample_stride"],
                    "max_frames": DEFAULTS["max_frames"], "seed": DEFAULTS["seed"]}


def required_components(dispose: bool) -> list[str]:
    """Keys of MusePose's components a run needs (the DisPose checkpoint only with ``dispose``)."""
    return ["musepose", "sd_image_variations", "clip_image_encoder", "sd_vae",
            *(["dispose_musepose"] if dispose else [])]


def _path(paths, key: str) -> Path:
    value = paths.get(key) if isinstance(paths, Mapping) else getattr(paths, key, None)
    if value is None:
        raise ValueError(f"no path resolved for the {key!r} weight component")
    return Path(value)


def _read(path: Path, component: str) -> dict[str, torch.Tensor]:
    known = _BY_KEY[component]
    what = f"MusePose's {path.name}" if component == "musepose" else f"the {known.what} checkpoint"
    return read_state_dict(path, what=what, source=known.source if known.hub_repo else None, mmap=True)


def load_musepose(folder: Path, unet_config: Mapping):
    """(denoising UNet, reference UNet, pose guider) from the release's ``MusePose/`` folder, strictly."""
    from accelerate import init_empty_weights

    from dispose.models.musepose.denoising_unet import MusePoseDenoisingUNet, motion_config_from_sd
    from dispose.models.musepose.reference import MusePoseReferenceUNet

    with init_empty_weights():
        denoising = MusePoseDenoisingUNet.from_config(motion_config_from_sd(unet_config))
        reference = MusePoseReferenceUNet.from_config(dict(unet_config))
        pose_guider = build_pose_guider(denoising.config.block_out_channels[0])
    files = {name: folder / name for name in RELEASE_FILES}
    state = denoising_state(_read(files[DENOISING_FILE], "musepose"), _read(files[MOTION_FILE], "musepose"),
                            files[DENOISING_FILE], files[MOTION_FILE])
    load_strict(denoising, state, f"{files[DENOISING_FILE]} + {files[MOTION_FILE]}",
                what="MusePose's denoising UNet (denoising_unet.pth + motion_module.pth)")
    load_strict(reference, _read(files[REFERENCE_FILE], "musepose"), files[REFERENCE_FILE],
                what="MusePose's reference_unet.pth")
    load_strict(pose_guider, _read(files[POSE_GUIDER_FILE], "musepose"), files[POSE_GUIDER_FILE],
                what="MusePose's pose_guider.pth")
    return denoising, reference, pose_guider


def load_controlnet(checkpoint: Path, denoising_unet: torch.nn.Module):
    """HybridControlNetSD shaped after the denoising UNet with the checkpoint's weights (strict)."""
    from accelerate import init_empty_weights

    from dispose.models.controlnet_sd import HybridControlNetSD

    state = _read(checkpoint, "dispose_musepose")
    with init_empty_weights():
        controlnet = HybridControlNetSD.from_unet(denoising_unet, load_weights_from_unet=False,
                                                  **HybridControlNetSD.options_from_state_dict(state))
    load_strict(controlnet, state, checkpoint, what="a DisPose hybrid ControlNet for MusePose (SD1.5)")
    return controlnet


def _clip_folder(path: Path) -> Path:
    """The image encoder folder: the component itself, or its ``image_encoder/`` (a whole hub snapshot)."""
    return path / "image_encoder" if (path / "image_encoder" / "config.json").is_file() else path


def load_pipeline(paths, dispose: bool = True, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> DisPoseMusePosePipeline:
    """The MusePose pipeline from resolved weight paths (a mapping or an object with one attribute per
    component key); ``dispose=False`` skips the ControlNet (plain MusePose)."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPVisionModelWithProjection

    from dispose.guidance.dift import from_local_folder

    unet_config = read_unet_config(_path(paths, "sd_image_variations"), SD_IMAGE_VARIATIONS_UNET_CONFIG)
    denoising, reference, pose_guider = load_musepose(_path(paths, "musepose"), unet_config)
    controlnet = load_controlnet(_path(paths, "dispose_musepose"), denoising) if dispose else None
    vae = from_local_folder(AutoencoderKL, _path(paths, "sd_vae"), "", dtype)
    image_encoder = from_local_folder(CLIPVisionModelWithProjection,
                                      _clip_folder(_path(paths, "clip_image_encoder")), "", dtype)
    for module in (denoising, reference, pose_guider, controlnet, vae, image_encoder):
        if module is not None:  # nn.Module.to: diffusers' ModelMixin.to warns on dtype casts
            torch.nn.Module.to(module, dtype=dtype).eval().requires_grad_(False)
    pipeline = DisPoseMusePosePipeline(vae=vae, image_encoder=image_encoder, reference_unet=reference,
                                       denoising_unet=denoising, pose_guider=pose_guider,
                                       scheduler=DDIMScheduler(**MUSEPOSE_SCHEDULER), controlnet=controlnet)
    return pipeline.to(device)


def sample(pipeline: DisPoseMusePosePipeline, request) -> Iterator[np.ndarray]:
    """One video for a :class:`dispose.bases.SamplingRequest`: samples the latents (the skeletons read a
    window at a time), then decodes them and yields (n, H, W, 3) uint8 driving frames a decoding chunk at a
    time."""
    job, runtime = request.settings, request.runtime
    latents = pipeline(request.reference, request.skeletons, request.guidance,
                       num_inference_steps=job.num_inference_steps, guidance_scale=job.guidance_scale,
                       context_frames=job.num_frames, context_overlap=job.frames_overlap,
                       controlnet_conditioning_scale=job.controlnet_scale,
                       controlnet_interval=job.controlnet_interval, decode_chunk_size=job.decode_chunk_size,
                       cache_guidance=runtime.cache_guidance, guidance_cache_mb=runtime.guidance_cache_mb,
                       generator=request.generator, output_type="latent", progress_bar=request.progress_bar,
                       callback_on_step_end=request.callback_on_step_end).frames
    yield from pipeline.iter_frames(latents, job.decode_chunk_size, request.progress_bar)


def tiles(num_frames: int, settings) -> list[list[int]]:
    """The sampling windows of a video of ``num_frames`` frames (frame 0 = the reference pose, not generated),
    in that video's indices; padding frames (the last pose repeated) count as the last frame."""
    driving = num_frames - 1
    windows = context_windows(padded_length(driving, settings.num_frames, settings.frames_overlap),
                              settings.num_frames, settings.frames_overlap)
    return [[min(frame, driving - 1) + 1 for frame in window] for window in windows]


def sampling_steps(num_frames: int, settings) -> int:
    """Progress units of sampling: one per window and step."""
    return settings.num_inference_steps * len(tiles(num_frames, settings))


def steps_per_video(num_frames: int, settings) -> int:
    """Progress units of a video: one per window and step, one per decoded chunk of driving frames."""
    return sampling_steps(num_frames, settings) + -(-(num_frames - 1) // settings.decode_chunk_size)


def verify_checkpoint(kind: str, path: Path, config: str | Path | None = None) -> None:
    """Load a written checkpoint of ``kind`` strictly: ``"dispose_musepose"`` (the ControlNet) or
    ``"musepose"`` (a ``MusePose/`` folder); ``config``: the sd-image-variations folder or UNet config
    (default built in)."""
    from accelerate import init_empty_weights

    from dispose.models.musepose.denoising_unet import MusePoseDenoisingUNet, motion_config_from_sd

    unet_config = read_unet_config(config, SD_IMAGE_VARIATIONS_UNET_CONFIG)
    if kind == "musepose":
        load_musepose(Path(path), unet_config)
        return
    if kind != "dispose_musepose":
        raise ValueError(f"unknown MusePose checkpoint kind {kind!r}")
    with init_empty_weights():
        denoising = MusePoseDenoisingUNet.from_config(motion_config_from_sd(unet_config))
    load_controlnet(Path(path), denoising)


def _count(module: torch.nn.Module) -> dict:
    state = module.state_dict()
    return {"tensors": len(state), "parameters": sum(tensor.numel() for tensor in state.values())}


def _sum(*counts: dict) -> dict:
    return {key: sum(count[key] for count in counts) for key in ("tensors", "parameters")}


def parameter_table(unet_config: Mapping | None = None) -> list[tuple[str, list[tuple[str, dict, str]]]]:
    """Full-size tensor and parameter counts, built on the meta device:
    ``[(section, [(label, counts, note)])]`` with ``counts = {"tensors", "parameters"}``."""
    from accelerate import init_empty_weights

    from dispose.models.controlnet_sd import HybridControlNetSD
    from dispose.models.musepose.denoising_unet import MusePoseDenoisingUNet, motion_config_from_sd
    from dispose.models.musepose.reference import MusePoseReferenceUNet
    from dispose.models.musepose.release_files import is_motion_key

    config = dict(unet_config or SD_IMAGE_VARIATIONS_UNET_CONFIG)
    with init_empty_weights():
        denoising = MusePoseDenoisingUNet.from_config(motion_config_from_sd(config))
        reference = MusePoseReferenceUNet.from_config(config)
        pose_guider = build_pose_guider(denoising.config.block_out_channels[0])
        controlnet = HybridControlNetSD.from_unet(denoising, load_weights_from_unet=False)
    state = denoising.state_dict()
    spatial = {"tensors": 0, "parameters": 0}
    motion = {"tensors": 0, "parameters": 0}
    for key, tensor in state.items():
        part = motion if is_motion_key(key) else spatial
        part["tensors"] += 1
        part["parameters"] += tensor.numel()
    base = [("denoising_unet", spatial, DENOISING_FILE + " (SD1.5 2D layers)"),
            ("motion_modules", motion, MOTION_FILE + " (21 AnimateDiff-v2 modules)"),
            ("reference_unet", _count(reference), REFERENCE_FILE),
            ("pose_guider", _count(pose_guider), POSE_GUIDER_FILE)]
    base.append(("total", _sum(*(row[1] for row in base)), "paper Table 7: 2072.64 \"MB\" = total / 2^20"))
    parts = [(name, _count(getattr(controlnet, name)), "") for name in
             ("conv_in", "time_embedding", "down_blocks", "mid_block", "controlnet_down_blocks",
              "controlnet_mid_block", "controlnet_cond_embedding", "point_adapter")]
    return [("DisPose hybrid ControlNet for MusePose (SD1.5 encoder, trainable):",
             [("total", _count(controlnet), ""), *parts]),
            ("MusePose (frozen in DisPose; all four trained by MusePose):", base)]


def parameter_counts(config: str | Path | None = None) -> list:
    """:func:`parameter_table` as ``dispose models`` prints it: ``[(section, [(label, tensors, parameters,
    note)])]``, for the sd-image-variations UNet config at ``config`` (default built in)."""
    table = parameter_table(read_unet_config(config, SD_IMAGE_VARIATIONS_UNET_CONFIG))
    return [(section, [(label, counts["tensors"], counts["parameters"], note)
                       for label, counts, note in rows])
            for section, rows in table]
