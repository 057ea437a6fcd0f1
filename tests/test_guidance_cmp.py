"""CMP (dispose.guidance.cmp): checkpoint layout, strict loading, release input scaling, full-size forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from precision import HALF_PRECISION_FACTOR, emulated, mean_error

from dispose.checkpoints import load_strict
from dispose.errors import UserError
from dispose.guidance.cmp import (
    CMP,
    cmp_dense_flow,
    expected_state_dict_shapes,
    load_cmp,
    rasterize_sparse_flow,
    release_image_tensor,
    resize_flow_nearest,
    resize_nearest_384,
)

# The public ckpt_iter_42000.pth.tar, written down from the release code (models/backbone/resnet.py,
# models/modules/{shallownet,decoder,cmp}.py, config semiauto_annot/resnet50_vip+mpii_liteflow):
# "<name> conv <out> <in> <kernel> <b|->" or "<name> bn <channels>".  Every key carries the "module."
# prefix of the training wrapper; BN layers have weight/bias/running_mean/running_var and, because the file
# was written by PyTorch 0.4.0, no num_batches_tracked (the CMP demo notebook logs exactly 72 of them
# missing: one per BN layer below).
CHECKPOINT_LAYOUT = """
image_encoder.conv1 conv 64 3 7 -
image_encoder.bn1 bn 64
image_encoder.layer1.0.conv1 conv 64 64 1 -
image_encoder.layer1.0.bn1 bn 64
image_encoder.layer1.0.conv2 conv 64 64 3 -
image_encoder.layer1.0.bn2 bn 64
image_encoder.layer1.0.conv3 conv 256 64 1 -
image_encoder.layer1.0.bn3 bn 256
image_encoder.layer1.0.downsample.0 conv 256 64 1 -
image_encoder.layer1.0.downsample.1 bn 256
image_encoder.layer1.1.conv1 conv 64 256 1 -
image_encoder.layer1.1.bn1 bn 64
image_encoder.layer1.1.conv2 conv 64 64 3 -
image_encoder.layer1.1.bn2 bn 64
image_encoder.layer1.1.conv3 conv 256 64 1 -
image_encoder.layer1.1.bn3 bn 256
image_encoder.layer1.2.conv1 conv 64 256 1 -
image_encoder.layer1.2.bn1 bn 64
image_encoder.layer1.2.conv2 conv 64 64 3 -
image_encoder.layer1.2.bn2 bn 64
image_encoder.layer1.2.conv3 conv 256 64 1 -
image_encoder.layer1.2.bn3 bn 256
image_encoder.layer2.0.conv1 conv 128 256 1 -
image_encoder.layer2.0.bn1 bn 128
image_encoder.layer2.0.conv2 conv 128 128 3 -
image_encoder.layer2.0.bn2 bn 128
image_encoder.layer2.0.conv3 conv 512 128 1 -
image_encoder.layer2.0.bn3 bn 512
image_encoder.layer2.0.downsample.0 conv 512 256 1 -
image_encoder.layer2.0.downsample.1 bn 512
image_encoder.layer2.1.conv1 conv 128 512 1 -
image_encoder.layer2.1.bn1 bn 128
image_encoder.layer2.1.conv2 conv 128 128 3 -
image_encoder.layer2.1.bn2 bn 128
image_encoder.layer2.1.conv3 conv 512 128 1 -
image_encoder.layer2.1.bn3 bn 512
image_encoder.layer2.2.conv1 conv 128 512 1 -
image_encoder.layer2.2.bn1 bn 128
image_encoder.layer2.2.conv2 conv 128 128 3 -
image_encoder.layer2.2.bn2 bn 128
image_encoder.layer2.2.conv3 conv 512 128 1 -
image_encoder.layer2.2.bn3 bn 512
image_encoder.layer2.3.conv1 conv 128 512 1 -
image_encoder.layer2.3.bn1 bn 128
image_encoder.layer2.3.conv2 conv 128 128 3 -
image_encoder.layer2.3.bn2 bn 128
image_encoder.layer2.3.conv3 conv 512 128 1 -
image_encoder.layer2.3.bn3 bn 512
image_encoder.layer3.0.conv1 conv 256 512 1 -
image_encoder.layer3.0.bn1 bn 256
image_encoder.layer3.0.conv2 conv 256 256 3 -
image_encoder.layer3.0.bn2 bn 256
image_encoder.layer3.0.conv3 conv 1024 256 1 -
image_encoder.layer3.0.bn3 bn 1024
image_encoder.layer3.0.downsample.0 conv 1024 512 1 -
image_encoder.layer3.0.downsample.1 bn 1024
image_encoder.layer3.1.conv1 conv 256 1024 1 -
image_encoder.layer3.1.bn1 bn 256
image_encoder.layer3.1.conv2 conv 256 256 3 -
image_encoder.layer3.1.bn2 bn 256
image_encoder.layer3.1.conv3 conv 1024 256 1 -
image_encoder.layer3.1.bn3 bn 1024
image_encoder.layer3.2.conv1 conv 256 1024 1 -
image_encoder.layer3.2.bn1 bn 256
image_encoder.layer3.2.conv2 conv 256 256 3 -
image_encoder.layer3.2.bn2 bn 256
image_encoder.layer3.2.conv3 conv 1024 256 1 -
image_encoder.layer3.2.bn3 bn 1024
image_encoder.layer3.3.conv1 conv 256 1024 1 -
image_encoder.layer3.3.bn1 bn 256
image_encoder.layer3.3.conv2 conv 256 256 3 -
image_encoder.layer3.3.bn2 bn 256
image_encoder.layer3.3.conv3 conv 1024 256 1 -
image_encoder.layer3.3.bn3 bn 1024
image_encoder.layer3.4.conv1 conv 256 1024 1 -
image_encoder.layer3.4.bn1 bn 256
image_encoder.layer3.4.conv2 conv 256 256 3 -
image_encoder.layer3.4.bn2 bn 256
image_encoder.layer3.4.conv3 conv 1024 256 1 -
image_encoder.layer3.4.bn3 bn 1024
image_encoder.layer3.5.conv1 conv 256 1024 1 -
image_encoder.layer3.5.bn1 bn 256
image_encoder.layer3.5.conv2 conv 256 256 3 -
image_encoder.layer3.5.bn2 bn 256
image_encoder.layer3.5.conv3 conv 1024 256 1 -
image_encoder.layer3.5.bn3 bn 1024
image_encoder.layer4.0.conv1 conv 512 1024 1 -
image_encoder.layer4.0.bn1 bn 512
image_encoder.layer4.0.conv2 conv 512 512 3 -
image_encoder.layer4.0.bn2 bn 512
image_encoder.layer4.0.conv3 conv 2048 512 1 -
image_encoder.layer4.0.bn3 bn 2048
image_encoder.layer4.0.downsample.0 conv 2048 1024 1 -
image_encoder.layer4.0.downsample.1 bn 2048
image_encoder.layer4.1.conv1 conv 512 2048 1 -
image_encoder.layer4.1.bn1 bn 512
image_encoder.layer4.1.conv2 conv 512 512 3 -
image_encoder.layer4.1.bn2 bn 512
image_encoder.layer4.1.conv3 conv 2048 512 1 -
image_encoder.layer4.1.bn3 bn 2048
image_encoder.layer4.2.conv1 conv 512 2048 1 -
image_encoder.layer4.2.bn1 bn 512
image_encoder.layer4.2.conv2 conv 512 512 3 -
image_encoder.layer4.2.bn2 bn 512
image_encoder.layer4.2.conv3 conv 2048 512 1 -
image_encoder.layer4.2.bn3 bn 2048
image_encoder.conv5 conv 256 2048 1 b
flow_encoder.features.0 conv 16 4 5 b
flow_encoder.features.1 bn 16
flow_encoder.features.4 conv 16 16 3 b
flow_encoder.features.5 bn 16
flow_decoder.decoder1.0 conv 128 272 3 b
flow_decoder.decoder1.1 bn 128
flow_decoder.decoder1.3 conv 128 128 3 b
flow_decoder.decoder1.4 bn 128
flow_decoder.decoder1.6 conv 128 128 3 b
flow_decoder.decoder1.7 bn 128
flow_decoder.decoder2.1 conv 128 272 3 b
flow_decoder.decoder2.2 bn 128
flow_decoder.decoder2.4 conv 128 128 3 b
flow_decoder.decoder2.5 bn 128
flow_decoder.decoder2.7 conv 128 128 3 b
flow_decoder.decoder2.8 bn 128
flow_decoder.decoder4.1 conv 128 272 3 b
flow_decoder.decoder4.2 bn 128
flow_decoder.decoder4.4 conv 128 128 3 b
flow_decoder.decoder4.5 bn 128
flow_decoder.decoder4.7 conv 128 128 3 b
flow_decoder.decoder4.8 bn 128
flow_decoder.decoder8.1 conv 128 272 3 b
flow_decoder.decoder8.2 bn 128
flow_decoder.decoder8.4 conv 128 128 3 b
flow_decoder.decoder8.5 bn 128
flow_decoder.decoder8.7 conv 128 128 3 b
flow_decoder.decoder8.8 bn 128
flow_decoder.fusion8.0 conv 256 512 3 b
flow_decoder.fusion8.1 bn 256
flow_decoder.skipconv4.0 conv 128 256 3 b
flow_decoder.skipconv4.1 bn 128
flow_decoder.fusion4.0 conv 128 384 3 b
flow_decoder.fusion4.1 bn 128
flow_decoder.skipconv2.0 conv 32 64 3 b
flow_decoder.skipconv2.1 bn 32
flow_decoder.fusion2.0 conv 64 160 3 b
flow_decoder.fusion2.1 bn 64
flow_decoder.head conv 198 64 1 b
"""


def checkpoint_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for line in CHECKPOINT_LAYOUT.strip().splitlines():
        name, kind, *dims = line.split()
        key = "module." + name
        if kind == "conv":
            out, inp, k, bias = int(dims[0]), int(dims[1]), int(dims[2]), dims[3]
            shapes[key + ".weight"] = (out, inp, k, k)
            if bias == "b":
                shapes[key + ".bias"] = (out,)
        else:
            for suffix in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{key}.{suffix}"] = (int(dims[0]),)
    return shapes


def test_layout_table_counts() -> None:
    kinds = [line.split()[1] for line in CHECKPOINT_LAYOUT.strip().splitlines()]
    assert kinds.count("bn") == 72
    assert kinds.count("conv") == 74
    assert len(checkpoint_shapes()) == 383


def test_model_matches_written_checkpoint_layout() -> None:
    own = {k: v for k, v in expected_state_dict_shapes().items() if not k.endswith("num_batches_tracked")}
    assert own == checkpoint_shapes()


@pytest.fixture(scope="module")
def public_like_weights() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    weights = {}
    for key, shape in checkpoint_shapes().items():
        if key.endswith("running_var"):
            weights[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            weights[key] = torch.randn(shape, generator=gen) * 0.02
    return weights


def _save_checkpoint(path, state_dict) -> None:
    """Same container as the CMP trainer's save_state, in the legacy (non-zip) format of PyTorch 0.4."""
    tiny = torch.nn.Linear(2, 2)
    optim = torch.optim.SGD(tiny.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    tiny(torch.ones(1, 2)).sum().backward()
    optim.step()
    torch.save({"step": 42000, "state_dict": state_dict, "optimizer": optim.state_dict()}, path,
               _use_new_zipfile_serialization=False)


def test_public_layout_loads_strictly(tmp_path, public_like_weights) -> None:
    path = tmp_path / "ckpt_iter_42000.pth.tar"
    _save_checkpoint(path, public_like_weights)
    model = load_cmp(path)
    assert not model.training
    state = model.state_dict()
    for key, value in public_like_weights.items():
        assert torch.equal(state[key.removeprefix("module.")], value), key
    assert int(state["image_encoder.bn1.num_batches_tracked"]) == 0
    assert all(not p.requires_grad for p in model.parameters())


def test_missing_key_is_named(tmp_path, public_like_weights) -> None:
    weights = dict(public_like_weights)
    del weights["module.flow_decoder.head.bias"]
    path = tmp_path / "missing.pth.tar"
    _save_checkpoint(path, weights)
    with pytest.raises(UserError, match=r"1 missing keys \(module\.flow_decoder\.head\.bias\)") as info:
        load_cmp(path)
    assert str(path) in str(info.value)


def test_unexpected_and_misshaped_keys_are_named(public_like_weights) -> None:
    weights = {k.removeprefix("module."): v for k, v in public_like_weights.items()}
    weights["flow_decoder.extra.weight"] = torch.zeros(3)
    weights["flow_decoder.head.weight"] = torch.zeros(2, 64, 1, 1)
    with pytest.raises(UserError) as info:
        load_strict(CMP(), weights, "test weights", file_prefix="module.", fill_batchnorm_counters=True)
    message = str(info.value)
    assert "1 unexpected keys (module.flow_decoder.extra.weight)" in message
    assert "1 shape mismatches (module.flow_decoder.head.weight (2, 64, 1, 1) != (198, 64, 1, 1))" in message
    assert "missing" not in message


def test_corrupt_wrong_and_absent_files(tmp_path) -> None:
    corrupt = tmp_path / "corrupt.pth.tar"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(UserError, match="could not be read") as info:
        load_cmp(corrupt)
    assert str(corrupt) in str(info.value)

    wrong = tmp_path / "wrong.pth.tar"
    torch.save({"state_dict": torch.nn.Linear(3, 4).state_dict()}, wrong)
    with pytest.raises(UserError, match=r"383 missing keys .*; 2 unexpected keys \(weight, bias\)") as info:
        load_cmp(wrong)
    assert str(wrong) in str(info.value)

    no_weights = tmp_path / "other.pth"
    torch.save({"step": 3, "model": {"a": torch.zeros(1)}}, no_weights)
    with pytest.raises(UserError, match="no 'state_dict' entry"):
        load_cmp(no_weights)

    with pytest.raises(UserError, match="not found"):
        load_cmp(tmp_path / "absent.pth.tar")


def test_bin_fuser_centres_and_expectation() -> None:
    fuser = CMP().fuser
    centres = fuser.bin_centres()
    step = 100.0 / 99.0
    assert centres[0].item() == pytest.approx(-50 + step / 2)
    assert centres[49].item() == pytest.approx(0.0, abs=1e-5)
    assert centres[98].item() == pytest.approx(50 - step / 2)
    logits = torch.zeros(1, 198, 2, 2)
    logits[0, 10, 0, 0] = 60.0  # x: one-hot at bin 10
    logits[0, 99 + 80, 0, 0] = 60.0  # y: one-hot at bin 80
    logits[0, 0, 1, 1] = logits[0, 98, 1, 1] = 60.0  # x: two equal bins -> their mean (0)
    flow = fuser(logits)
    assert flow[0, 0, 0, 0].item() == pytest.approx(centres[10].item(), abs=1e-3)
    assert flow[0, 1, 0, 0].item() == pytest.approx(centres[80].item(), abs=1e-3)
    assert flow[0, 0, 1, 1].item() == pytest.approx(0.0, abs=1e-3)
    assert flow[0, :, 0, 1].abs().max().item() < 1e-4  # uniform logits -> 0


def test_release_input_scaling() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    image[0, 0] = 255
    tensor = release_image_tensor(image)
    assert tensor.shape == (1, 3, 8, 8)
    assert tensor[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0] and tensor[0, 0, 1, 1].item() == -1.0

    sparse, mask = rasterize_sparse_flow(np.array([[10.7, 20.2], [-3.0, 500.0]]),
                                         np.array([[4.0, -2.0], [1.0, 1.5]]), height=384, width=384)
    assert sparse[:, 20, 10].tolist() == [4.0, -2.0]  # (row = int(y), col = int(x)); channels dx, dy
    assert sparse[:, 383, 0].tolist() == [1.0, 1.5]  # clipped to the grid
    assert mask.sum() == 4 and mask[:, 20, 10].tolist() == [1.0, 1.0]

    big = np.arange(600 * 500 * 3, dtype=np.int64).reshape(600, 500, 3) % 251
    small = resize_nearest_384(big.astype(np.uint8))
    rows = np.floor(np.arange(384) * (600 / 384)).astype(int)
    cols = np.floor(np.arange(384) * (500 / 384)).astype(int)
    assert np.array_equal(small, big[rows][:, cols].astype(np.uint8))

    flow = torch.ones(1, 2, 384, 384)
    out = resize_flow_nearest(flow, 1024, 576)
    assert out.shape == (1, 2, 1024, 576)
    assert (out[0, 0, 0, 0].item() == pytest.approx(576 / 384)
            and out[0, 1, 0, 0].item() == pytest.approx(1024 / 384))


def _per_frame_release(model: CMP, image: np.ndarray, sparse: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
    """The release's loop: one frame at a time, image re-encoded, fuse then bilinear upsample."""
    outs = []
    img = release_image_tensor(image)
    for i in range(sparse.shape[0]):
        logits = model(img, torch.cat([sparse[i:i + 1], mask[i:i + 1]], dim=1))
        flow = model.fuser(logits)
        outs.append(F.interpolate(flow, size=img.shape[-2:], mode="bilinear", align_corners=True))
    return torch.cat(outs)


@torch.no_grad()
def test_batched_equals_per_frame_loop(public_like_weights) -> None:
    model = CMP()
    load_strict(model, {k.removeprefix("module."): v for k, v in public_like_weights.items()}, "t",
                fill_batchnorm_counters=True)
    model.eval()
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    sparse = torch.zeros(3, 2, 64, 64)
    mask = torch.zeros(3, 2, 64, 64)
    for i in range(3):
        pts = rng.uniform(0, 64, (5, 2))
        s, m = rasterize_sparse_flow(pts, rng.normal(0, 8, (5, 2)), 64, 64)
        sparse[i], mask[i] = torch.from_numpy(s), torch.from_numpy(m)
    expected = _per_frame_release(model, image, sparse, mask)
    batched = cmp_dense_flow(model, image, sparse, mask, chunk_size=2)
    assert batched.shape == (3, 2, 64, 64) and batched.dtype == torch.float32
    torch.testing.assert_close(batched, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cmp_dense_flow(model, image, sparse, mask, chunk_size=None), batched)


@torch.no_grad()
def test_full_size_forward_on_one_frame() -> None:
    model = CMP().eval()
    assert sum(p.numel() for p in model.parameters()) == 28_516_422
    image = np.full((384, 384, 3), 128, np.uint8)
    sparse, mask = rasterize_sparse_flow(np.array([[100.0, 200.0]]), np.array([[5.0, -3.0]]))
    flow = cmp_dense_flow(model, image, sparse[None], mask[None])
    assert flow.shape == (1, 2, 384, 384)
    assert torch.isfinite(flow).all() and flow.abs().max().item() < 50


def test_bad_inputs_are_rejected() -> None:
    model = CMP().eval()
    image = np.zeros((64, 64, 3), np.uint8)
    maps = torch.zeros(1, 2, 64, 64)
    with pytest.raises(ValueError, match="uint8"):
        cmp_dense_flow(model, image.astype(np.float32), maps, maps)
    with pytest.raises(ValueError, match=r"sparse_flow must be \(N, 2, 64, 64\)"):
        cmp_dense_flow(model, image, torch.zeros(1, 2, 32, 32), maps)
    bad = maps.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="mask contains NaN"):
        cmp_dense_flow(model, image, maps, bad)
    with pytest.raises(ValueError, match="divisible by 8"):
        cmp_dense_flow(model, np.zeros((60, 60, 3), np.uint8), torch.zeros(1, 2, 60, 60),
                       torch.zeros(1, 2, 60, 60))


@torch.no_grad()
def test_bfloat16_model_gives_float32_flow_close_to_float32() -> None:
    """Device-agnostic precision path: inputs are cast to the model's dtype, bins are fused in float32. Within
    twice the error of bfloat16 rounding emulated in float32 (the bound of tests/precision.py)."""
    torch.manual_seed(0)
    model = CMP().eval()
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    sparse, mask = rasterize_sparse_flow(np.array([[10.0, 20.0], [40.0, 30.0]]),
                                         np.array([[5.0, -3.0], [2.0, 2.0]]), 64, 64)
    sparse, mask = torch.from_numpy(sparse[None]), torch.from_numpy(mask[None])
    expected = cmp_dense_flow(model, image, sparse, mask)
    emulation = cmp_dense_flow(emulated(model, torch.bfloat16), image, sparse, mask)
    flow = cmp_dense_flow(model.to(torch.bfloat16), image, sparse, mask)
    assert flow.dtype == torch.float32
    assert mean_error(flow, expected) <= HALF_PRECISION_FACTOR * mean_error(emulation, expected)
