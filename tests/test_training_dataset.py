"""The training dataset on a clip prepared from the shared dancer video: the sample contract the trainer
relies on, the reference at position 0, consistent horizontal flips, resizing, determinism, batching, the
watershed samples on CMP's grid, and the checks ``dispose train`` runs on a dataset before any model loads."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from dispose.bases.mimicmotion.tiny import build_tiny_weights
from dispose.errors import UserError
from dispose.guidance.tiny import DIFT_CHANNELS
from dispose.training import shard
from dispose.training.config import TrainConfig
from dispose.training.dataset import TrainingDataset, open_dataset
from dispose.training.prepare import ModelFiles, PrepareSettings, prepare_dataset

W, H, T, K = 128, 192, 16, 18
SETTINGS = PrepareSettings(width=W, height=H, max_frames=16, references=2)


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    sd15 = build_tiny_weights(tmp_path_factory.mktemp("weights")) / "stable-diffusion-v1-5"
    out = tmp_path_factory.mktemp("dataset")
    records = prepare_dataset(shared_data / "musepose_dance.mp4", out, SETTINGS,
                              ModelFiles(sd15=sd15, device="cpu", detector="mediapipe"), progress=False)
    assert [r["status"] for r in records] == ["ok"]
    return out


def _flow_error(sample: dict) -> tuple[float, float]:
    """Mean distance between the dense flow read at each reference keypoint and that keypoint's actual
    displacement, and the mean displacement itself, over keypoints visible in the reference and the frame."""
    errors, moves = [], []
    points = sample["trajectories"]
    for n in range(1, T):
        for k in np.flatnonzero((sample["visible"][0] & sample["visible"][n]).numpy()):
            x, y = points[0, k].long().tolist()
            moved = points[n, k] - points[0, k]
            errors.append(float((sample["dense_flow"][n - 1, :, y, x] - moved).norm()))
            moves.append(float(moved.norm()))
    return float(np.mean(errors)), float(np.mean(moves))


def test_sample_contract(prepared) -> None:
    """The written-down example of what the trainer receives (shapes, dtypes, ranges)."""
    dataset = TrainingDataset(prepared)
    assert len(dataset) == 1 and dataset.size == (W, H)
    sample = dataset[0]
    expected = {"pixels": ((T, 3, H, W), torch.uint8), "pose_images": ((T, 3, H, W), torch.uint8),
                "trajectories": ((T, K, 2), torch.float32), "visible": ((T, K), torch.bool),
                "dense_flow": ((T - 1, 2, H, W), torch.float16),
                "point_embeddings": ((K, DIFT_CHANNELS), torch.float16), "points": ((T, K, 2), torch.float32)}
    assert {key: (tuple(v.shape), v.dtype) for key, v in sample.items()} == expected
    assert sample["pixels"].float().std() > 25
    assert sample["pose_images"].min() == 0 and sample["pose_images"].max() > 128  # black canvas, limbs
    visible = sample["visible"]
    assert visible.float().mean() > 0.5
    points, pixels = sample["points"][visible], sample["trajectories"][visible]
    assert ((points >= 0) & (points < 1)).all()
    torch.testing.assert_close(pixels, points * torch.tensor([W, H], dtype=torch.float32))
    assert not sample["trajectories"][~visible].any() and not sample["points"][~visible].any()
    assert torch.isfinite(sample["dense_flow"]).all() and sample["dense_flow"].abs().max() > 0
    embeddings = sample["point_embeddings"]
    assert embeddings[visible[0]].abs().sum(1).min() > 0 and not embeddings[~visible[0]].any()


def test_position_zero_is_the_reference_frame(prepared) -> None:
    dataset = TrainingDataset(prepared)
    assert dataset.clips[0]["record"]["references"][0] == 0
    sample = dataset.sample(0, candidate=0, window=list(range(T - 1)), flip=False)  # the window starts at it
    torch.testing.assert_close(sample["pixels"][0], sample["pixels"][1])
    torch.testing.assert_close(sample["trajectories"][0], sample["trajectories"][1])
    assert not sample["dense_flow"][0].any()  # the reference does not move relative to itself
    assert sample["dense_flow"][-1].abs().max() > 0


def test_flip_mirrors_pixels_poses_and_flows_consistently(prepared) -> None:
    dataset = TrainingDataset(prepared)
    window = list(range(1, T))
    plain = dataset.sample(0, candidate=1, window=window, flip=False)  # reference: the last frame
    flipped = dataset.sample(0, candidate=1, window=window, flip=True)
    torch.testing.assert_close(flipped["pixels"], plain["pixels"].flip(-1))
    # the dense flow read at each reference keypoint agrees with that keypoint's motion exactly as well after
    # the flip as before; mirroring the flow without negating x would agree worse
    assert _flow_error(flipped) == pytest.approx(_flow_error(plain), rel=1e-4)
    flipped_naively = dict(flipped,
                           dense_flow=flipped["dense_flow"] * torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1))
    assert _flow_error(flipped_naively)[0] > 1.2 * _flow_error(flipped)[0]
    # left and right are exchanged: the flipped right shoulder (2) is the mirrored left shoulder (5)
    both = plain["visible"][:, 5]
    torch.testing.assert_close(flipped["trajectories"][both, 2, 0], W - plain["trajectories"][both, 5, 0])
    torch.testing.assert_close(flipped["trajectories"][both, 2, 1], plain["trajectories"][both, 5, 1])
    torch.testing.assert_close(flipped["point_embeddings"][2], plain["point_embeddings"][5])
    # the skeletons are the mirrored ones.  At 128 px the limbs are thinner than a pixel and alias into dashes
    # that differ between the two drawings, so the comparison is between local densities of drawn pixels
    def density(images: torch.Tensor) -> torch.Tensor:
        drawn = (images.amax(1, keepdim=True) > 0).float()
        return torch.nn.functional.avg_pool2d(drawn, 9, stride=1, padding=4).flatten()

    def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.corrcoef(torch.stack([density(a), density(b)]))[0, 1])

    assert correlation(flipped["pose_images"], plain["pose_images"].flip(-1)) > 0.85
    assert correlation(flipped["pose_images"], plain["pose_images"]) < 0.7


def test_other_sizes_crop_and_scale_everything_together(prepared) -> None:
    native = TrainingDataset(prepared, flip_probability=0)
    small = TrainingDataset(prepared, size=(64, 64), flip_probability=0)
    a, b = native[0], small[0]
    assert b["pixels"].shape == (T, 3, 64, 64) and b["dense_flow"].shape == (T - 1, 2, 64, 64)
    # 128x192 -> 64x96 -> centre crop of 64 rows starting at row 16: keypoints move with the crop
    inside = b["visible"]
    torch.testing.assert_close(b["trajectories"][inside],
                               a["trajectories"][inside] / 2 - torch.tensor([0.0, 16.0]))
    assert (a["visible"] >= b["visible"]).all()
    assert b["dense_flow"].abs().max() <= a["dense_flow"].float().abs().max() / 2 * (1 + 2 ** -10)  # float16


def test_draws_depend_on_index_seed_and_epoch_only(prepared) -> None:
    dataset = TrainingDataset(prepared, samples_per_clip=8)
    draws = [dataset.choose(i) for i in range(8)]
    assert draws == [TrainingDataset(prepared, samples_per_clip=8).choose(i) for i in range(8)]
    assert len({(d["reference"], d["window"][0], d["flip"]) for d in draws}) > 1
    dataset.set_epoch(1)
    assert [dataset.choose(i) for i in range(8)] != draws
    torch.testing.assert_close(TrainingDataset(prepared)[0], TrainingDataset(prepared)[0])


def test_batches_through_a_dataloader(prepared) -> None:
    loader = torch.utils.data.DataLoader(TrainingDataset(prepared, samples_per_clip=2), batch_size=2)
    batch = next(iter(loader))
    assert batch["pixels"].shape == (2, T, 3, H, W) and batch["dense_flow"].shape == (2, T - 1, 2, H, W)


def test_watershed_samples_on_cmp_grid(prepared) -> None:
    dataset = TrainingDataset(prepared, dense_field="cmp", flip_probability=0)
    sample = dataset.sample(0, 0, list(range(T - 1)), False)
    mask, flow = sample["watershed_mask"], sample["watershed_flow"]
    assert "dense_flow" not in sample
    assert mask.shape == flow.shape == (T - 1, 2, 384, 384) and mask.dtype == torch.bool and mask.sum() > 0
    assert flow.dtype == torch.float16 and not flow[~mask].any()
    assert not mask[0].any()  # frame 0 is the reference of candidate 0: no flow, nothing sampled
    torch.testing.assert_close(mask[:, 0], mask[:, 1])


def test_epochs_and_samples_per_clip(prepared) -> None:
    """Draws are a pure function of (seed, epoch, index): any process computes the same ones."""
    dataset = TrainingDataset(prepared, samples_per_clip=3, seed=5)
    assert len(dataset) == 3 and {dataset.choose(i)["clip"] for i in range(3)} == {0}
    epochs = []
    for epoch in (0, 1, 2):
        dataset.set_epoch(epoch)
        epochs.append([dataset.choose(i) for i in range(3)])
    other = TrainingDataset(prepared, samples_per_clip=3, seed=5)
    other.set_epoch(1)
    assert [other.choose(i) for i in range(3)] == epochs[1]
    assert epochs[0] != epochs[1] != epochs[2]


def test_train_checks_the_detector_before_any_model_loads(prepared, tmp_path) -> None:
    def config(**data) -> TrainConfig:
        return TrainConfig.from_dict({"data": {"root": str(prepared), "width": 128, "height": 192,
                                               "dense_field": "flow", **data}})

    with pytest.raises(UserError, match=r"--set data.detector=mediapipe") as error:
        open_dataset(config())
    assert "\n" not in str(error.value)
    assert len(open_dataset(config(detector="mediapipe"))) == 1
    with pytest.raises(UserError, match=r"--set data.dense_field=flow"):
        open_dataset(config(detector="mediapipe", dense_field="cmp"))
    mixed = tmp_path / "mixed"
    shutil.copytree(prepared, mixed)
    records = shard.read_manifest(mixed)
    shard.write_manifest(mixed, records + [dict(records[0], id="other", detector="dwpose")])
    with pytest.raises(UserError, match="mixes clips prepared with dwpose and mediapipe"):
        open_dataset(TrainConfig.from_dict({"data": {"root": str(mixed), "detector": "mediapipe",
                                                     "dense_field": "flow"}}))


def test_missing_dataset_or_embeddings_are_clear_errors(prepared, shared_data, tmp_path) -> None:
    with pytest.raises(UserError, match="dispose prepare"):
        TrainingDataset(tmp_path)
    prepare_dataset(shared_data / "musepose_dance.mp4", tmp_path / "plain",
                    PrepareSettings(width=W, height=H, max_frames=16, references=1, dift=False),
                    ModelFiles(device="cpu", detector="mediapipe"), progress=False)
    with pytest.raises(UserError, match="--no-dift"):
        TrainingDataset(tmp_path / "plain")
    sample = TrainingDataset(tmp_path / "plain", require_dift=False)[0]
    assert sample["point_embeddings"].shape == (K, 0)
