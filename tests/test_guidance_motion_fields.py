"""P_d (Eq. 4) against a slow reimplementation of the release, and the dense field F_d end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dispose.guidance import motion_fields
from dispose.guidance.cmp import CMP, cmp_dense_flow, release_image_tensor
from dispose.guidance.motion_fields import dense_motion_field
from dispose.guidance.reference_flow import reference_displacements, reference_sparse_flow
from dispose.guidance.trajectories import Trajectories


def release_reference_flow(points: np.ndarray, visible: np.ndarray, width: int, height: int,
                           size: int = 384) -> tuple[np.ndarray, np.ndarray]:
    """``sample_inputs_flow`` -> ``get_sparse_flow`` at 384: every keypoint of every frame, 0 if missing."""
    tracks = np.where(visible[..., None], points, 0.0)  # pose2track: missing points at (0, 0)
    grid = np.empty_like(tracks)
    grid[..., 0] = tracks[..., 0] / width * size
    grid[..., 1] = tracks[..., 1] / height * size
    frames = len(grid) - 1
    flow = np.zeros((frames, size, size, 2))
    mask = np.zeros((frames, size, size), np.uint8)
    for n in range(frames):
        for k in range(grid.shape[1]):
            row = min(max(int(grid[0, k, 1]), 0), size - 1)
            col = min(max(int(grid[0, k, 0]), 0), size - 1)
            flow[n, row, col] = grid[n + 1, k] - grid[0, k]
            mask[n, row, col] = 1
    return flow.transpose(0, 3, 1, 2), np.repeat(mask[:, None], 2, axis=1).astype(np.float32)


def random_trajectories(rng: np.random.Generator, frames: int, width: int, height: int) -> Trajectories:
    points = rng.uniform(0, [width - 1, height - 1], (frames + 1, 18, 2))
    visible = rng.random((frames + 1, 18)) > 0.25
    visible[0, 0] = True
    points[~visible] = 0.0
    return Trajectories(points, visible, width, height)


def test_reference_flow_known_answer() -> None:
    points = np.zeros((3, 18, 2))
    visible = np.zeros((3, 18), bool)
    points[:, 6] = [[100.7, 50.2], [110.7, 50.2], [100.7, 40.2]]
    visible[:, 6] = True
    traj = Trajectories(points, visible, 200, 100)
    flow, mask = reference_sparse_flow(traj)
    assert flow.shape == mask.shape == (2, 2, 384, 384)
    row, col = int(50.2 / 100 * 384), int(100.7 / 200 * 384)
    assert flow[0, :, row, col] == pytest.approx([10 / 200 * 384, 0.0])
    assert flow[1, :, row, col] == pytest.approx([0.0, -10 / 100 * 384])
    assert mask[:, :, row, col].tolist() == [[1.0, 1.0], [1.0, 1.0]] and mask.sum() == 4
    starts, vectors, given = reference_displacements(traj)
    assert starts[6].tolist() == [100.7, 50.2] and vectors[0, 6].tolist() == pytest.approx([10.0, 0.0])
    assert given.sum() == 2


@pytest.mark.parametrize("width,height", [(576, 1024), (200, 100)])
def test_reference_flow_equals_release(width, height) -> None:
    traj = random_trajectories(np.random.default_rng(width), 5, width, height)
    flow, mask = reference_sparse_flow(traj, release_missing_points=True)
    expected_flow, expected_mask = release_reference_flow(traj.points, traj.visible, width, height)
    np.testing.assert_allclose(flow, expected_flow, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(mask, expected_mask)
    # the release writes every point: missing ones pile up at the corner pixel
    assert mask[:, 0, 0, 0].all()


def test_missing_points_default_and_release() -> None:
    points = np.zeros((3, 18, 2))
    visible = np.zeros((3, 18), bool)
    points[:, 1] = [[96.0, 48.0], [99.0, 48.0], [0.0, 0.0]]
    visible[:, 1] = [True, True, False]
    points[:, 17] = [[0.0, 0.0], [50.0, 20.0], [60.0, 30.0]]
    visible[:, 17] = [False, True, True]
    traj = Trajectories(points, visible, 192, 96)
    flow, mask = reference_sparse_flow(traj)
    assert mask[0].sum() == 2 and mask[1].sum() == 0  # frame 2 has nothing visible in both
    assert flow[0, :, 192, 192].tolist() == [6.0, 0.0]

    flow, mask = reference_sparse_flow(traj, release_missing_points=True)
    assert flow[1, :, 192, 192].tolist() == [-192.0, -192.0]  # missing in frame 2: towards the corner
    # missing in the reference: its absolute position at the corner (keypoint 17 is the last one written
    # there; the 16 points missing everywhere write zeros there before it)
    assert flow[0, :, 0, 0].tolist() == [100.0, 80.0] and mask[0, :, 0, 0].tolist() == [1.0, 1.0]
    assert flow[1, :, 0, 0].tolist() == [120.0, 120.0]


def test_compute_without_dense_and_with_propagation() -> None:
    width, height = 96, 160
    image = np.full((height, width, 3), (40, 60, 90), np.uint8)
    image[30:140, 30:66] = (230, 190, 70)
    points = np.zeros((3, 18, 2))
    visible = np.zeros((3, 18), bool)
    body = [[48, 40], [48, 55], [38, 58], [36, 80], [35, 100], [58, 58], [60, 80], [61, 100],
            [42, 100], [42, 120], [42, 135], [54, 100], [54, 120], [54, 135]]
    points[:, :14] = body
    visible[:, :14] = True
    points[1, :14] += [4.0, -2.0]
    points[2, :14] += [-3.0, 1.0]
    traj = Trajectories(points, visible, width, height)

    dense = dense_motion_field(image, traj, "propagate")
    # chunked
    np.testing.assert_array_equal(dense_motion_field(image, traj, "propagate", chunk_frames=1), dense)
    assert dense.shape == (2, 2, height, width) and dense.dtype == np.float32
    inside = np.zeros((height, width), bool)
    inside[40:130, 36:60] = True  # well inside the person
    assert not np.abs(dense[:, :, 5, 5]).any()  # the background does not move
    for frame, vector in enumerate(([4.0, -2.0], [-3.0, 1.0])):
        for c in range(2):
            np.testing.assert_allclose(dense[frame, c][inside], vector[c], atol=1e-4)


@torch.no_grad()
def test_compute_with_cmp_matches_release_postprocessing(monkeypatch) -> None:
    grid = 64  # CMP's grid is 384; a smaller one keeps the random-weight CMP fast on CPU
    monkeypatch.setattr(motion_fields, "CMP_SIZE", grid)
    torch.manual_seed(0)
    cmp = CMP().eval()
    rng = np.random.default_rng(3)
    width, height = 80, 96
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    traj = random_trajectories(rng, 2, width, height)
    dense = motion_fields.dense_motion_field(image, traj, "cmp", cmp=cmp)
    assert dense.shape == (2, 2, height, width)
    reference_flow, reference_mask = motion_fields.reference_sparse_flow(traj, size=grid)
    # the release: reference resized to the grid (nearest), CMP on P_d, nearest back, x * W/S, y * H/S
    ref_small = F.interpolate(release_image_tensor(image).add(1).div(2), size=(grid, grid), mode="nearest")
    ref_small = (ref_small[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    flow = cmp_dense_flow(cmp, ref_small, reference_flow, reference_mask)
    expected = F.interpolate(flow, size=(height, width), mode="nearest")
    expected[:, 0] *= width / grid
    expected[:, 1] *= height / grid
    np.testing.assert_allclose(dense, expected.numpy(), atol=1e-5)
    assert np.abs(dense).max() > 0


def test_bad_arguments() -> None:
    traj = random_trajectories(np.random.default_rng(0), 1, 32, 48)
    image = np.zeros((48, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="needs a loaded CMP"):
        dense_motion_field(image, traj, "cmp")
    with pytest.raises(ValueError, match="cmp or propagate"):
        dense_motion_field(image, traj, "raft")
    with pytest.raises(ValueError, match="32x48"):
        dense_motion_field(np.zeros((32, 48, 3), np.uint8), traj, "propagate")
    with pytest.raises(ValueError, match="uint8"):
        dense_motion_field(image.astype(np.float32), traj, "propagate")
