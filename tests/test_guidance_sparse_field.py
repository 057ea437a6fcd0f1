"""Trajectories and the sparse motion field F_s (Eq. 3) against a slow reimplementation of the release
(``points_to_flows`` + per-frame ``cv2.filter2D``)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from dispose.errors import UserError
from dispose.guidance.sparse_field import (
    gaussian_kernel_1d,
    keypoint_steps,
    reflect_101,
    sparse_field_torch,
    sparse_motion_field,
    trajectory_map,
)
from dispose.guidance.trajectories import Trajectories, body_trajectories
from dispose.pose.keypoints import Pose, PoseSequence


def release_kernel(kernel_size: int, sigma: float) -> np.ndarray:
    """The release's isotropic ``bivariate_Gaussian``: 2-D pdf on the grid -(k//2)+1 .. k//2, normalised."""
    axis = np.arange(-kernel_size // 2 + 1.0, kernel_size // 2 + 1.0)
    xx, yy = np.meshgrid(axis, axis)
    grid = np.stack([xx, yy], axis=-1)
    inverse = np.linalg.inv(np.array([[sigma ** 2, 0.0], [0.0, sigma ** 2]]))
    pdf = np.exp(-0.5 * np.sum((grid @ inverse) * grid, axis=2))
    return pdf / pdf.sum()


def release_tracks(poses: list[Pose], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``pose2track``: (18, F, 2) pixels clipped to the image, 0 where missing; subset -1 where missing."""
    tracks = np.zeros((18, len(poses), 2))
    subsets = np.zeros((18, len(poses), 1))
    for f, pose in enumerate(poses):
        for k in range(18):
            if not pose.body_visible[k]:
                subsets[k, f] = -1
                continue
            x, y = float(pose.body[k, 0]), float(pose.body[k, 1])
            tracks[k, f, 0] = max(min(x * width, width - 1), 0)
            tracks[k, f, 1] = max(min(y * height, height - 1), 0)
            subsets[k, f] = k
    return tracks, subsets


def release_sparse_field(poses: list[Pose], height: int, width: int, kernel_size: int = 199,
                         sigma: float = 20.0, *, both_visible: bool = False) -> np.ndarray:
    """``points_to_flows`` + per-frame ``cv2.filter2D`` (float64, default border), as (N, 2, H, W).

    ``both_visible``: write a step only when the keypoint is found at both ends (our default rule)."""
    tracks, subsets = release_tracks(poses, height, width)
    length = len(poses)
    drag = np.zeros((length - 1, height, width, 2))
    for track, subset in zip(tracks, subsets):
        for i in range(length - 1):
            if subset[i] != -1 and not (both_visible and subset[i + 1] == -1):
                start, end = track[i], track[i + 1]
                drag[i, int(start[1]), int(start[0])] = end - start
    kernel = release_kernel(kernel_size, sigma)
    for i in range(length - 1):
        drag[i] = cv2.filter2D(drag[i], -1, kernel)
    return drag.transpose(0, 3, 1, 2)


def make_pose(points: np.ndarray, visible: np.ndarray) -> Pose:
    return Pose(body=points, body_score=np.where(visible, 0.9, 0.1), body_visible=visible)


def random_poses(rng: np.random.Generator, frames: int, missing: float = 0.2) -> list[Pose]:
    """Normalised poses wandering over the whole image, some points outside it, some missing."""
    start = rng.uniform(-0.05, 1.05, (18, 2))
    poses = []
    for _ in range(frames):
        start = start + rng.normal(0, 0.03, (18, 2))
        visible = rng.random(18) > missing
        points = start.copy()
        points[~visible] = rng.uniform(0, 1, (int((~visible).sum()), 2))  # junk coordinates, must be ignored
        poses.append(make_pose(points, visible))
    poses[0].body_visible[0] = True  # the reference shows a person
    return poses


def trajectories_of(poses: list[Pose], width: int, height: int) -> Trajectories:
    return body_trajectories(poses[0], PoseSequence(poses[1:], width, height), width, height)


def test_kernel_matches_release_grid() -> None:
    for size, sigma in ((199, 20.0), (31, 4.0), (1, 1.0)):
        g = gaussian_kernel_1d(size, sigma)
        np.testing.assert_allclose(np.outer(g, g), release_kernel(size, sigma), rtol=1e-12, atol=1e-18)
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel_1d(4, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_kernel_1d(5, 0.0)


def test_reflect_101_folds_like_opencv() -> None:
    for length in (1, 2, 5, 9):
        index = np.arange(-40, 41)
        expected = [cv2.borderInterpolate(int(i), length, cv2.BORDER_REFLECT_101) for i in index]
        assert reflect_101(index, length).tolist() == expected


def test_keypoint_moving_right_writes_displacement_at_start_pixel() -> None:
    width, height = 64, 48
    points = np.zeros((3, 18, 2))
    visible = np.zeros((3, 18), bool)
    visible[:, 4] = True
    points[:, 4] = [[20.6, 30.9], [25.6, 30.9], [25.6, 30.9]]  # +5 px right, then still
    traj = Trajectories(points, visible, width, height)
    raw = trajectory_map(traj)
    assert raw.shape == (2, 2, height, width)
    assert raw[0, :, 30, 20].tolist() == pytest.approx([5.0, 0.0])
    assert np.count_nonzero(raw[0]) == 1
    assert np.count_nonzero(raw[1]) == 0  # a still keypoint writes zeros

    field = sparse_motion_field(traj, kernel_size=21, sigma=3.0)
    assert field.shape == (2, 2, height, width) and field.dtype == np.float32
    # away from the borders the filter keeps the mass: integral = displacement * kernel sum (= 1)
    assert field[0, 0].sum() == pytest.approx(5.0, rel=1e-5)
    assert abs(field[0, 1]).max() == 0.0
    g = gaussian_kernel_1d(21, 3.0)
    assert field[0, 0, 30, 20] == pytest.approx(5.0 * g[10] ** 2, rel=1e-5)
    assert field[0, 0, 30, 20] == field[0, 0].max()
    np.testing.assert_array_equal(field[1], 0.0)


def test_border_pixel_follows_reflect_101() -> None:
    """On a border pixel only the taps that land on it see it (REFLECT_101 never repeats the edge pixel)."""
    points = np.zeros((2, 18, 2))
    visible = np.zeros((2, 18), bool)
    visible[:, 0] = True
    points[:, 0] = [[0.0, 10.0], [3.0, 10.0]]
    traj = Trajectories(points, visible, 40, 20)
    field = sparse_motion_field(traj, kernel_size=21, sigma=3.0)
    raw = trajectory_map(traj)[0].transpose(1, 2, 0).astype(np.float64)
    expected = cv2.filter2D(raw, -1, release_kernel(21, 3.0))[..., 0]
    np.testing.assert_allclose(field[0, 0], expected, atol=1e-7)
    assert field[0, 0].sum() < 0.6 * 3.0  # about half the kernel's taps reach a pixel of the left column


@pytest.mark.parametrize("width,height,kernel_size,sigma", [(48, 32, 199, 20.0), (70, 90, 31, 5.0),
                                                            (33, 7, 15, 2.5)])
def test_equals_release_computation(width, height, kernel_size, sigma) -> None:
    rng = np.random.default_rng(width * height)
    poses = random_poses(rng, 6)
    # collisions: two keypoints on one pixel (the later one wins), and a point pinned to a corner
    poses[2].body[3] = poses[2].body[5]
    poses[2].body_visible[[3, 5]] = True
    poses[3].body[7] = [1.3, -0.2]
    poses[3].body_visible[7] = True
    expected = release_sparse_field(poses, height, width, kernel_size, sigma)
    traj = trajectories_of(poses, width, height)
    ours = sparse_motion_field(traj, kernel_size=kernel_size, sigma=sigma, release_missing_points=True)
    np.testing.assert_allclose(ours, expected, atol=1e-6, rtol=0)
    assert np.abs(expected).max() > 1e-3


def border_poses(rng: np.random.Generator, frames: int, width: int, height: int) -> list[Pose]:
    """Random poses with half of the keypoints on, next to or beyond a border or a corner in every frame."""
    poses = random_poses(rng, frames)
    offsets = np.array([-3.0, 0.0, 0.4, 1.0, 1.7, 2.0, 60.0])  # pixels from the border
    for pose in poses:
        for k in rng.choice(18, 9, replace=False):
            x, y = rng.choice(offsets, 2) / (width, height)
            corner_x, corner_y = rng.integers(0, 2, 2)
            pose.body[k] = [1 - x if corner_x else x, 1 - y if corner_y else y]
            if rng.random() < 0.3:  # on one border only
                pose.body[k, rng.integers(0, 2)] = rng.uniform(0.2, 0.8)
    return poses


@pytest.mark.parametrize("release_rule", [False, True])
@pytest.mark.parametrize("width,height", [(48, 32), (90, 70), (301, 23)])
def test_torch_field_equals_release_near_every_border(release_rule, width, height) -> None:
    rng = np.random.default_rng(width + 7 * height + release_rule)
    poses = border_poses(rng, 8, width, height)
    poses[4].body[6] = poses[4].body[2]  # a collision: the later keypoint wins
    poses[4].body_visible[[2, 6]] = True
    expected = release_sparse_field(poses, height, width, both_visible=not release_rule)
    assert np.abs(expected).max() > 1e-3
    traj = trajectories_of(poses, width, height)
    frames = [6, 0, 3, 3, 4]  # any order, repeats allowed
    for points, visible, dtype in ((torch.from_numpy(traj.points), torch.from_numpy(traj.visible),
                                    torch.float32),
                                   (traj.points, traj.visible, torch.float64)):
        field = sparse_field_torch(points, visible, frames, height, width,
                                   release_missing_points=release_rule, dtype=dtype)
        assert field.shape == (5, 2, height, width) and field.dtype == dtype
        np.testing.assert_allclose(field.double().numpy(), expected[frames], atol=1e-6, rtol=0)
    whole = sparse_motion_field(traj, release_missing_points=release_rule, chunk_frames=3)
    np.testing.assert_allclose(whole, expected, atol=1e-6, rtol=0)


def test_torch_field_writes_into_a_given_buffer_and_checks_its_input() -> None:
    width, height = 40, 30
    points = np.zeros((4, 18, 2))
    visible = np.zeros((4, 18), bool)
    points[:, 3] = [[5.0, 6.0], [7.0, 6.5], [9.0, 8.0], [9.0, 8.0]]
    visible[:, 3] = True
    points[2, 5] = np.nan  # coordinates of a keypoint that is not visible are ignored
    buffer = torch.full((2, 2, height, width), 7.0)
    field = sparse_field_torch(points, visible, [1, 2], height, width, kernel_size=21, sigma=3.0, out=buffer)
    assert field is buffer
    np.testing.assert_allclose(field.numpy(), sparse_motion_field(Trajectories(np.nan_to_num(points), visible,
                                                                               width, height),
                                                                  kernel_size=21, sigma=3.0)[1:3], atol=1e-7)
    assert field[1].abs().max() == 0  # a still keypoint: zero everywhere
    with pytest.raises(ValueError, match="out must be"):
        sparse_field_torch(points, visible, [0], height, width, out=torch.zeros(2, 2, height, width))
    with pytest.raises(ValueError, match=r"driving frames \(0..2\)"):
        sparse_field_torch(points, visible, [3], height, width)
    with pytest.raises(ValueError, match="outside the 4x30 image"):
        sparse_field_torch(points, visible, [0], height, 4)
    with pytest.raises(ValueError, match=r"\(N \+ 1, K, 2\)"):
        sparse_field_torch(points[:1], visible[:1], [0], height, width)


def test_missing_points_release_rule_and_default() -> None:
    width, height = 50, 40
    points = np.zeros((4, 18, 2))
    visible = np.zeros((4, 18), bool)
    points[:, 2] = [[10.5, 20.5], [12.0, 21.0], [0.0, 0.0], [30.0, 15.0]]
    visible[:, 2] = [True, True, False, True]  # disappears in frame 2, back in frame 3
    points[:, 9] = [[40.0, 5.0], [41.0, 5.0], [42.0, 5.0], [43.0, 5.0]]
    visible[:, 9] = True
    traj = Trajectories(points, visible, width, height)

    release = trajectory_map(traj, release_missing_points=True)
    # step 1 -> 2: start visible, end missing: the release writes the way to the top-left corner
    assert release[1, :, 21, 12].tolist() == [-12.0, -21.0]
    # step 2 -> 3: start missing: nothing is written for keypoint 2
    assert np.count_nonzero(np.abs(release[2]).sum(0)) == 1 and release[2, :, 5, 42].tolist() == [1.0, 0.0]

    ours = trajectory_map(traj)
    assert ours[0, :, 20, 10].tolist() == [1.5, 0.5]
    assert np.count_nonzero(np.abs(ours[1]).sum(0)) == 1 and ours[1, :, 5, 41].tolist() == [1.0, 0.0]
    assert np.count_nonzero(np.abs(ours[2]).sum(0)) == 1
    _, _, vectors = keypoint_steps(traj.points, traj.visible, [0, 1, 2], height, width)
    assert (vectors != 0).any(-1).sum(1).tolist() == [2, 1, 1]


def test_trajectories_from_poses() -> None:
    ref = make_pose(np.full((18, 2), 0.5), np.ones(18, bool))
    moved = np.full((18, 2), 0.5)
    moved[0] = [1.2, -0.1]  # outside: clipped to the last pixel / first row
    hidden = np.ones(18, bool)
    hidden[5] = False
    driving = PoseSequence([make_pose(moved, hidden)], 100, 60)
    traj = body_trajectories(ref, driving, 100, 60)
    assert traj.points.shape == (2, 18, 2) and traj.points.dtype == np.float64
    assert traj.points[0, 0].tolist() == [50.0, 30.0]
    assert traj.points[1, 0].tolist() == [99.0, 0.0]
    assert traj.points[1, 5].tolist() == [0.0, 0.0] and not traj.visible[1, 5]
    assert traj.num_driving == 1 and traj.num_keypoints == 18


def test_bad_poses_are_rejected() -> None:
    person = make_pose(np.full((18, 2), 0.5), np.ones(18, bool))
    nobody = make_pose(np.full((18, 2), 0.5), np.zeros(18, bool))
    with pytest.raises(UserError, match="no person found in the reference"):
        body_trajectories(nobody, PoseSequence([person], 10, 10), 10, 10)
    with pytest.raises(UserError, match="no frames"):
        body_trajectories(person, PoseSequence([], 10, 10), 10, 10)
    with pytest.raises(UserError, match="no person found in any of the 2 driving frames"):
        body_trajectories(person, PoseSequence([nobody, nobody], 10, 10), 10, 10)
    broken = make_pose(np.full((18, 2), 0.5), np.ones(18, bool))
    broken.body[3] = [np.nan, 0.2]
    with pytest.raises(ValueError, match="NaN"):
        body_trajectories(person, PoseSequence([broken], 10, 10), 10, 10)
    with pytest.raises(ValueError, match="at least one driving frame"):
        Trajectories(np.zeros((1, 18, 2)), np.ones((1, 18), bool), 10, 10)
    with pytest.raises(ValueError, match="NaN or inf"):
        Trajectories(np.full((2, 18, 2), np.inf), np.ones((2, 18), bool), 10, 10)
