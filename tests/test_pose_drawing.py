"""Skeleton drawing: pixel-identical to the release's renderer rules, restated here on its dict layout."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from dispose.pose.drawing import HAND_EDGES, draw_pose, overlay
from dispose.pose.keypoints import NUM_HAND, Pose

# The release's renderer (mimicmotion/dwpose/util.py), rule by rule, on its own data layout:
# bodies.candidate (N*18, 2), bodies.subset (N, 18) with -1 for score <= 0.3, bodies.score (N, 18),
# hands (2N, 21, 2) = every left hand then every right hand, faces (N, 68, 2), and their scores.
_LIMBS_1BASED = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13],
                 [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18]]
_COLORS = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0], [0, 255, 0],
           [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255],
           [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]]


def _hsv(h: float) -> np.ndarray:
    i = int(h * 6.0)
    f = h * 6.0 - i
    return np.array([(1, f, 0), (1 - f, 1, 0), (0, 1, f), (0, 1 - f, 1), (f, 0, 1), (1, 0, 1 - f)][i % 6],
                    float)


def _release_draw(pose: dict, height: int, width: int) -> np.ndarray:
    short = min(height, width)
    ratio = 2160 / short if short != 2160 else 1
    canvas = np.zeros((int(height * ratio), int(width * ratio), 3), np.uint8)
    H, W = canvas.shape[:2]
    candidate, subset, score = pose["candidate"], pose["subset"], pose["score"]
    for i in range(17):
        for n in range(len(subset)):
            pair = np.array(_LIMBS_1BASED[i]) - 1
            index, conf = subset[n][pair], score[n][pair]
            if conf[0] < 0.3 or conf[1] < 0.3:
                continue
            xs, ys = candidate[index.astype(int), 0] * float(W), candidate[index.astype(int), 1] * float(H)
            length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
            polygon = cv2.ellipse2Poly((int(np.mean(xs)), int(np.mean(ys))), (int(length / 2), 4), int(angle),
                                       0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, [int(c * conf[0] * conf[1]) for c in _COLORS[i]])
    canvas = (canvas * 0.6).astype(np.uint8)
    for i in range(18):
        for n in range(len(subset)):
            index = int(subset[n][i])
            if index == -1:
                continue
            x, y = candidate[index][:2]
            cv2.circle(canvas, (int(x * W), int(y * H)), 4, [int(c * score[n][i]) for c in _COLORS[i]], -1)
    for peaks, scores in zip(pose["hands"], pose["hands_score"]):
        for e, (a, b) in enumerate(HAND_EDGES):
            x1, y1 = int(peaks[a][0] * W), int(peaks[a][1] * H)
            x2, y2 = int(peaks[b][0] * W), int(peaks[b][1] * H)
            strength = int(scores[a] * scores[b] * 255)
            if x1 > 0.01 and y1 > 0.01 and x2 > 0.01 and y2 > 0.01:
                cv2.line(canvas, (x1, y1), (x2, y2), _hsv(e / 20.0) * strength, thickness=2)
        for (x, y), s in zip(peaks, scores):
            x, y = int(x * W), int(y * H)
            if x > 0.01 and y > 0.01:
                cv2.circle(canvas, (x, y), 4, (0, 0, int(s * 255)), thickness=-1)
    for points, scores in zip(pose["faces"], pose["faces_score"]):
        for (x, y), s in zip(points, scores):
            x, y = int(x * W), int(y * H)
            if x > 0.01 and y > 0.01:
                level = int(s * 255)
                cv2.circle(canvas, (x, y), 3, (level, level, level), thickness=-1)
    return cv2.cvtColor(cv2.resize(canvas, (width, height)), cv2.COLOR_BGR2RGB)


def _as_release(people: list[Pose]) -> dict:
    n = len(people)
    candidate = np.concatenate([p.body for p in people]).astype(np.float64)
    score = np.stack([p.body_score for p in people]).astype(np.float64)
    subset = np.where(score > 0.3, np.arange(18 * n).reshape(n, 18), -1).astype(np.float64)
    hands = [p.hands[:NUM_HAND] for p in people] + [p.hands[NUM_HAND:] for p in people]
    hands_score = [p.hands_score[:NUM_HAND] for p in people] + [p.hands_score[NUM_HAND:] for p in people]
    return {"candidate": candidate, "subset": subset, "score": score, "hands": np.asarray(hands, np.float64),
            "hands_score": np.asarray(hands_score, np.float64), "faces": np.stack([p.face for p in people]),
            "faces_score": np.stack([p.face_score for p in people])}


def _random_pose(rng: np.random.Generator, centre=(0.5, 0.5), spread=0.35) -> Pose:
    def points(k: int) -> np.ndarray:
        return (np.asarray(centre) + rng.uniform(-spread, spread, (k, 2))).astype(np.float32)

    def scores(k: int, low: float) -> np.ndarray:
        return rng.uniform(low, 1.0, k).astype(np.float32)

    return Pose.from_scores(points(18), scores(18, 0.1), points(2 * NUM_HAND), scores(2 * NUM_HAND, 0.01),
                            points(68), scores(68, 0.01))


@pytest.mark.parametrize(("width", "height", "people"), [(576, 1024, 1), (1024, 576, 2), (300, 300, 1),
                                                         (2160, 2400, 1), (97, 131, 3)])
def test_matches_the_release_renderer(width, height, people):
    rng = np.random.default_rng(width + people)
    poses = [_random_pose(rng, centre=(rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7))) for _ in range(people)]
    ours = draw_pose(poses if people > 1 else poses[0], width, height)
    expected = _release_draw(_as_release(poses), height, width)
    assert ours.shape == (height, width, 3) and ours.dtype == np.uint8
    assert np.array_equal(ours, expected)
    assert (ours > 0).mean() > 0.01  # something was drawn


def test_colours_end_up_channel_swapped_like_the_release():
    # Only the neck -> right shoulder limb (OpenPose colour 0, listed as (255, 0, 0)) is visible.
    body = np.zeros((18, 2), np.float32)
    body[1], body[2] = (0.3, 0.5), (0.7, 0.5)
    score = np.zeros(18, np.float32)
    score[[1, 2]] = 1.0
    image = draw_pose(Pose.from_scores(body, score), 400, 400)
    middle = image[200, 200]
    assert middle[2] > 100 and middle[0] == 0  # drawn into BGR, returned as RGB: blue
    assert (image[:150] == 0).all()
    # The limb is dimmed to 60 %, the joints are not.
    assert middle[2] <= int(255 * 0.6) + 1
    assert image[200, 120].max() > 200


def test_missing_hand_and_face_points_are_not_drawn():
    rng = np.random.default_rng(3)
    pose = _random_pose(rng)
    bare = Pose(body=pose.body, body_score=pose.body_score, body_visible=pose.body_visible)  # zeros elsewhere
    moved = bare.transformed((0.9, 0.9), (0.05, 0.05))  # not-located points stay at (0, 0)
    expected = _release_draw(_as_release([Pose(body=moved.body, body_score=moved.body_score,
                                                body_visible=moved.body_visible)]), 256, 256)
    assert np.array_equal(draw_pose(moved, 256, 256), expected)
    # Located points with score 0 (no detection) are skipped too, where the release paints black discs.
    zero = Pose(body=pose.body, body_score=pose.body_score, body_visible=pose.body_visible,
                hands=pose.hands, hands_score=np.zeros(2 * NUM_HAND), face=pose.face, face_score=np.zeros(68))
    assert np.array_equal(draw_pose(zero, 256, 256), draw_pose(bare, 256, 256))


def test_invisible_body_points_are_not_drawn():
    pose = _random_pose(np.random.default_rng(4))
    hidden = Pose(body=pose.body, body_score=pose.body_score, body_visible=np.zeros(18, bool))
    assert (draw_pose(hidden, 128, 128) == 0).all()


def test_overlay_keeps_the_skeleton_bright():
    frame = np.full((64, 64, 3), 200, np.uint8)
    skeleton = np.zeros((64, 64, 3), np.uint8)
    skeleton[10:20, 10:20] = (0, 0, 255)
    out = overlay(frame, skeleton)
    assert (out[0, 0] == 100).all() and (out[15, 15] == (100, 100, 255)).all()
