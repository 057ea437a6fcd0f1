"""What the DisPose nodes use of ComfyUI when they run inside it, and what they do outside it (tests,
scripts).

* Weights: inside ComfyUI, an empty ``weights`` input means ComfyUI's ``models/dispose/`` folder (registered
  with ``folder_paths`` as the ``dispose`` model folder; ``extra_model_paths.yaml`` can add more) holding the
  release's ``pretrained_weights/`` layout, and a relative path is looked up below those folders.  Outside
  ComfyUI the path is used as given (empty: only the local Hugging Face cache).
* Progress goes to ``comfy.utils.ProgressBar`` (one bar per node, its total following the engine's stages).
* ComfyUI's Cancel (``comfy.model_management.processing_interrupted``) stops an animation at the next step.
* Sidecars go to ComfyUI's output folder (``folder_paths.get_output_directory``), or a given folder outside.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

MODELS_FOLDER = "dispose"


def comfy_module(name: str):
    """A ComfyUI module (``folder_paths``, ``comfy.utils``...) when running inside ComfyUI, else None."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def register_models_folder() -> None:
    """Declare ``models/dispose/`` to ComfyUI (no-op outside it or when already declared)."""
    folder_paths = comfy_module("folder_paths")
    if folder_paths is not None and MODELS_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(MODELS_FOLDER,
                                           os.path.join(folder_paths.models_dir, MODELS_FOLDER))


def weights_folder(given: str) -> Path | None:
    """The weights folder of the ``weights`` input (module docstring)."""
    folder_paths = comfy_module("folder_paths")
    text = given.strip()
    if folder_paths is None:
        return Path(text).expanduser() if text else None
    folders = [Path(p) for p in folder_paths.get_folder_paths(MODELS_FOLDER)]
    if text and Path(text).expanduser().is_absolute():
        return Path(text).expanduser()
    candidates = [folder / text for folder in folders] if text else folders
    return next((path for path in candidates if path.is_dir()), candidates[0] if candidates else None)


def progress_reporter() -> Callable[[str, int, int], None] | None:
    """``on_progress`` for the engine driving ComfyUI's progress bar, or None outside ComfyUI."""
    utils = comfy_module("comfy.utils")
    if utils is None:
        return None
    bar = None

    def report(stage: str, done: int, total: int) -> None:
        nonlocal bar
        total = max(int(total), 1)
        if bar is None:
            bar = utils.ProgressBar(total)
        bar.update_absolute(int(done), total)

    return report


def interrupted() -> bool:
    """True when the user pressed ComfyUI's Cancel (always False outside ComfyUI)."""
    management = comfy_module("comfy.model_management")
    return bool(management is not None and management.processing_interrupted())


def interrupt_exception() -> BaseException | None:
    """ComfyUI's exception for a cancelled node, or None outside ComfyUI."""
    management = comfy_module("comfy.model_management")
    return None if management is None else management.InterruptProcessingException()


def output_folder(given: str) -> Path:
    """Where the sidecar node writes: ``given``, else ComfyUI's output folder (outside ComfyUI: required)."""
    from dispose.errors import UserError

    if given.strip():
        return Path(given.strip()).expanduser()
    folder_paths = comfy_module("folder_paths")
    if folder_paths is None:
        raise UserError("folder: give the folder to write the sidecar to "
                        "(outside ComfyUI there is no output folder)")
    return Path(folder_paths.get_output_directory())
