"""AMT-S, MUSIQ and VideoMAE-v2 ports: strict loading, shapes, and the VBench / CD-FVD rules built on them.

The ports were compared with the reference model classes on random weights by hand
(bench/eval_{amt,musiq,videomae}_vs_reference.py); these tests cover what can run without them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dispose.errors import UserError
from dispose.evaluation import vbench
from dispose.evaluation.amt import AMT, load_amt, pad_to_16, warp
from dispose.evaluation.musiq import MUSIQ, load_musiq, multiscale_patches
from dispose.evaluation.videomae import VideoMAEv2, load_videomae, sinusoid_table, videomae_input


class _Average(torch.nn.Module):
    """Stand-in interpolator: the mean of both frames (exact for linear fades), plus ``offset`` / 255."""

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__()
        self.offset = torch.nn.Parameter(torch.tensor(offset / 255))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a + b) / 2 + self.offset


def test_motion_smoothness_rule() -> None:
    ramp = np.stack([np.full((20, 30, 3), 10 * i, np.uint8) for i in range(7)])
    assert vbench.motion_smoothness(_Average(), ramp) == 1.0  # odd frames are the exact midpoints
    jumpy = ramp.copy()
    jumpy[1::2] = 0
    # midpoints 10*(k+1) for k = 0, 2, 4 against odd frames of 0: mean error (10 + 30 + 50) / 3
    assert vbench.motion_smoothness(_Average(), jumpy) == pytest.approx((255 - 30) / 255)
    # 8-bit conversion truncates like VBench's astype(uint8): k + 0.7 counts as k, not k + 1
    assert vbench.motion_smoothness(_Average(0.7), ramp) == 1.0
    with pytest.raises(ValueError, match="3 frames"):
        vbench.motion_smoothness(_Average(), ramp[:2])


def test_amt_port_runs_and_loads_strictly(tmp_path) -> None:
    torch.manual_seed(0)
    source = AMT().eval()
    torch.save({"state_dict": source.state_dict()}, tmp_path / "amt-s.pth")
    model = load_amt(tmp_path / "amt-s.pth")
    assert sum(p.numel() for p in model.parameters()) == 2990543  # AMT-S
    a, b = pad_to_16(torch.rand(1, 3, 130, 140), torch.rand(1, 3, 130, 140))
    assert a.shape == (1, 3, 144, 144)
    with torch.no_grad():
        out = model(a, b)
        assert out.shape == a.shape and float(out.min()) >= 0 and float(out.max()) <= 1
        assert torch.equal(out, source(a, b))
        with pytest.raises(ValueError, match="at least 128"):
            model(a[..., :64, :64], b[..., :64, :64])
    frames = np.random.default_rng(0).integers(0, 256, (4, 130, 140, 3), dtype=np.uint8)
    assert 0.0 <= vbench.motion_smoothness(model, frames) <= 1.0
    state = source.state_dict()
    del state["comb_block.2.bias"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(UserError, match="not an AMT-S"):
        load_amt(tmp_path / "broken.pth")


def test_warp_moves_pixels_by_the_flow() -> None:
    image = torch.arange(24.0).view(1, 1, 4, 6)
    flow = torch.zeros(1, 2, 4, 6)
    flow[:, 0] = 1.0  # sample one pixel to the right
    shifted = warp(image, flow)
    assert (torch.allclose(shifted[..., :-1], image[..., 1:])
            and torch.allclose(shifted[..., -1], image[..., -1]))


def test_musiq_patch_sequence() -> None:
    image = torch.zeros(1, 3, 288, 512)
    patches, spatial, scale, mask = multiscale_patches(image)
    # 224: 126x224 -> 4x7 = 28 patches padded to 49; 384: 216x384 -> 7x12 = 84 padded to 144;
    # original 9x16 = 144
    assert patches.shape == (1, 49 + 144 + 144, 3 * 32 * 32)
    assert int(mask.sum()) == 28 + 84 + 144
    assert scale.tolist() == [0] * 28 + [0] * 21 + [1] * 84 + [0] * 60 + [2] * 144
    original = spatial[-144:].view(9, 16)
    assert original[0, :].tolist() == [math.floor(c * 10 / 16) for c in range(16)]
    assert original[:, 0].tolist() == [10 * math.floor(r * 10 / 9) for r in range(9)]


def _pyiqa_layout(state: dict) -> dict:
    """Our MUSIQ state dict in pyiqa's file layout: separate attention.query/key/value/out projections."""
    file = {}
    for key, value in state.items():
        block, _, rest = key.partition(".attn.")
        if rest.startswith("qkv."):
            for part, chunk in zip(("query", "key", "value"), value.chunk(3), strict=True):
                file[f"{block}.attention.{part}.{rest[4:]}"] = chunk
        elif rest.startswith("proj."):
            file[f"{block}.attention.out.{rest[5:]}"] = value
        else:
            file[key] = value
    return file


def _tiny_musiq(tmp_path, ava: bool = False):
    torch.manual_seed(0)
    model = MUSIQ(num_classes=10 if ava else 1, layers=2).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    path = tmp_path / ("musiq_ava.pth" if ava else "musiq_spaq.pth")
    torch.save({f"module.{k}": v for k, v in _pyiqa_layout(model.state_dict()).items()}, path)
    return model, path


def test_musiq_loader_and_imaging_quality(tmp_path) -> None:
    source, path = _tiny_musiq(tmp_path)
    model = load_musiq(path)
    assert len(model.transformer_encoder.transformer) == 2
    frames = np.random.default_rng(1).integers(0, 256, (2, 100, 70, 3), dtype=np.uint8)
    x = vbench.musiq_input(frames)
    with torch.no_grad():
        got, expected = model(x), source(x)
    assert torch.equal(got, expected) and got.shape == (2,)
    assert vbench.imaging_quality(model, frames) == pytest.approx(float(expected.mean()) / 100, rel=1e-5)
    ava, ava_path = _tiny_musiq(tmp_path, ava=True)
    with torch.no_grad():
        score = load_musiq(ava_path)(x)
        assert torch.equal(score, ava(x))
    assert bool(((score >= 1) & (score <= 10)).all())  # mean of a 10-bin distribution
    state = torch.load(path, weights_only=True)
    assert "module.transformer_encoder.transformer.encoderblock_1.attention.key.weight" in state
    del state["module.gn_root.bias"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(UserError, match="not a MUSIQ"):
        load_musiq(tmp_path / "broken.pth")
    state = torch.load(path, weights_only=True)
    del state["module.transformer_encoder.transformer.encoderblock_0.attention.key.bias"]
    torch.save(state, tmp_path / "no_key_bias.pth")
    with pytest.raises(UserError, match="encoderblock_0.attention.query.bias"):  # strict after the name map
        load_musiq(tmp_path / "no_key_bias.pth")


def _tiny_videomae(tmp_path):
    torch.manual_seed(0)
    model = VideoMAEv2(dim=64, depth=2, heads=1, hidden=128).eval()
    state = dict(model.state_dict())
    state["head.weight"], state["head.bias"] = torch.zeros(174, 64), torch.zeros(174)
    torch.save({"module": state}, tmp_path / "vit_g_hybrid_pt_1200e_ssv2_ft.pth")
    return model, tmp_path / "vit_g_hybrid_pt_1200e_ssv2_ft.pth"


def test_videomae_loader_and_features(tmp_path) -> None:
    source, path = _tiny_videomae(tmp_path)
    model = load_videomae(path)
    frames = np.random.default_rng(2).integers(0, 256, (16, 60, 40, 3), dtype=np.uint8)
    clip = videomae_input(frames)
    assert clip.shape == (1, 3, 16, 224, 224) and float(clip.max()) <= 1.0
    with torch.no_grad():
        assert torch.equal(model(clip), source(clip)) and model(clip).shape == (1, 64)
        assert model(videomae_input(frames[:10])).shape == (1, 64)  # position table resized along time
    table = sinusoid_table(3, 4)[0]
    assert torch.allclose(table[2], torch.tensor([math.sin(2), math.cos(2), math.sin(2 / 100),
                                                  math.cos(2 / 100)]))
    state = torch.load(path, weights_only=True)["module"]
    del state["head.weight"]
    torch.save(state, tmp_path / "no_head.pth")
    with pytest.raises(UserError, match="classification head"):
        load_videomae(tmp_path / "no_head.pth")
    del state["fc_norm.bias"]
    state["head.weight"] = torch.zeros(174, 64)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(UserError, match="VideoMAE-v2 layout"):
        load_videomae(tmp_path / "broken.pth")


def test_resnet3d_loader_and_disco_feature(tmp_path) -> None:
    from dispose.evaluation.resnet3d import MEAN, ResNet3D, disco_segments, load_resnet3d, video_feature

    torch.manual_seed(0)
    source = ResNet3D((1, 1, 1, 1)).eval()
    state = {f"module.{k}": v for k, v in source.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    state |= {"module.fc.weight": torch.zeros(400, 2048), "module.fc.bias": torch.zeros(400)}
    torch.save({"state_dict": state, "arch": "resnet-50"}, tmp_path / "resnet-50-kinetics.pth")
    model = load_resnet3d(tmp_path / "resnet-50-kinetics.pth")
    frames = np.random.default_rng(3).integers(0, 256, (20, 60, 80, 3), dtype=np.uint8)
    frames[0] = 100
    segments = disco_segments(frames)
    assert segments.shape == (2, 3, 16, 112, 112)
    assert torch.equal(segments[1, :, 4:], segments[1, :, 3:4].expand(-1, 12, -1, -1))  # last frame repeated
    # a flat frame stays flat
    assert torch.allclose(segments[0, :, 0, 50, 50], 100 - torch.tensor(MEAN), atol=1e-3)
    feature = video_feature(model, frames)
    with torch.no_grad():
        expected = source(segments).mean(dim=0).numpy()
    assert feature.shape == (2048,) and np.allclose(feature, expected, atol=1e-6)
    del state["module.fc.bias"], state["module.fc.weight"]
    torch.save({"state_dict": state}, tmp_path / "no_fc.pth")
    with pytest.raises(UserError, match="resnet-50-kinetics"):
        load_resnet3d(tmp_path / "no_fc.pth")
    state |= {"module.fc.weight": torch.zeros(400, 2048), "module.fc.bias": torch.zeros(400)}
    del state["module.layer4.0.bn3.running_var"]
    torch.save({"state_dict": state}, tmp_path / "broken.pth")
    with pytest.raises(UserError, match="Hara"):
        load_resnet3d(tmp_path / "broken.pth")
