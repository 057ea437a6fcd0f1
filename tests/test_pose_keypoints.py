"""The pose container: not-located points, float64 transforms, and the dispose-poses/1 format."""

from __future__ import annotations

import json

import numpy as np

from dispose.pose.keypoints import Pose, PoseSequence, located


def test_located_and_transformed():
    body = np.zeros((18, 2))
    body[0] = (0.25, 0.5)  # visible
    body[1] = (0.1, 0.2)  # invisible but estimated (as DWPose reports low-score points)
    score = np.zeros(18)
    score[0] = 0.9
    pose = Pose.from_scores(body, score)
    assert located(pose.body, pose.body_visible).tolist() == [True, True] + [False] * 16
    moved = pose.transformed((2.0, 0.5), (0.1, 0.3))
    np.testing.assert_allclose(moved.body[:2], [[0.6, 0.55], [0.3, 0.4]], rtol=1e-6)
    assert (moved.body[2:] == 0).all() and (moved.hands == 0).all() and (moved.face == 0).all()
    assert moved.body.dtype == np.float32
    # float64 arithmetic: a value the float32 product would round differently stays exact to float32.
    x = np.float32(0.123456789)
    pose.body[0, 0] = x
    expected = np.float32(float(x) * 1.1 + 0.01)
    assert pose.transformed((1.1, 1.0), (0.01, 0.0)).body[0, 0] == expected


def test_sequence_json_format_is_unchanged(tmp_path):
    pose = Pose.from_scores(np.random.default_rng(0).random((18, 2)), np.full(18, 0.5))
    PoseSequence([pose, pose], 576, 1024, 12.0).save(tmp_path / "poses.json")
    data = json.loads((tmp_path / "poses.json").read_text())
    assert (data["format"] == "dispose-poses/1"
            and (data["width"], data["height"], data["fps"]) == (576, 1024, 12.0))
    assert set(data["frames"][0]) == {"body", "body_score", "body_visible", "hands", "hands_score",
                                      "hands_visible", "face", "face_score", "face_visible"}
    # A minimal record (body only) still loads: hands and face default to missing.
    data["frames"] = [{k: data["frames"][0][k] for k in ("body", "body_score", "body_visible")}]
    loaded = PoseSequence.from_json(data)
    np.testing.assert_array_equal(loaded[0].body, pose.body)
    assert not loaded[0].hands_visible.any()
