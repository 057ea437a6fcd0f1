"""``data.dense_field=cmp``: the training F_d is CMP's field of the stored watershed samples (paper App. A),
computed by inference's CMP call, and it reaches the ControlNet as a given flow does.

A clip prepared at 384x384 (CMP's grid size), so that a stored sample at pixel (c, r) lands on grid cell
(c, r), or (383 - c, r) when flipped.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.numpy import load_file

from dispose.bases import training_base
from dispose.bases.training import model_inputs
from dispose.guidance.cmp import load_cmp
from dispose.guidance.motion_fields import cmp_motion_field
from dispose.guidance.tiny import DIFT_CHANNELS
from dispose.training import shard
from dispose.training.config import TrainConfig
from dispose.training.dataset import TrainingDataset
from dispose.training.prepare import ModelFiles, PrepareSettings, prepare_dataset

SIZE, T = 384, 4
WINDOW = [2, 3, 4]  # frames after the reference candidate (frame 0)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prepared(shared_data, tiny_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset")
    records = prepare_dataset(shared_data / "musepose_dance.mp4", out,
                              PrepareSettings(width=SIZE, height=SIZE, max_frames=6, min_frames=4,
                                              references=1),
                              ModelFiles(sd15=tiny_weights / "stable-diffusion-v1-5", device="cpu",
                                         detector="mediapipe"), progress=False)
    assert [r["status"] for r in records] == ["ok"] and records[0]["references"] == [0]
    return out


@pytest.fixture(scope="module")
def cmp(tiny_weights):
    return load_cmp(tiny_weights / "cmp" / "ckpt_iter_42000.pth.tar")


def test_cmp_reads_exactly_the_stored_watershed_samples(prepared, cmp, monkeypatch) -> None:
    stored = load_file(shard.clip_dir(prepared, "musepose_dance") / "flows.safetensors")
    offsets, points = stored["watershed_offsets"], stored["watershed_points"]
    vectors = stored["watershed_vectors"]
    seen = []
    predict = cmp.predict_flow
    monkeypatch.setattr(cmp, "predict_flow",
                        lambda features, inputs: (seen.append(inputs), predict(features, inputs))[1])
    dataset = TrainingDataset(prepared, num_frames=T, dense_field="cmp")
    for flip in (False, True):
        seen.clear()
        batch = torch.utils.data.default_collate([dataset.sample(0, 0, WINDOW, flip)])
        model_inputs(batch, cmp)
        inputs = torch.cat(seen)  # (frames, [sparse x, sparse y, mask, mask], 384, 384)
        assert inputs.shape == (len(WINDOW), 4, SIZE, SIZE)
        for slot, frame in enumerate(WINDOW):
            start, stop = offsets[frame], offsets[frame + 1]
            assert stop > start
            cols, rows = (torch.from_numpy(points[start:stop].astype("int64")).T)
            expected = torch.from_numpy(vectors[start:stop]).float()
            if flip:
                cols = SIZE - 1 - cols
                expected[:, 0] = -expected[:, 0]
            where = torch.zeros(SIZE, SIZE, dtype=torch.bool)
            where[rows, cols] = True
            assert torch.equal(inputs[slot, 2] != 0, where) and torch.equal(inputs[slot, 3] != 0, where)
            assert torch.equal(inputs[slot, :2, rows, cols].T, expected)
            assert not inputs[slot, :2][:, ~where].any()


def test_cmp_field_reaches_the_controlnet_as_a_given_flow(prepared, tiny_weights, cmp) -> None:
    config = TrainConfig.from_dict({"weights": {"dir": str(tiny_weights), "point_channels": DIFT_CHANNELS},
                                    "data": {"num_frames": T, "width": SIZE, "height": SIZE,
                                             "dense_field": "cmp"},
                                    "train": {"mixed_precision": "no"}})
    model = training_base("mimicmotion").build(config)
    assert model.cmp is not None
    model.eval()
    dataset = TrainingDataset(prepared, num_frames=T, dense_field="cmp", flip_probability=0)
    sample = dataset.sample(0, 0, WINDOW, False)
    batch = torch.utils.data.default_collate([sample])
    # F_d as inference computes it from a P_d on CMP's grid (one frame per call on the CPU, as the guidance
    # stage does)
    field = cmp_motion_field(cmp, sample["pixels"][0].permute(1, 2, 0).numpy(),
                             sample["watershed_flow"].float(), sample["watershed_mask"].float(), chunk_size=1)
    given = {key: value for key, value in batch.items() if not key.startswith("watershed_")}
    given["dense_flow"] = torch.from_numpy(field)[None]
    draw = model.draw(batch, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(batch, draw), model(given, draw))
