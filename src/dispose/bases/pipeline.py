"""What the sampling pipelines of every base share: :class:`AnimationPipeline` and its input conventions.

Both pipelines (:mod:`dispose.bases.mimicmotion.pipeline`, :mod:`dispose.bases.musepose.pipeline`) take the
same inputs: a reference at the generation size (uint8 / float [0, 1] (H, W, 3), PIL, or (1, 3, H, W)), pose
images as (F, 3, H, W) floats in [-1, 1] or (F, H, W, 3) uint8 skeletons (frame 0 = the reference pose), and
optional DisPose guidance of the same F frames.  The base class checks those inputs once, formats decoded
frames (np, pt, PIL), decodes latents a chunk at a time (to [0, 1] floats, or to uint8 frames as the release
converts them), compiles the denoiser and the ControlNet (``enable_compile``) and leaves model CPU offload to
diffusers (each subclass names its ``model_cpu_offload_seq``; the ControlNet stays out of that chain and so
keeps a hook of its own, resident while sampling).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils import BaseOutput

#: CLIP's normalisation, used when no feature extractor is registered.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Environment variable naming the ``torch.compile`` backend of ``--compile`` (default: torch's, inductor);
#: e.g. ``eager`` or ``aot_eager`` to check the compiled path cheaply (the CPU smoke tests do).
COMPILE_BACKEND_ENV = "DISPOSE_COMPILE_BACKEND"


@dataclass
class AnimationOutput(BaseOutput):
    """``frames``: (B, F, H, W, 3) float in [0, 1] (np), (B, F, 3, H, W) (pt), PIL lists, or latents."""

    frames: Any


def reference_tensor(image: PIL.Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Reference image as (1, 3, H, W) float32 in [0, 1]; uint8 arrays / PIL are divided by 255."""
    if isinstance(image, PIL.Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"reference image: expected (H, W, 3), got {image.shape}")
        scale = 255.0 if image.dtype == np.uint8 else 1.0
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / scale
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"reference image tensor: expected (1, 3, H, W) in [0, 1], got {tuple(image.shape)}")
    return image.float()


def pose_image_size(pose_images) -> tuple[int, int]:
    """(H, W) of float (F, 3, H, W) pose images or uint8 (F, H, W, 3) skeletons; a ValueError otherwise."""
    if isinstance(pose_images, torch.Tensor) and pose_images.is_floating_point():
        return tuple(pose_images.shape[-2:])
    if pose_images.dtype in (np.uint8, torch.uint8) and pose_images.ndim == 4 and pose_images.shape[3] == 3:
        return tuple(pose_images.shape[1:3])
    raise ValueError(f"pose_images: expected float (F, 3, H, W) in [-1, 1] or uint8 (F, H, W, 3), got "
                     f"{pose_images.dtype} {tuple(pose_images.shape)}")


def to_uint8(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """[0, 1] floats -> uint8 by truncation, ``(x * 255).astype(uint8)``, as the release converts frames."""
    if isinstance(frames, torch.Tensor):
        frames = frames.numpy()
    return (np.asarray(frames, np.float32) * 255.0).astype(np.uint8)


def format_frames(video: torch.Tensor, output_type: str):
    """(B, F, 3, H, W) frames in [0, 1] as ``output_type``: "pt" as given, "np" (B, F, H, W, 3), "pil"."""
    if output_type == "pt":
        return video
    array = video.permute(0, 1, 3, 4, 2).numpy()
    if output_type == "np":
        return array
    if output_type == "pil":
        return [[PIL.Image.fromarray(to_uint8(frame)) for frame in clip] for clip in array]
    raise ValueError(f"output_type must be one of np, pt, pil, latent; got {output_type!r}")


class AnimationPipeline(DiffusionPipeline):
    """The part of a DisPose sampling pipeline that does not depend on the base (module docstring).

    A subclass registers ``vae`` and ``controlnet`` (which may be None) among its modules and sets
    ``frame_axis`` (where the frames are in its latents: 1 for (B, F, C, h, w), 2 for (B, C, F, h, w)),
    ``size_multiple`` (what the height and width must be multiples of) and ``compiled_modules``.
    """

    frame_axis: ClassVar[int] = 1
    size_multiple: ClassVar[int] = 8
    compiled_modules: ClassVar[tuple[str, ...]] = ("controlnet",)

    # ------------------------------------------------------------------ inputs
    def check_inputs(self, image, pose_images, guidance, controlnet_interval: int
                     ) -> tuple[torch.Tensor, int, int]:
        """The reference as (1, 3, H, W) in [0, 1] and the (H, W) of the pose images, after checking that the
        inputs fit together; a ValueError names the first one that does not."""
        frames = len(pose_images)
        height, width = pose_image_size(pose_images)
        ref01 = reference_tensor(image)
        if ref01.shape[-2:] != (height, width):
            raise ValueError(f"reference image is {tuple(ref01.shape[-2:])}, pose images are "
                             f"{(height, width)}")
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(f"height and width must be multiples of {self.size_multiple}, got "
                             f"{height}x{width}")
        if guidance is not None:
            if self.controlnet is None:
                raise ValueError("guidance given but the pipeline has no controlnet (load a DisPose "
                                 "checkpoint)")
            if guidance.num_frames != frames or guidance.size != (width, height):
                raise ValueError(f"guidance covers {guidance.num_frames} frames of {guidance.size}, pose "
                                 f"images {frames} of {(width, height)}")
        if controlnet_interval < 1:
            raise ValueError(f"controlnet_interval must be at least 1, got {controlnet_interval}")
        return ref01, height, width

    # ------------------------------------------------------------------ decoding
    def latent_scale(self) -> float:
        """The factor the VAE's latents were multiplied by."""
        return self.vae.config.scaling_factor

    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        """(n, C, h, w) unscaled latents -> (n, 3, H, W) VAE output in [-1, 1]."""
        return self.vae.decode(latents).sample

    @torch.no_grad()
    def iter_decoded(self, latents: torch.Tensor, decode_chunk_size: int = 8, progress_bar=None
                     ) -> Iterator[torch.Tensor]:
        """Latents (frames on ``frame_axis``) -> (B * F, 3, H, W) float32 frames in [0, 1] on the CPU, yielded
        ``decode_chunk_size`` frames at a time from frame 0 (``progress_bar.update()`` after each chunk)."""
        if decode_chunk_size < 1:
            raise ValueError(f"decode_chunk_size must be positive, got {decode_chunk_size}")
        flat = latents.movedim(self.frame_axis, 1).flatten(0, 1) / self.latent_scale()
        for start in range(0, flat.shape[0], decode_chunk_size):
            part = flat[start:start + decode_chunk_size].to(self.vae.dtype)
            decoded = self.decode_chunk(part).float().cpu()
            if progress_bar is not None:
                progress_bar.update()
            yield (decoded / 2 + 0.5).clamp(0, 1)

    def iter_frames(self, latents: torch.Tensor, decode_chunk_size: int = 8, progress_bar=None, *,
                    skip: int = 0) -> Iterator[np.ndarray]:
        """:meth:`iter_decoded` as (n, H, W, 3) uint8 frames (:func:`to_uint8`), the first ``skip`` left
        out."""
        for chunk in self.iter_decoded(latents, decode_chunk_size, progress_bar):
            drop = min(skip, len(chunk))
            skip -= drop
            if drop < len(chunk):
                yield to_uint8(chunk[drop:].permute(0, 2, 3, 1))

    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: int = 8, progress_bar=None
                       ) -> torch.Tensor:
        """Latents -> (B, F, 3, H, W) float32 frames in [0, 1] (:meth:`iter_decoded`)."""
        chunks = list(self.iter_decoded(latents, decode_chunk_size, progress_bar))
        batch, frames = latents.shape[0], latents.shape[self.frame_axis]
        return torch.cat(chunks).reshape(batch, frames, *chunks[0].shape[1:])

    # ------------------------------------------------------------------ speed
    def enable_compile(self, **options) -> None:
        """``torch.compile`` the modules of ``compiled_modules`` in place (first call slow, later ones
        faster); the backend is ``options["backend"]``, else the one ``DISPOSE_COMPILE_BACKEND`` names, else
        torch's default."""
        backend = os.environ.get(COMPILE_BACKEND_ENV)
        if backend and "backend" not in options:
            options["backend"] = backend
        for name in self.compiled_modules:
            module = getattr(self, name, None)
            if module is not None:
                module.compile(**options)
