"""DIFT features of the reference image (paper sec. 4.2, the ``F_ref`` feeding Eq. 6).

DisPose describes each reference body keypoint by a diffusion feature (DIFT, Tang et al. 2023) taken
from Stable Diffusion 1.5: the reference image is VAE-encoded, noised to timestep ``t`` and passed once
through the SD UNet; the output of one decoder (up) block is the feature map.  Several noise draws are
averaged (an "ensemble").  :class:`DiftFeaturizer` computes that map, stops the UNet right after the
requested up block (the later blocks never run), and can cache the result on disk.

What the release does, and what we reproduce:

* The image is the reference at the generation resolution (the resized and centre-cropped frame, e.g.
  576x1024), scaled to ``[-1, 1]``; no DIFT-specific resize.
* The ensemble is one batch: the latent is a fresh sample of the VAE posterior per member (the release
  repeats the image before ``vae.encode(...).latent_dist.sample()``), times the VAE scaling factor, then
  noised with ``DDIMScheduler.add_noise`` (SD1.5 scheduler config) at ``t``; the features are averaged
  over the members.
* The release computes two maps: ``t=261`` / up block 1 (1280 channels, 1/16 of the image) with the
  prompt ``"photo of a human"``, and ``t=0`` / up block 2 (640 channels, 1/8) with the empty prompt.
  Only the first one is used: it gives the reference point embeddings; the second is handed to the
  ControlNet as ``dift_feat`` and never read there.  :data:`REFERENCE_SETTING` is the used one;
  :data:`NULL_PROMPT_SETTING` is available but nothing in DisPose needs it.

Deliberate differences from the release:

* Seeded: the release draws from the unseeded global RNG, so its features change from run to run.  We
  draw all random numbers from a CPU ``torch.Generator`` seeded by ``seed`` (same numbers on every
  device), first the posterior samples of all members, then the diffusion noise.
* The VAE encoder runs once (the posterior of identical images is identical) and the members sample it;
  this equals the release's repeated encoding in distribution at 1/ensemble of the cost.
* The ensemble mean is accumulated in float32 and returned in the UNet's dtype.
* ``batch_size`` may split the ensemble into smaller UNet batches (memory); the noise is drawn up front,
  so the result does not depend on the split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dispose.errors import UserError
from dispose.media.files import atomic_path

_CACHE_FORMAT = "dispose-dift-v1"


@dataclass(frozen=True)
class DiftSetting:
    """One DIFT extraction: diffusion timestep, up block whose output is the feature, prompt, ensemble."""

    timestep: int = 261
    up_ft_index: int = 1
    prompt: str = "photo of a human"
    ensemble_size: int = 8


#: The setting whose features become DisPose's reference point embeddings (1280 channels, 1/16 scale).
REFERENCE_SETTING = DiftSetting()
#: The release's second setting (640 channels, 1/8 scale); computed there but never used.
NULL_PROMPT_SETTING = DiftSetting(timestep=0, up_ft_index=2, prompt="")


class _StopForward(Exception):
    """Raised by a forward hook to abandon the UNet once the wanted up block has produced its output."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output


def _config_dict(module: nn.Module) -> dict:
    config = getattr(module, "config", None)
    if config is None:
        return {}
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {key: value for key, value in data.items()
            if not key.startswith("_") and key != "transformers_version"}


def module_fingerprint(module: nn.Module, prefixes: tuple[str, ...] = ("",),
                       samples_per_tensor: int = 256) -> str:
    """A cheap identity of a model: its config plus names, shapes, dtypes and strided samples of the tensors
    whose names start with one of ``prefixes``.

    Hashing every weight of SD1.5 would read gigabytes; a strided sample of each tensor still tells
    apart different checkpoints and fine-tunes.
    """
    digest = hashlib.sha256(json.dumps(_config_dict(module), sort_keys=True, default=str).encode())
    for name, tensor in module.state_dict().items():
        if not name.startswith(prefixes):
            continue
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // samples_per_tensor)
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(flat[::step][:samples_per_tensor].to("cpu", torch.float64).numpy().tobytes())
    return digest.hexdigest()


def _as_uint8_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image: expected a uint8 RGB array of shape (H, W, 3), "
                         f"got {array.dtype} {array.shape}")
    if array.shape[0] % 8 or array.shape[1] % 8:
        raise ValueError(f"image: height and width must be multiples of 8 (the VAE's scale), "
                         f"got {array.shape[:2]}")
    return np.ascontiguousarray(array)


def from_local_folder(model_cls, root: str | Path, subfolder: str, dtype: torch.dtype):
    """``model_cls.from_pretrained(root, subfolder=...)`` in ``dtype`` from local files only; a snapshot that
    holds only the ``fp16`` variant of the weights (what the release loads) is accepted too.  A failure is a
    UserError naming the folder."""
    options = {"subfolder": subfolder, "local_files_only": True, "torch_dtype": dtype}
    try:
        return model_cls.from_pretrained(root, **options)
    except (OSError, ValueError) as error:
        try:
            return model_cls.from_pretrained(root, variant="fp16", **options)
        except (OSError, ValueError):
            raise UserError(f"cannot load {subfolder}/ of {root}: {error}") from None


def _default_scheduler():
    from diffusers import DDIMScheduler

    # Stable Diffusion 1.5's scheduler/scheduler_config.json (only the betas matter for add_noise).
    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                         steps_offset=1)


class DiftFeaturizer:
    """Stable Diffusion 1.5 feature extractor for one image at a time (see module docstring).

    Args:
        unet: a diffusers ``UNet2DConditionModel`` (SD1.5); its device and dtype are used throughout.
        vae: a diffusers ``AutoencoderKL`` (only the encoder is used).
        text_encoder: a transformers ``CLIPTextModel``.
        tokenizer: the matching ``CLIPTokenizer``.
        scheduler: supplies ``add_noise``; default: a ``DDIMScheduler`` with SD1.5's betas.
        cache_dir: folder for cached feature maps (safetensors), or None for no cache.
        batch_size: UNet batch for the ensemble (None = the whole ensemble at once).
        progress: show a progress bar over the ensemble batches.
    """

    def __init__(self, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, tokenizer, scheduler=None, *,
                 cache_dir: str | Path | None = None, batch_size: int | None = None,
                 progress: bool = False) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.unet = unet.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.scheduler = scheduler if scheduler is not None else _default_scheduler()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self.progress = progress
        self._fingerprint: str | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, **kwargs) -> DiftFeaturizer:
        """Load SD1.5 from a local diffusers folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
        ``scheduler/``); never downloads.  Weights in the ``fp16`` variant only are accepted too."""
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        root = Path(path)
        missing = [sub for sub in ("unet", "vae", "text_encoder", "tokenizer") if not (root / sub).is_dir()]
        if missing:
            raise UserError(f"{root} is not a Stable Diffusion 1.5 folder (no {', '.join(missing)}/): "
                            "pass the local stable-diffusion-v1-5 snapshot, in diffusers layout")

        unet = from_local_folder(UNet2DConditionModel, root, "unet", dtype)
        vae = from_local_folder(AutoencoderKL, root, "vae", dtype)
        text_encoder = from_local_folder(CLIPTextModel, root, "text_encoder", dtype)
        vae.decoder = None  # only the encoder is ever used
        tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", local_files_only=True)
        scheduler = (DDIMScheduler.from_pretrained(root, subfolder="scheduler", local_files_only=True)
                     if (root / "scheduler").is_dir() else None)
        return cls(unet.to(device), vae.to(device), text_encoder.to(device), tokenizer, scheduler, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def model_fingerprint(self) -> str:
        """Identity of the UNet, the VAE's encoder and the text encoder (computed once, at the first call)."""
        if self._fingerprint is None:
            parts = [module_fingerprint(self.unet), module_fingerprint(self.vae, ("encoder.", "quant_conv.")),
                     module_fingerprint(self.text_encoder)]
            self._fingerprint = hashlib.sha256("|".join(parts).encode()).hexdigest()
        return self._fingerprint

    def _token_ids(self, prompt: str) -> torch.Tensor:
        return self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids

    def _prompt_embeds(self, token_ids: torch.Tensor) -> torch.Tensor:
        # SD1.5's text encoder takes no attention mask: padding tokens are attended, as in diffusers.
        device = next(self.text_encoder.parameters()).device
        return self.text_encoder(token_ids.to(device)).last_hidden_state.to(self.device, self.dtype)

    def cache_key(self, image: np.ndarray, setting: DiftSetting, seed: int) -> str:
        """sha256 over the image bytes, the model identity, the prompt's tokens, the setting, the seed, the
        dtype and the noise level; not the device, so a map computed on one device serves the others."""
        image = _as_uint8_image(image)
        alphas = getattr(self.scheduler, "alphas_cumprod", None)
        record = {
            "format": _CACHE_FORMAT,
            "image": hashlib.sha256(image.tobytes()).hexdigest(),
            "shape": list(image.shape),
            "model": self.model_fingerprint(),
            "tokens": self._token_ids(setting.prompt).reshape(-1).tolist(),
            "setting": asdict(setting),
            "seed": seed,
            "dtype": str(self.dtype),
            "alpha_t": None if alphas is None else float(alphas[setting.timestep]),
        }
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()

    def __call__(self, image: np.ndarray | torch.Tensor, setting: DiftSetting = REFERENCE_SETTING, *,
                 seed: int = 0) -> torch.Tensor:
        """Feature map of ``image`` (uint8 RGB, (H, W, 3), H and W multiples of 8).

        Returns (C, H / s, W / s) on the UNet's device in its dtype, where C and s depend on the up
        block (SD1.5: index 1 -> 1280 channels at s=16; index 2 -> 640 at s=8).  Loaded from the cache
        when ``cache_dir`` holds it, else computed (and stored).
        """
        image = _as_uint8_image(image)
        self._check_setting(setting)
        cache_file = None
        if self.cache_dir is not None:
            cache_file = self.cache_dir / f"dift-{self.cache_key(image, setting, seed)}.safetensors"
            if cache_file.is_file():
                return load_file(cache_file)["features"].to(self.device, self.dtype)
        features = self.compute(image, setting, seed=seed)
        if cache_file is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache_file, cache=True) as tmp:
                save_file({"features": features.detach().to("cpu").contiguous()}, str(tmp),
                          metadata={"format": _CACHE_FORMAT, "setting": json.dumps(asdict(setting)),
                                    "seed": str(seed)})
        return features

    def _check_setting(self, setting: DiftSetting) -> None:
        num_blocks = len(self.unet.up_blocks)
        if not 0 <= setting.up_ft_index < num_blocks:
            raise ValueError(f"up_ft_index must be in [0, {num_blocks}), got {setting.up_ft_index}")
        num_steps = self.scheduler.config.num_train_timesteps
        if not 0 <= setting.timestep < num_steps:
            raise ValueError(f"timestep must be in [0, {num_steps}), got {setting.timestep}")
        if setting.ensemble_size < 1:
            raise ValueError(f"ensemble_size must be positive, got {setting.ensemble_size}")

    @torch.no_grad()
    def compute(self, image: np.ndarray | torch.Tensor, setting: DiftSetting = REFERENCE_SETTING, *,
                seed: int = 0) -> torch.Tensor:
        """Run the extraction (no cache); see :meth:`__call__`."""
        from diffusers.utils.torch_utils import randn_tensor
        from tqdm.auto import tqdm

        image = _as_uint8_image(image)
        self._check_setting(setting)
        device, dtype = self.device, self.dtype
        ensemble = setting.ensemble_size
        generator = torch.Generator("cpu").manual_seed(seed)

        vae_param = next(self.vae.parameters())
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        posterior = self.vae.encode(pixels.to(vae_param.device, vae_param.dtype)).latent_dist
        mean, std = posterior.mean.to(device, dtype), posterior.std.to(device, dtype)
        draws = randn_tensor((ensemble, *mean.shape[1:]), generator=generator, device=device, dtype=dtype)
        latents = (mean + std * draws) * self.vae.config.scaling_factor
        noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=dtype)
        timestep = torch.tensor(setting.timestep, dtype=torch.long, device=device)
        noisy = self.scheduler.add_noise(latents, noise, timestep)

        prompt_embeds = self._prompt_embeds(self._token_ids(setting.prompt))
        total: torch.Tensor | None = None
        batches = list(self._batches(ensemble))
        for start, stop in tqdm(batches, desc="DIFT", disable=not self.progress or len(batches) < 2):
            block_out = self._up_block_output(noisy[start:stop], timestep, prompt_embeds, setting.up_ft_index)
            summed = block_out.float().sum(0)
            total = summed if total is None else total + summed
        return (total / ensemble).to(dtype)

    def _batches(self, ensemble: int) -> Iterator[tuple[int, int]]:
        step = self.batch_size or ensemble
        for start in range(0, ensemble, step):
            yield start, min(start + step, ensemble)

    def _up_block_output(self, sample: torch.Tensor, timestep: torch.Tensor, prompt_embeds: torch.Tensor,
                         index: int) -> torch.Tensor:
        """Output of ``unet.up_blocks[index]``; the forward pass is abandoned right after that block."""

        def stop(_module, _args, output):
            raise _StopForward(output)

        handle = self.unet.up_blocks[index].register_forward_hook(stop)
        try:
            self.unet(sample, timestep, encoder_hidden_states=prompt_embeds.expand(len(sample), -1, -1))
        except _StopForward as stopped:
            return stopped.output
        finally:
            handle.remove()
        raise RuntimeError(f"the UNet never ran up block {index}: is it a diffusers UNet2DConditionModel?")
