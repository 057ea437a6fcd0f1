"""DisPose as ComfyUI nodes, each a thin call into :mod:`dispose.engine` / :mod:`dispose.guidance.stage`.

Load models -> ``DISPOSE_MODEL`` (an :class:`~dispose.engine.Animator`: loaded once, kept by ComfyUI's node
cache while the inputs stay the same); Extract poses: IMAGE batch -> ``DISPOSE_POSES`` (a
:class:`~dispose.pose.keypoints.PoseSequence` of the frames, as ``dispose pose --video`` without ``--ref``)
and the skeletons; Compute guidance: reference IMAGE + driving IMAGE batch or poses -> ``DISPOSE_GUIDANCE`` (a
:class:`~dispose.guidance.stage.Guidance`) and its preview (skeleton | F_s | F_d per frame); Animate: model +
guidance -> IMAGE batch and ``DISPOSE_METADATA`` (the engine's metadata); Save sidecar: the metadata as JSON.

IMAGE is ComfyUI's (B, H, W, C) float32 in [0, 1]; the engine's uint8 frames convert exactly both ways
(``round(x * 255)``).  Driving IMAGE batches are sampled by the guidance node's ``sample_stride`` (the release
uses every 2nd frame of a 30 fps video); the animation's reference is the guidance's, at the generation size.
Bad input raises :class:`~dispose.errors.UserError` with the command line's message, which ComfyUI shows on
the node.  See :mod:`.host` for models folders, progress and Cancel.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dispose.errors import UserError
from dispose.integrations.comfyui import host
from dispose.pose.detector_factory import DETECTORS

CATEGORY = "DisPose"
SEED_MAX = 2**63 - 1
#: Widget value meaning "the base's default" (``Base.defaults`` of the model's base; without a model, of the
#: default base): 0 for counts, sizes and scales, -1 for seeds and max_frames (whose 0 means every frame).
BASE_DEFAULT, BASE_DEFAULT_SEED = 0, -1
DTYPES = ["auto", "fp16", "bf16", "fp32"]
DENSE = ["cmp", "propagate", "none"]


def base_value(model, name: str, value, unset=BASE_DEFAULT):
    """``value``, or the base's default of setting ``name`` when it is ``unset`` (:data:`BASE_DEFAULT`)."""
    from dispose.bases import get_base

    if value != unset:
        return value
    return (model.base if model is not None else get_base(None)).defaults[name]


def _default_tip(name: str, unset=BASE_DEFAULT) -> str:
    from dispose.bases import defaults_text

    return f"{unset}: the base's default ({defaults_text(name)})"


def _setting(name: str):
    """The default of a setting that is the same for every base."""
    from dispose.settings import JobSettings

    return getattr(JobSettings(), name)


def to_frames(images: torch.Tensor, what: str) -> np.ndarray:
    """ComfyUI IMAGE (B, H, W, 3) float in [0, 1] -> (B, H, W, 3) uint8."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(f"{what}: expected an IMAGE batch (B, H, W, 3), got shape {tuple(images.shape)}")
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def to_images(frames: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> ComfyUI IMAGE float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0


class DisPoseLoadModels:
    """The base model, DisPose's ControlNet and the guidance models (weights checked first, loaded once)."""

    @classmethod
    def INPUT_TYPES(cls):
        from dispose.bases import BASES, DEFAULT_BASE

        return {"required": {
            "base": (sorted(BASES), {"default": DEFAULT_BASE}),
            "weights": ("STRING", {"default": "",
                                   "tooltip": "folder in the release's pretrained_weights/ layout; "
                                              "empty: ComfyUI's models/dispose/"}),
            "dtype": (DTYPES, {"default": "auto", "tooltip": "auto: fp16 on CUDA, else fp32"}),
            "device": ("STRING", {"default": "auto", "tooltip": "auto, cpu, cuda, cuda:1, mps"}),
            "detector": (list(DETECTORS), {"default": "dwpose", "tooltip": "mediapipe needs no weights"}),
            "dense": (DENSE, {"default": "cmp", "tooltip": "dense motion field: CMP (release), weight-free "
                              "propagation, or none"}),
            "with_dispose": ("BOOLEAN", {"default": True,
                                         "tooltip": "off: the base model alone (baseline runs)"}),
        }}

    RETURN_TYPES = ("DISPOSE_MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, base, weights, dtype, device, detector, dense, with_dispose):
        from dispose.engine import Animator, Runtime

        runtime = Runtime(device=device, dtype=dtype, detector=detector, dense=dense, progress=False)
        return (Animator.load(base=base, weights=host.weights_folder(weights), runtime=runtime,
                              dispose=bool(with_dispose)),)


class DisPoseExtractPoses:
    """Whole-body poses of every frame (first person; frames without one take the previous pose)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",),
                             "fps": ("FLOAT", {"default": 30.0, "min": 0.1, "max": 240.0, "step": 0.1})},
                "optional": {"model": ("DISPOSE_MODEL",
                                       {"tooltip": "use its detector (default: MediaPipe)"})}}

    RETURN_TYPES = ("DISPOSE_POSES", "IMAGE")
    RETURN_NAMES = ("poses", "skeletons")
    FUNCTION = "extract"
    CATEGORY = CATEGORY

    def extract(self, images, fps, model=None):
        from dispose.pose.detector_factory import load_detector
        from dispose.pose.drawing import draw_pose
        from dispose.pose.extract import align_and_fill

        frames = to_frames(images, "images")
        detector = model.guidance_models.detector if model is not None else load_detector(None)
        people = detector.detect_people(frames, progress=False)
        if not any(people):
            raise UserError(f"no person found in any of the {len(frames)} frames by {detector.name}")
        height, width = frames.shape[1:3]
        poses = align_and_fill(None, people, (width, height), (width, height), "none", float(fps)).driving
        return poses, to_images(np.stack([draw_pose(pose, width, height) for pose in poses.poses]))


class DisPoseComputeGuidance:
    """Poses aligned to the reference, the motion fields and (with a model) the keypoint features."""

    @classmethod
    def INPUT_TYPES(cls):
        from dispose.pose.alignment import ALIGN_MODES

        return {
            "required": {
                "reference": ("IMAGE",),
                "resolution": ("INT", {"default": BASE_DEFAULT, "min": 0, "max": 2048, "step": 64,
                                       "tooltip": "short side of the generation size; "
                                                  + _default_tip("resolution")}),
                "sample_stride": ("INT", {"default": BASE_DEFAULT, "min": 0, "max": 100,
                                          "tooltip": "use every N-th driving frame (2 for 30 fps videos); "
                                                     + _default_tip("sample_stride")}),
                "max_frames": ("INT", {"default": BASE_DEFAULT_SEED, "min": -1, "max": 100000,
                                       "tooltip": "at most N driving frames after the stride; 0: all; "
                                                  + _default_tip("max_frames", BASE_DEFAULT_SEED)}),
                "seed": ("INT", {"default": BASE_DEFAULT_SEED, "min": -1, "max": SEED_MAX,
                                 "tooltip": "seed of the DIFT features; "
                                            + _default_tip("seed", BASE_DEFAULT_SEED)}),
            },
            "optional": {
                "driving": ("IMAGE", {"tooltip": "driving frames (or give poses)"}),
                "fps": ("FLOAT", {"default": 30.0, "min": 0.1, "max": 240.0, "step": 0.1,
                                  "tooltip": "frame rate of the driving frames"}),
                "poses": ("DISPOSE_POSES",),
                "model": ("DISPOSE_MODEL", {"tooltip": "its detector, CMP and SD1.5; without it: "
                                                       "MediaPipe and the dense field below, "
                                                       "no keypoint features"}),
                "dense": (["propagate", "none"], {"default": "propagate", "tooltip": "without a model"}),
                "align": (list(ALIGN_MODES), {"default": "global",
                                              "tooltip": "pose alignment to the reference"}),
            },
        }

    RETURN_TYPES = ("DISPOSE_GUIDANCE", "IMAGE")
    RETURN_NAMES = ("guidance", "preview")
    FUNCTION = "compute"
    CATEGORY = CATEGORY

    def compute(self, reference, resolution, sample_stride, max_frames, seed, driving=None, fps=30.0,
                poses=None, model=None, dense="propagate", align="global"):
        from dispose.guidance.pictures import guidance_pictures
        from dispose.guidance.stage import compute_guidance

        if driving is None and poses is None:
            raise UserError("compute guidance: connect the driving frames or their poses")
        image = to_frames(reference, "reference")[0]
        values = guidance_settings(model, resolution, sample_stride, max_frames, seed)
        keys = ("resolution", "sample_stride", "max_frames", "seed")
        resolution, stride, limit, seed = (values[key] for key in keys)
        frames = None if driving is None else to_frames(driving, "driving")[::stride]
        rate = float(fps) / stride if poses is None else None  # a poses input carries its own rate
        with tempfile.TemporaryDirectory(prefix="dispose-poses-") as folder:
            poses_file = None
            if poses is not None:
                frames, poses_file = None, Path(folder) / "poses.json"
                poses.save(poses_file)
            if model is not None:
                settings = model.settings(resolution=int(resolution), sample_stride=stride, max_frames=limit,
                                          seed=int(seed), align=align)
                guidance = model.compute_guidance(image, frames, poses=poses_file, settings=settings,
                                                  on_progress=host.progress_reporter())
            else:
                guidance = compute_guidance(image, frames, poses=poses_file, resolution=int(resolution),
                                            sample_stride=stride, max_frames=limit, fps=rate, align=align,
                                            dense=dense, seed=int(seed), on_progress=host.progress_reporter())
        return guidance, to_images(np.stack(list(guidance_pictures(guidance))))


class DisPoseAnimate:
    """The animation: one frame per driving frame, at the guidance's generation size."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("DISPOSE_MODEL",),
            "guidance": ("DISPOSE_GUIDANCE",),
            "steps": ("INT", {"default": BASE_DEFAULT, "min": 0, "max": 1000,
                              "tooltip": _default_tip("num_inference_steps")}),
            "cfg": ("FLOAT", {"default": BASE_DEFAULT, "min": 0.0, "max": 20.0, "step": 0.1,
                              "tooltip": "guidance scale; " + _default_tip("guidance_scale")}),
            "seed": ("INT", {"default": BASE_DEFAULT_SEED, "min": -1, "max": SEED_MAX,
                             "tooltip": _default_tip("seed", BASE_DEFAULT_SEED)}),
            "frames_per_tile": ("INT", {"default": BASE_DEFAULT, "min": 0, "max": 128,
                                        "tooltip": "frames per tile (window); "
                                                   + _default_tip("num_frames")}),
            "tile_overlap": ("INT", {"default": BASE_DEFAULT, "min": 0, "max": 127,
                                     "tooltip": "overlap of consecutive tiles; "
                                                + _default_tip("frames_overlap")}),
            "controlnet_scale": ("FLOAT", {"default": _setting("controlnet_scale"), "min": 0.0, "max": 4.0,
                                           "step": 0.05}),
            "baseline": ("BOOLEAN", {"default": False, "tooltip": "the base model alone, without DisPose"}),
        }, "optional": {
            "controlnet_interval": ("INT", {
                "default": _setting("controlnet_interval"), "min": 1, "max": 100,
                "tooltip": "run the ControlNet at every K-th step and reuse its residuals in between (1: "
                           "every step, the release; 2 is faster and changes the frames)"}),
        }}

    RETURN_TYPES = ("IMAGE", "DISPOSE_METADATA")
    RETURN_NAMES = ("frames", "metadata")
    FUNCTION = "animate"
    CATEGORY = CATEGORY

    def animate(self, model, guidance, steps, cfg, seed, frames_per_tile, tile_overlap, controlnet_scale,
                baseline, controlnet_interval=1):
        from dispose.engine import Cancelled

        settings = animate_settings(model, min(guidance.size), steps, cfg, seed, frames_per_tile,
                                    tile_overlap, controlnet_scale, baseline, controlnet_interval)
        try:
            result = model.animate(guidance=guidance, settings=settings, on_progress=host.progress_reporter(),
                                   cancel=host.interrupted)
        except Cancelled:
            interrupt = host.interrupt_exception()
            if interrupt is None:
                raise
            raise interrupt from None
        return to_images(result.frames), result.metadata


def guidance_settings(model, resolution, sample_stride, max_frames, seed) -> dict:
    """The guidance node's resolution, sample stride, max frames (None: all) and seed; unset widgets at the
    base's defaults (the model's base; without a model, the default base)."""
    return {"resolution": base_value(model, "resolution", int(resolution)),
            "sample_stride": base_value(model, "sample_stride", int(sample_stride)),
            "max_frames": base_value(model, "max_frames", int(max_frames), BASE_DEFAULT_SEED) or None,
            "seed": base_value(model, "seed", int(seed), BASE_DEFAULT_SEED)}


def animate_settings(model, resolution: int, steps, cfg, seed, frames_per_tile, tile_overlap,
                     controlnet_scale, baseline, controlnet_interval=1):
    """The animation node's JobSettings for ``model``'s base (unset widgets at the base's defaults),
    checked."""
    settings = model.settings(
        num_inference_steps=base_value(model, "num_inference_steps", int(steps)),
        guidance_scale=base_value(model, "guidance_scale", float(cfg)),
        seed=base_value(model, "seed", int(seed), BASE_DEFAULT_SEED),
        num_frames=base_value(model, "num_frames", int(frames_per_tile)),
        frames_overlap=base_value(model, "frames_overlap", int(tile_overlap)),
        controlnet_scale=float(controlnet_scale), controlnet_interval=int(controlnet_interval),
        baseline=bool(baseline), resolution=resolution)
    if not 1 <= settings.frames_overlap < settings.num_frames:
        raise UserError(f"tile_overlap must be at least 1 and below frames_per_tile, got "
                        f"{settings.frames_overlap} / {settings.num_frames}")
    return settings


class DisPoseSaveSidecar:
    """The animation's metadata (settings, seed, inputs and weights fingerprints, timings) as a JSON file."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"metadata": ("DISPOSE_METADATA",),
                             "filename_prefix": ("STRING", {"default": "dispose/animation"})},
                "optional": {"folder": ("STRING", {"default": "",
                                                   "tooltip": "empty: ComfyUI's output folder"})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = CATEGORY

    def save(self, metadata, filename_prefix, folder=""):
        from dispose.media.files import atomic_write_text

        root = host.output_folder(folder)
        stem = root / f"{filename_prefix}_{time.strftime('%Y%m%d-%H%M%S')}"
        path = next(p for n in range(10000) if not (p := Path(f"{stem}_{n:04d}.json")).exists())
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(metadata, indent=2, default=str) + "\n")
        return {"ui": {"text": [str(path)]}}


NODE_CLASS_MAPPINGS = {
    "DisPoseLoadModels": DisPoseLoadModels,
    "DisPoseExtractPoses": DisPoseExtractPoses,
    "DisPoseComputeGuidance": DisPoseComputeGuidance,
    "DisPoseAnimate": DisPoseAnimate,
    "DisPoseSaveSidecar": DisPoseSaveSidecar,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DisPoseLoadModels": "DisPose: load models",
    "DisPoseExtractPoses": "DisPose: extract poses",
    "DisPoseComputeGuidance": "DisPose: compute guidance",
    "DisPoseAnimate": "DisPose: animate",
    "DisPoseSaveSidecar": "DisPose: save sidecar (JSON)",
}

host.register_models_folder()
