"""Tile indices and fusion weights (dispose.pipelines.tiling)."""

from __future__ import annotations

import itertools

import pytest
import torch

from dispose.pipelines.tiling import (
    fusion_normaliser,
    fusion_weights,
    repeat_tile_noise,
    tile_indices,
)


def _release_indices(n, tile, overlap):
    """The release's formula, valid for n >= tile."""
    indices = [[0, *range(i + 1, min(i + tile, n))] for i in range(0, n - tile + 1, tile - overlap)]
    if indices[-1][-1] < n - 1:
        indices.append([0, *range(n - tile + 1, n)])
    return indices


def test_release_settings_first_tiles():
    tiles = tile_indices(40, 16, 6)
    assert tiles[0] == list(range(16))
    assert tiles[1] == [0, *range(11, 26)]
    assert all(len(t) == 16 and t[0] == 0 for t in tiles)


@pytest.mark.parametrize("n", range(16, 80))
def test_matches_release_for_videos_of_a_tile_or_longer(n):
    assert tile_indices(n, 16, 6) == _release_indices(n, 16, 6)


@pytest.mark.parametrize(("n", "tile", "overlap"),
                         [(17, 16, 6), (40, 16, 6), (101, 16, 1), (33, 8, 6), (9, 2, 1)])
def test_every_frame_covered_and_consecutive_tiles_overlap(n, tile, overlap):
    tiles = tile_indices(n, tile, overlap)
    assert len(tiles) > 1
    assert set().union(*map(set, tiles)) == set(range(n))
    for first, second in itertools.pairwise(tiles):
        assert len(set(first[1:]) & set(second[1:])) >= overlap - 1  # overlap counts the shared frame 0


@pytest.mark.parametrize("n", [1, 2, 5, 15, 16])
def test_short_video_is_one_tile(n):
    assert tile_indices(n, 16, 6) == [list(range(n))]


def test_invalid_settings():
    with pytest.raises(ValueError, match="overlap"):
        tile_indices(20, 16, 16)
    with pytest.raises(ValueError, match="uncovered"):
        tile_indices(20, 16, 0)
    with pytest.raises(ValueError, match="at least 2"):
        tile_indices(20, 1, 0)
    with pytest.raises(ValueError, match="at least one frame"):
        tile_indices(0)


def test_triangular_weights():
    weights = fusion_weights(16)
    expected = torch.minimum((torch.arange(16) + 0.5) * 2 / 16, 2 - (torch.arange(16) + 0.5) * 2 / 16)
    torch.testing.assert_close(weights, expected)
    assert weights[0] == weights[-1] == pytest.approx(1 / 16)
    assert torch.equal(weights, weights.flip(0))
    assert (fusion_normaliser(tile_indices(50, 16, 6), 50) > 0).all()


def test_noise_block_repeats_along_video():
    block = torch.randn(1, 4, 2, 3, 3)
    noise = repeat_tile_noise(block, 10)
    assert noise.shape == (1, 10, 2, 3, 3)
    torch.testing.assert_close(noise[:, 4:8], block)
    torch.testing.assert_close(noise[:, 8:], block[:, :2])
    torch.testing.assert_close(repeat_tile_noise(block, 3), block[:, :3])
