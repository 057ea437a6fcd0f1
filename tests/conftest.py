"""Shared test fixtures: the real example media in ``shared/data`` beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def _hash_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dispose-cache")


@pytest.fixture(autouse=True)
def private_hash_cache(_hash_cache_dir, monkeypatch):
    """File hashes are cached in a folder of the test session, never in the user's ~/.cache
    (see dispose.hashing)."""
    monkeypatch.setenv("DISPOSE_CACHE_DIR", str(_hash_cache_dir))


def _find_shared_data() -> Path | None:
    env = os.environ.get("DISPOSE_SHARED_DATA")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder with musepose_ref.png, musepose_dance.mp4, moore_anyone-*.png (set DISPOSE_SHARED_DATA)."""
    folder = _find_shared_data()
    if folder is None or not (folder / "musepose_ref.png").is_file():
        pytest.fail("shared example data not found: set DISPOSE_SHARED_DATA to the folder holding "
                    "musepose_ref.png and musepose_dance.mp4")
    return folder


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Tiny random MimicMotion/DisPose weights in the release layout (dispose.bases.mimicmotion.tiny), built
    once per session; tests only read them (copy the folder before changing anything in it)."""
    from dispose.bases.mimicmotion.tiny import build_tiny_weights

    return build_tiny_weights(tmp_path_factory.mktemp("tiny-weights"))


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """Nothing may come from a developer's Hugging Face cache or the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def one_thread():
    """One torch thread: tiny models run several times faster on one thread than on two on a shared 2-core
    machine (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
