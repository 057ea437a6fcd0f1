"""Weight layout resolution, the missing-files list, fingerprints and checkpoint reading."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from dispose.bases import required_components
from dispose.bases.mimicmotion.weights import read_checkpoint, split_mimicmotion
from dispose.checkpoints import load_strict
from dispose.errors import UserError
from dispose.pipelines.weights import (
    CMP_RELEASE_PATH,
    COMPONENTS,
    fingerprint,
    resolve_weights,
)


@pytest.fixture(autouse=True)
def empty_hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, so a developer's real cache never leaks into the results."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def _touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_layout(root: Path, skip: tuple[str, ...] = ()) -> Path:
    """Placeholder files of the full release layout (no real weights)."""
    files = {
        "svd": ["vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",
                "image_encoder/config.json", "image_encoder/model.fp16.safetensors",
                "scheduler/scheduler_config.json",
                "feature_extractor/preprocessor_config.json", "unet/config.json"],
        "sd15": ["unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                 "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
                 "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt"],
        "dwpose": ["yolox_l.onnx", "dw-ll_ucoco_384.onnx"],
    }
    for key in required_components():  # MimicMotion's layout (other bases add components of their own)
        component = COMPONENTS[key]
        if key in skip:
            continue
        if component.is_folder:
            for name in files[key]:
                _touch(root / component.layout[0] / name)
        else:
            _touch(root / component.layout[0])
    return root


def test_full_layout_resolves(tmp_path):
    root = make_layout(tmp_path / "w")
    paths = resolve_weights(root, required=required_components())
    assert paths.svd == root / "stable-video-diffusion-img2vid-xt-1-1"
    assert paths.cmp == root / "cmp/ckpt_iter_42000.pth.tar"
    assert paths.origins["dispose"] == "--weights"


def test_missing_files_are_listed_once_with_sources(tmp_path):
    root = make_layout(tmp_path / "w", skip=("dispose", "cmp", "dwpose"))
    (root / "stable-video-diffusion-img2vid-xt-1-1/unet/config.json").unlink()
    with pytest.raises(UserError) as error:
        resolve_weights(root, required=required_components())
    message = str(error.value)
    assert message.startswith("missing weights")
    for needle in ("huggingface.co/lihxxx/DisPose", "MyNiuuu/MOFA-Video-Hybrid", "yzd-v/DWPose",
                   "unet/config.json", "--dispose-ckpt", "--cmp", "--dwpose"):
        assert needle in message
    assert "tencent/MimicMotion" not in message  # present components are not listed
    assert message.count("\n  - ") == 4


def test_baseline_and_mediapipe_need_less(tmp_path):
    root = make_layout(tmp_path / "w", skip=("dispose", "cmp", "dwpose", "sd15"))
    paths = resolve_weights(root, required=required_components(dispose=False, detector="mediapipe"))
    assert paths.dispose is None and paths.mimicmotion is not None
    assert "cmp" not in required_components(dense="propagate")


def test_release_cmp_path_and_single_overrides(tmp_path):
    root = make_layout(tmp_path / "w", skip=("cmp", "dispose"))
    _touch(root / CMP_RELEASE_PATH)
    own = tmp_path / "elsewhere" / "DisPose.pth"
    _touch(own)
    paths = resolve_weights(root, {"dispose": str(own)}, required_components())
    assert paths.cmp == root / CMP_RELEASE_PATH and paths.dispose == own


def test_converted_safetensors_preferred(tmp_path):
    root = make_layout(tmp_path / "w")
    _touch(root / "DisPose.safetensors")
    paths = resolve_weights(root, None, required_components())
    assert paths.dispose == root / "DisPose.safetensors" and paths.mimicmotion == root / "MimicMotion_1-1.pth"


def test_override_pointing_nowhere_is_reported(tmp_path):
    root = make_layout(tmp_path / "w")
    with pytest.raises(UserError, match="nope.pth"):
        resolve_weights(root, {"mimicmotion": str(tmp_path / "nope.pth")}, ["svd", "mimicmotion"])


def test_hub_cache_lookup_without_network(tmp_path):
    cache = Path(os.environ["HF_HUB_CACHE"])
    snapshot = cache / "models--lihxxx--DisPose" / "snapshots" / ("a" * 40)
    _touch(snapshot / "DisPose.pth")
    (cache / "models--lihxxx--DisPose" / "refs").mkdir(parents=True)
    (cache / "models--lihxxx--DisPose" / "refs" / "main").write_text("a" * 40)
    paths = resolve_weights(None, {"dispose": "lihxxx/DisPose"}, ["dispose"])
    assert paths.dispose == snapshot / "DisPose.pth"
    paths = resolve_weights(None, {}, ["dispose"])  # default id, found in the cache
    assert paths.dispose == snapshot / "DisPose.pth" and "cache" in paths.origins["dispose"]


def test_weights_dir_must_exist(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        resolve_weights(tmp_path / "missing", required=["svd"])


def test_fingerprint_is_size_and_full_hash(tmp_path):
    big = tmp_path / "big.pth"
    data = bytearray(os.urandom(3 << 20))
    big.write_bytes(bytes(data))
    first = fingerprint(big)
    assert first == {"size": 3 << 20, "sha256": hashlib.sha256(data).hexdigest()}
    data[len(data) // 2] ^= 0xFF  # a change in the middle of the file is seen
    big.write_bytes(bytes(data))
    assert fingerprint(big)["sha256"] != first["sha256"]
    folder = make_layout(tmp_path / "w")
    assert "vae/config.json" in fingerprint(folder / "stable-video-diffusion-img2vid-xt-1-1")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "DisPose.pth"
    torch.save({"a": torch.zeros(3)}, path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UserError, match="damaged or incomplete.*lihxxx/DisPose"):
        read_checkpoint(path, "dispose")


def test_strict_loading_names_keys(tmp_path):
    module = torch.nn.Linear(2, 2)
    with pytest.raises(UserError, match=r"1 missing keys \(bias\)"):
        load_strict(module, {"weight": torch.zeros(2, 2)}, tmp_path / "x.pth")
    with pytest.raises(UserError, match=r"1 shape mismatches \(weight \(3, 2\) != \(2, 2\)\)"):
        load_strict(module, {"weight": torch.zeros(3, 2), "bias": torch.zeros(2)}, tmp_path / "x.pth")


def test_split_mimicmotion_checkpoint():
    unet, pose = split_mimicmotion({"unet.a": torch.zeros(1), "pose_net.b": torch.zeros(1),
                                    "vae.c": torch.zeros(1)})
    assert set(unet) == {"a"} and set(pose) == {"b"}
    with pytest.raises(UserError, match="unexpected entry"):
        split_mimicmotion({"other.x": torch.zeros(1)})
