"""Motion (Eq. 5) and point (Eq. 7) encoders against direct implementations of the release's behaviour."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dispose.models.motion_encoder import MotionEncoder
from dispose.models.point_encoder import PointEncoder


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def release_point_levels(encoder: PointEncoder, features: torch.Tensor, mask: torch.Tensor,
                         sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """The release's point adapter after its grid is built, frame by frame: every MLP on every cell of the
    1/16 grid, masked, resized bilinearly, multiplied by the nearest-resized mask."""
    levels = [[] for _ in sizes]
    for frame in range(features.shape[0]):
        cells = features[frame].permute(1, 2, 0)  # (h, w, C)
        frame_mask = mask[frame]
        for level, (mlp, size) in enumerate(zip(encoder.model_list, sizes)):
            out = (mlp(cells) * frame_mask[..., None]).permute(2, 0, 1)[None]
            out = F.interpolate(out, size=size, mode="bilinear")
            out = out * F.interpolate(frame_mask[None, None], size=size, mode="nearest")
            levels[level].append(out[0])
    return [torch.stack(level) for level in levels]


def _grids(frames: int, channels: int, height: int, width: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.rand(frames, height, width, generator=generator) > 0.6).float()
    features = torch.randn(frames, channels, height, width, generator=generator) * mask[:, None]
    return features, mask


@pytest.mark.parametrize("grid", [(4, 4), (8, 12), (9, 5)])
def test_point_encoder_vectorised_equals_loop(grid):
    encoder = PointEncoder(embedding_channels=24, channels=(8, 16, 32, 32), hidden_channels=12)
    _randomise(encoder)
    features, mask = _grids(5, 24, *grid)
    height, width = grid
    sizes = [(height, width), (height // 2, width // 2), (height // 4, width // 4), (height // 4, width // 4)]
    sizes = [(max(h, 1), max(w, 1)) for h, w in sizes]
    ours = encoder(features, mask, sizes)
    expected = release_point_levels(encoder, features, mask, sizes)
    for got, want in zip(ours, expected):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_isolated_point_lives_at_the_first_level_only():
    encoder = PointEncoder(embedding_channels=4, channels=(3, 3, 3, 3), hidden_channels=5)
    _randomise(encoder, seed=1)
    features = torch.zeros(2, 4, 8, 8)
    mask = torch.zeros(2, 8, 8)
    features[0, :, 0, 0] = torch.tensor([1.0, -2.0, 0.5, 3.0])  # frame 0: a point on an even cell
    mask[0, 0, 0] = 1
    features[1, :, 3, 5] = torch.tensor([1.0, 1.0, 1.0, 1.0])  # frame 1: a point on an odd cell
    mask[1, 3, 5] = 1
    first, half, quarter, _ = encoder(features, mask, [(8, 8), (4, 4), (2, 2), (2, 2)])
    value0 = encoder.model_list[0](features[0, :, 0, 0])
    torch.testing.assert_close(first[0, :, 0, 0], value0)
    assert first[0].count_nonzero() == 3 and first[1].count_nonzero() == 3  # one cell, three channels
    value1 = encoder.model_list[1](features[0, :, 0, 0])
    torch.testing.assert_close(half[0, :, 0, 0], value1 / 4)  # averaged over a 2x2 block, mask kept
    assert half[1].count_nonzero() == 0  # the nearest mask reads the even cell (2, 4): empty
    assert quarter.count_nonzero() == 0  # bilinear taps 4i+1, 4i+2 never meet the nearest tap 4i


def test_point_encoder_checks_shapes_and_dtype():
    encoder = PointEncoder(embedding_channels=6, channels=(4, 4), hidden_channels=3)
    features, mask = _grids(2, 6, 4, 4)
    with pytest.raises(ValueError, match="expected 2 level sizes"):
        encoder(features, mask, [(4, 4)])
    with pytest.raises(ValueError, match=r"\(N, 6, h, w\)"):
        encoder(features[:, :5], mask, [(4, 4), (2, 2)])
    with pytest.raises(ValueError, match="does not match"):
        encoder(features, mask[:, :3], [(4, 4), (2, 2)])
    half = encoder.to(torch.bfloat16)(features, mask, [(4, 4), (2, 2)])
    assert all(level.dtype == torch.bfloat16 for level in half)


def test_point_encoder_parameter_names_follow_the_release():
    names = set(PointEncoder().state_dict())
    assert names == {f"model_list.{level}.mlp.{layer}.{kind}" for level in range(4) for layer in (0, 2)
                     for kind in ("weight", "bias")}
    shapes = {name: tuple(t.shape) for name, t in PointEncoder().state_dict().items()}
    assert shapes["model_list.0.mlp.0.weight"] == (128, 1280)
    assert [shapes[f"model_list.{i}.mlp.2.weight"][0] for i in range(4)] == [320, 640, 1280, 1280]


def test_motion_encoder_branches_and_zero_start():
    encoder = MotionEncoder(out_channels=8)
    sparse, dense = torch.randn(3, 2, 32, 48), torch.randn(3, 2, 32, 48)
    out = encoder(sparse, dense)
    assert out.shape == (3, 8, 4, 6)  # three stride-2 stages: 1/8, the latent size
    # Fresh: both branches end in zero convolutions, so F_m is the fusing conv's bias everywhere.
    torch.testing.assert_close(out, encoder.conv_final.bias.view(1, -1, 1, 1).expand_as(out))

    _randomise(encoder, seed=2)
    seen = {}
    encoder.conv_in_flow.register_forward_pre_hook(lambda _m, args: seen.setdefault("flow", args[0]))
    encoder.conv_in_traj.register_forward_pre_hook(lambda _m, args: seen.setdefault("traj", args[0]))
    out = encoder(sparse, dense)
    assert torch.equal(seen["flow"], dense) and torch.equal(seen["traj"], sparse)  # release: CMP -> "flow"

    def branch(field, conv_in, blocks, conv_out):
        hidden = F.silu(conv_in(field))
        for conv in blocks:
            hidden = F.silu(conv(hidden))
        return conv_out(hidden)

    expected = encoder.conv_final(branch(dense, encoder.conv_in_flow, encoder.blocks_flow,
                                         encoder.conv_out_flow)
                                  + branch(sparse, encoder.conv_in_traj, encoder.blocks_traj,
                                           encoder.conv_out_traj))
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="must both be"):
        encoder(sparse, dense[:, :, :16])


def test_motion_encoder_parameter_names_follow_the_release():
    shapes = {name: tuple(t.shape) for name, t in MotionEncoder(320).state_dict().items()}
    expected = {}
    for branch in ("flow", "traj"):
        expected[f"conv_in_{branch}.weight"] = (16, 2, 3, 3)
        for index, (width, next_width) in enumerate(((16, 32), (32, 96), (96, 256))):
            expected[f"blocks_{branch}.{2 * index}.weight"] = (width, width, 3, 3)
            expected[f"blocks_{branch}.{2 * index + 1}.weight"] = (next_width, width, 3, 3)
        expected[f"conv_out_{branch}.weight"] = (320, 256, 3, 3)
    expected["conv_final.weight"] = (320, 320, 3, 3)
    expected.update({name.replace("weight", "bias"): (shape[0],) for name, shape in expected.items()})
    assert shapes == expected
