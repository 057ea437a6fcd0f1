"""Point embeddings and the keypoint correspondence map F_p (Eq. 6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dispose.guidance.correspondence import (
    body_keypoints,
    correspondence_map,
    point_embeddings,
    sample_resized,
)
from dispose.pose.keypoints import Pose


@pytest.mark.parametrize("size", [(4, 6), (7, 3), (13, 29), (2, 2)])
def test_sample_resized_matches_interpolate(size):
    torch.manual_seed(0)
    features = torch.randn(5, 3, 4)
    full = F.interpolate(features[None], size=size, mode="bilinear", align_corners=False)[0]
    rows, cols = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    values = sample_resized(features, rows.reshape(-1), cols.reshape(-1), size)
    torch.testing.assert_close(values, full.flatten(1).t(), atol=1e-6, rtol=1e-6)


def test_point_embedding_hand_built():
    # One row [0, 1] resized to 4 columns reads [0, 0.25, 0.75, 1] (align_corners=False, edges clamped).
    features = torch.tensor([[[0.0, 1.0]], [[10.0, 10.0]]])  # (C=2, h=1, w=2)
    points = torch.tensor([[0.0, 0.5], [0.3, 0.5], [0.6, 0.9], [1.2, -0.4], [0.9, 0.1]])
    visible = torch.tensor([True, True, True, True, False])
    expected = torch.tensor([[0.0, 10], [0.25, 10], [0.75, 10], [1.0, 10], [0.0, 0.0]])
    paper = point_embeddings(features, points, visible, (4, 3), release_axes=False)
    torch.testing.assert_close(paper, expected)
    # The release reads a W-rows x H-cols grid: x is scaled by the height, here 4.
    release = point_embeddings(features[None], points, visible, (3, 4), release_axes=True)
    torch.testing.assert_close(release, expected)


@pytest.mark.parametrize("release_axes", [True, False])
def test_point_embeddings_match_full_resize(release_axes):
    torch.manual_seed(1)
    width, height = 48, 80
    features = torch.randn(6, height // 16, width // 16)
    points = torch.rand(18, 2) * 1.2 - 0.1
    visible = torch.rand(18) > 0.3
    grid = (width, height) if release_axes else (height, width)
    full = F.interpolate(features[None], size=grid, mode="bilinear", align_corners=False)[0]
    expected = torch.zeros(18, 6)
    for k in range(18):  # the release's per-point rule, written out
        if visible[k]:
            col = max(min(int(points[k, 0] * grid[1]), grid[1] - 1), 0)
            row = max(min(int(points[k, 1] * grid[0]), grid[0] - 1), 0)
            expected[k] = full[:, row, col]
    got = point_embeddings(features, points.numpy(), visible.numpy(), (width, height),
                           release_axes=release_axes)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got[~visible] == 0).all()


def test_point_embeddings_keep_dtype():
    features = torch.randn(4, 2, 3, dtype=torch.float16)
    out = point_embeddings(features, torch.full((18, 2), 0.5), torch.ones(18, dtype=torch.bool), (48, 32))
    assert out.dtype == torch.float16 and out.shape == (18, 4)


def test_correspondence_hand_built():
    embeddings = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]])
    # 64x32 image -> grid of 2 rows x 4 columns.
    points = torch.tensor([
        [[0.10, 0.10], [0.20, 0.40], [0.90, 0.90]],  # points 0 and 1 share cell (0, 0)
        [[-0.01, 0.5], [1.50, 0.99], [0.60, 0.60]],  # 0 skipped (negative), 1 clipped to (1, 3), 2 invisible
    ])
    visible = torch.tensor([[True, True, True], [True, True, False]])
    features, mask = correspondence_map(embeddings, points, visible, (64, 32))
    assert features.shape == (2, 2, 2, 4) and mask.shape == (2, 2, 4)
    expected_mask = torch.zeros(2, 2, 4)
    expected_mask[0, 0, 0] = expected_mask[0, 1, 3] = expected_mask[1, 1, 3] = 1
    torch.testing.assert_close(mask, expected_mask)
    torch.testing.assert_close(features[0, :, 0, 0], torch.tensor([2.0, 1.0]))  # mean of two
    torch.testing.assert_close(features[0, :, 1, 3], embeddings[2])
    torch.testing.assert_close(features[1, :, 1, 3], embeddings[1])
    assert (features * (1 - mask[:, None]) == 0).all()


def test_missing_reference_point_quirk():
    embeddings = torch.tensor([[0.0, 0.0], [4.0, 2.0]])  # point 0 was invisible in the reference
    points = torch.tensor([[[0.1, 0.1], [0.1, 0.1]]])
    visible = torch.ones(1, 2, dtype=torch.bool)
    features, mask = correspondence_map(embeddings, points, visible, (32, 32))
    assert mask[0, 0, 0] == 1
    torch.testing.assert_close(features[0, :, 0, 0], torch.tensor([2.0, 1.0]))  # zero counted in the mean
    features, mask = correspondence_map(embeddings, points, visible, (32, 32),
                                        reference_visible=torch.tensor([False, True]))
    torch.testing.assert_close(features[0, :, 0, 0], torch.tensor([4.0, 2.0]))


def _release_loop(embeddings, points, visible, width, height, stride=16):
    """The release's point-adapter placement, one frame and one point at a time."""
    grid_w, grid_h = width // stride, height // stride
    frames, num_points, _ = points.shape
    state = torch.zeros(frames, embeddings.shape[1], grid_h, grid_w)
    mask = torch.zeros(frames, grid_h, grid_w)
    count = torch.ones(frames, grid_h, grid_w)
    for f in range(frames):
        for k in range(num_points):
            x, y = points[f, k].tolist()
            if min(x, y) < 0:
                continue
            col = max(min(int(x * grid_w), grid_w - 1), 0)
            row = max(min(int(y * grid_h), grid_h - 1), 0)
            if visible[f, k]:
                if mask[f, row, col] != 0:
                    count[f, row, col] += 1
                state[f, :, row, col] += embeddings[k]
                mask[f, row, col] = 1
    return state / count[:, None], mask


def test_vectorised_equals_loop():
    torch.manual_seed(2)
    width, height = 96, 160
    embeddings = torch.randn(18, 7)
    points = torch.rand(12, 18, 2) * 0.5 + 0.2  # crowded: many collisions
    points[3, :4] = torch.tensor([[-0.2, 0.5], [1.3, 0.5], [0.5, 1.7], [0.5, -0.01]])
    visible = torch.rand(12, 18) > 0.2
    features, mask = correspondence_map(embeddings, points, visible, (width, height))
    ref_features, ref_mask = _release_loop(embeddings, points, visible, width, height)
    torch.testing.assert_close(mask, ref_mask)
    torch.testing.assert_close(features, ref_features, atol=1e-6, rtol=1e-6)
    placed = int((visible & (points >= 0).all(-1)).sum())
    assert 0 < int(mask.sum()) < placed  # the case does exercise collisions


def test_correspondence_dtype_and_errors():
    embeddings = torch.randn(18, 4, dtype=torch.bfloat16)
    features, mask = correspondence_map(embeddings, np.full((3, 18, 2), 0.5, np.float32),
                                        np.ones((3, 18), bool), (48, 64))
    assert features.dtype == mask.dtype == torch.bfloat16 and features.shape == (3, 4, 4, 3)
    with pytest.raises(ValueError, match="points"):
        correspondence_map(embeddings, torch.zeros(3, 17, 2), torch.ones(3, 17, dtype=torch.bool), (48, 64))
    with pytest.raises(ValueError, match="grid cell"):
        correspondence_map(embeddings, torch.zeros(3, 18, 2), torch.ones(3, 18, dtype=torch.bool), (8, 64))


def test_body_keypoints_from_poses():
    body = np.linspace(0, 1, 36, dtype=np.float32).reshape(18, 2)
    score = np.linspace(0, 1, 18, dtype=np.float32)
    poses = [Pose.from_scores(body, score), Pose.from_scores(body * 0.5, score)]
    points, visible = body_keypoints(poses)
    assert points.shape == (2, 18, 2) and visible.shape == (2, 18) and visible.dtype == torch.bool
    torch.testing.assert_close(points[1], torch.from_numpy(body * 0.5))
    assert visible[0].tolist() == (score > 0.3).tolist()
