"""Where the weights live: the release's folder layout, per-file overrides, the local Hugging Face cache,
one up-front check listing everything missing, and fingerprints for the sidecar.

:data:`COMPONENTS` holds every known weight component: the guidance stage's own (SD1.5 for DIFT, DWPose,
CMP) are declared here, each base model's are added by its registry entry (:mod:`dispose.bases`).
Layout of ``--weights DIR`` for MimicMotion (the release's ``pretrained_weights/``)::

    DIR/
      MimicMotion_1-1.pth                      tencent/MimicMotion            (UNet + PoseNet)
      DisPose.pth                              lihxxx/DisPose                 (hybrid ControlNet)
      dwpose/yolox_l.onnx                      yzd-v/DWPose
      dwpose/dw-ll_ucoco_384.onnx              yzd-v/DWPose
      stable-diffusion-v1-5/                   stable-diffusion-v1-5/stable-diffusion-v1-5 (DIFT)
      stable-video-diffusion-img2vid-xt-1-1/   stabilityai/stable-video-diffusion-img2vid-xt-1-1
      cmp/ckpt_iter_42000.pth.tar              MyNiuuu/MOFA-Video-Hybrid (CMP)

The release expects the CMP checkpoint inside its source tree, at
``mimicmotion/modules/cmp/experiments/semiauto_annot/resnet50_vip+mpii_liteflow/checkpoints/
ckpt_iter_42000.pth.tar``; that path is also accepted below ``DIR``.  A ``.safetensors`` copy written by
``dispose convert`` beside ``MimicMotion_1-1.pth`` / ``DisPose.pth`` (same name, new suffix) is preferred
to the ``.pth`` when both exist: it loads faster and without unpickling.  Every component can be given on
its own (a path, or a Hugging Face id ``owner/name`` for folders, ``owner/name/path/in/repo`` for
files); a component found nowhere else is looked up under its default id in the local Hugging Face
cache.  The cache is only read (``local_files_only``): nothing is ever downloaded.

Fingerprints (:func:`fingerprint`) are the size and full sha256 of each weight/config file, for the
sidecar; hashes are cached per file version (:mod:`dispose.hashing`), so only the first run reads the
gigabytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dispose.errors import UserError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.+-]+)+$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".onnx", ".tar")
CMP_RELEASE_PATH = ("mimicmotion/modules/cmp/experiments/semiauto_annot/resnet50_vip+mpii_liteflow/"
                    "checkpoints/ckpt_iter_42000.pth.tar")


@dataclass(frozen=True)
class Component:
    """One weight component: where it sits in the layout and where to get it."""

    key: str
    option: str
    layout: tuple[str, ...]  # candidate paths relative to --weights, first = documented one
    hub_repo: str
    hub_file: str | None  # file inside the hub repo; None = the repo is a folder component
    needs: tuple[tuple[str, ...], ...] = ()  # inside a folder: groups of alternatives, one of each must exist
    what: str = ""

    @property
    def is_folder(self) -> bool:
        return self.hub_file is None

    @property
    def source(self) -> str:
        if not self.hub_repo:  # no public file (e.g. a ControlNet only our trainer makes): ``what`` says how
            return self.what
        url = f"https://huggingface.co/{self.hub_repo}"
        return f"{url} ({self.hub_file})" if self.hub_file else url


def model_files(sub: str, stems: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{sub}/{stem}{variant}{suffix}" for stem in stems for variant in ("", ".fp16")
                 for suffix in (".safetensors", ".bin"))


#: Every known component, by key: the guidance stage's below, the bases' added by :mod:`dispose.bases`.
COMPONENTS: dict[str, Component] = {c.key: c for c in (
    Component("sd15", "--sd15", ("stable-diffusion-v1-5",),
              "stable-diffusion-v1-5/stable-diffusion-v1-5", None,
              (("unet/config.json",), model_files("unet", ("diffusion_pytorch_model",)),
               ("vae/config.json",), model_files("vae", ("diffusion_pytorch_model",)),
               ("text_encoder/config.json",), model_files("text_encoder", ("model", "pytorch_model")),
               ("tokenizer/vocab.json", "tokenizer/tokenizer.json")),
              "Stable Diffusion 1.5 (DIFT features)"),
    Component("dwpose", "--dwpose", ("dwpose",), "yzd-v/DWPose", None,
              (("yolox_l.onnx",), ("dw-ll_ucoco_384.onnx",)), "DWPose detector (ONNX)"),
    Component("cmp", "--cmp", ("cmp/ckpt_iter_42000.pth.tar", CMP_RELEASE_PATH), "MyNiuuu/MOFA-Video-Hybrid",
              "models/cmp/experiments/semiauto_annot/resnet50_vip+mpii_liteflow/checkpoints/ckpt_iter_42000.pth.tar",
              what="CMP motion propagation (dense motion field F_d; without it, pass --dense propagate)"),
)}

#: What a run can do instead of each weight-free-replaceable component (listed when it is missing).
ALTERNATIVES = {"dwpose": "--detector mediapipe (weight-free poses, no hand keypoints)",
                "cmp": "--dense propagate (weight-free dense field) or --dense none",
                "dispose": "--baseline (the base model without DisPose)"}


def register_components(components) -> None:
    """Add a base model's components (called by :func:`dispose.bases.register`)."""
    for component in components:
        known = COMPONENTS.get(component.key)
        if known is not None and known != component:
            raise ValueError(f"weight component {component.key!r} is declared twice, differently")
        COMPONENTS[component.key] = component


class WeightPaths:
    """Resolved local paths of components by key (``paths.svd`` or ``paths["svd"]``; None = not resolved)
    and how each was found (``origins``)."""

    def __init__(self) -> None:
        self.found: dict[str, Path] = {}
        self.origins: dict[str, str] = {}

    def __getitem__(self, key: str) -> Path | None:
        return self.found.get(key)

    def __getattr__(self, key: str) -> Path | None:
        if key in COMPONENTS:
            return self.found.get(key)
        raise AttributeError(key)


def is_hub_id(text: str) -> bool:
    """``owner/name`` or ``owner/name/path`` that is not an existing local path."""
    return bool(_HUB_ID.match(text)) and not Path(text).exists()


def from_hub_cache(repo_id: str, filename: str | None = None) -> Path | None:
    """Local path of a cached Hugging Face repo snapshot (``filename`` None) or file; None if not cached.
    Never touches the network."""
    try:
        from huggingface_hub import snapshot_download, try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
        return None
    if filename is None:
        try:
            return Path(snapshot_download(repo_id, local_files_only=True))
        except Exception:  # noqa: BLE001 - any failure means "not in the cache"
            return None
    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


def _resolve_spec(component: Component, spec: str | Path) -> Path | None:
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists() or not is_hub_id(text):
        return path
    parts = text.split("/")
    if component.is_folder:
        return from_hub_cache(text) if len(parts) == 2 else None
    if len(parts) == 2:
        return from_hub_cache(text, component.hub_file)
    return from_hub_cache("/".join(parts[:2]), "/".join(parts[2:]))


def _layout_candidates(root: Path, component: Component) -> list[Path]:
    """Paths to try below ``--weights``, in order: a converted ``.safetensors`` before each ``.pth`` file."""
    paths = []
    for rel in component.layout:
        if not component.is_folder and rel.endswith(".pth"):
            paths.append(root / (rel[: -len(".pth")] + ".safetensors"))
        paths.append(root / rel)
    return paths


def _missing_inside(component: Component, folder: Path) -> list[str]:
    return [group[0] if len(group) == 1 else f"{group[0]} (or another of {len(group)} accepted names)"
            for group in component.needs if not any((folder / name).is_file() for name in group)]


def resolve_weights(weights_dir: str | Path | None, overrides: Mapping[str, str | Path | None] | None = None,
                    required: Iterable[str] = ("svd", "mimicmotion")) -> WeightPaths:
    """Find every required component, or raise ONE UserError listing all that are missing and where to get
    them (:func:`find_weights` gives the list without raising)."""
    paths, problems = find_weights(weights_dir, overrides, required)
    if problems:
        raise UserError("missing weights (nothing was loaded):\n" + "\n".join(problems))
    return paths


def find_weights(weights_dir: str | Path | None, overrides: Mapping[str, str | Path | None] | None = None,
                 required: Iterable[str] = ("svd", "mimicmotion")) -> tuple[WeightPaths, list[str]]:
    """The components found, and one line (or two) per component that is missing: what, where it was looked
    for, where to get it, and what to run instead where a weight-free alternative exists.

    ``overrides`` maps component keys (see :data:`COMPONENTS`) to a path or hub id given on its own.
    Order of search: the override; ``weights_dir``/layout path(s); the default hub id in the local cache.
    Only checks files exist (and, for folders, that the files a load needs are there); loads nothing.
    """
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown weight components {sorted(unknown)}; known: {sorted(COMPONENTS)}")
    root = Path(weights_dir).expanduser() if weights_dir is not None else None
    if root is not None and not root.is_dir():
        raise UserError(f"--weights {root} is not a folder; pass the folder holding MimicMotion_1-1.pth, "
                        "DisPose.pth, dwpose/, stable-diffusion-v1-5/, "
                        "stable-video-diffusion-img2vid-xt-1-1/")
    paths = WeightPaths()
    problems: list[str] = []
    for key in required:
        component = COMPONENTS[key]
        found, origin, looked = None, "", []
        spec = overrides.get(key)
        if spec is not None:
            found, origin = _resolve_spec(component, spec), f"{component.option} {spec}"
            looked.append(str(spec))
        elif root is not None:
            for candidate in _layout_candidates(root, component):
                looked.append(str(candidate))
                if candidate.exists():
                    found, origin = candidate, "--weights"
                    break
        if found is None or not found.exists():
            cached = (from_hub_cache(component.hub_repo, component.hub_file)
                      if spec is None and component.hub_repo else None)
            if cached is not None:
                found, origin = cached, f"Hugging Face cache ({component.hub_repo})"
            else:
                if component.hub_repo:
                    looked.append(f"Hugging Face cache: {component.hub_repo}")
                instead = f" Or run without it: {ALTERNATIVES[key]}." if key in ALTERNATIVES else ""
                problems.append(f"  - {component.what}: not found (looked in: {'; '.join(looked)}).\n"
                                f"    Get it from {component.source}; put it at "
                                f"{'WEIGHTS/' + component.layout[0]} or pass {component.option}.{instead}")
                continue
        if component.is_folder != found.is_dir():
            kind = "a folder" if component.is_folder else "a file"
            problems.append(f"  - {component.what}: {found} is not {kind} (from {origin}).")
            continue
        if component.is_folder:
            inside = _missing_inside(component, found)
            if inside:
                problems.append(f"  - {component.what}: {found} lacks {', '.join(inside)}.\n"
                                f"    Get the complete folder from {component.source}.")
                continue
        paths.found[key] = found
        paths.origins[key] = origin
    return paths, problems


def fingerprint(path: str | Path) -> dict:
    """Size and sha256 of a weight file, or of every weight/config file of a folder (see module docstring)."""
    from dispose.hashing import fingerprint as content_fingerprint

    return content_fingerprint(path, (*_WEIGHT_SUFFIXES, ".json"))


def read_unet_config(path: str | Path | None, default: Mapping) -> dict:
    """A UNet config from a model folder (``unet/config.json``), a ``unet`` folder or a ``config.json`` file;
    None gives ``default`` (the base's built-in config)."""
    import json

    if path is None:
        return dict(default)
    path = Path(path)
    candidates = [path] if path.is_file() else [path / "unet" / "config.json", path / "config.json"]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (OSError, ValueError) as error:
                raise UserError(f"cannot read the UNet config {candidate}: {error}") from None
    raise UserError(f"{path} holds no UNet config: pass the model folder (with unet/config.json) or a "
                    "config.json")
