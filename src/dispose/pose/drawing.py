"""OpenPose-style skeleton images, drawn exactly as the release's renderer draws them.

These pictures are what PoseNet (the animation model's pose encoder) consumes, so they follow MimicMotion's
``mimicmotion/dwpose/util.py::draw_pose`` (DisPose ships the same file) rule for rule:

* the skeleton is drawn on a black canvas scaled so its shorter side is 2160 px, then shrunk to the
  requested size with OpenCV's bilinear ``resize`` (no area filter);
* body: 17 limbs (the ear-shoulder pairs of OpenPose's 19 are not drawn) as filled ellipses of half-width 4
  px (canvas pixels), colour = OpenPose colour x (score_a x score_b); the canvas is then dimmed to 60 %
  (``uint8(value * 0.6)``) and the 18 joints drawn as radius-4 discs with colour x score;
* hands (every person's left hand, then every right hand): 20 bones as 2 px lines in HSV rainbow colours x
  ``int(score_a x score_b x 255)`` and radius-4 joints ``(0, 0, int(score x 255))``; face: radius-3 grey
  dots ``int(score x 255)``.  Hand and face points are drawn whatever their score (dim when unsure), and
  only when both pixel coordinates are >= 1;
* colours are written into an array that OpenCV treats as BGR and the result is converted BGR -> RGB at
  the end, so in the returned RGB image the first OpenPose colour, listed as (255, 0, 0), is blue.

Differences from the release:

* body limbs and joints are drawn when the keypoints are *visible* (``Pose.body_visible``).  The release
  draws a limb when both scores are >= 0.3 and a joint when its score is > 0.3 (compared in float64); for
  DWPose's float32 scores, which never equal 0.3 exactly, that is the same as visible = score > 0.3.  Other
  sources (MediaPipe, JSON) bring their own visibility;
* hand and face points with a score <= 0 are skipped (they carry no detection: MediaPipe and OpenPose-JSON
  sources mark missing points that way); the release would paint them as black discs;
* coordinates are float32 (the container's precision) where the release holds float64: a canvas
  coordinate can land one canvas pixel (under half an output pixel) away in rare truncation ties.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import cv2
import numpy as np

from dispose.pose.keypoints import NUM_HAND, Pose

#: Shorter side of the drawing canvas (the release's ``ref_w``).
CANVAS_SIDE = 2160
#: The 17 drawn limbs, as pairs of OpenPose body indices.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
#: OpenPose colours, one per limb / joint (in the canvas's BGR channel order, see module docstring).
COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
#: The 20 hand bones (wrist = 0, then four points per finger, thumb first).
HAND_EDGES: tuple[tuple[int, int], ...] = tuple(
    pair for finger in range(5)
    for pair in ((0 if k == 0 else 4 * finger + k, 4 * finger + k + 1) for k in range(4))
)
HAND_COLORS: tuple[tuple[float, float, float], ...] = tuple(
    colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0) for i in range(len(HAND_EDGES)))
STICK_WIDTH = 4
_EPS = 0.01
_DIM = np.array([int(v * 0.6) for v in range(256)], dtype=np.uint8)


def draw_pose(pose: Pose | Sequence[Pose], width: int, height: int) -> np.ndarray:
    """Skeleton image of one pose (or several people) as uint8 RGB (height, width, 3)."""
    people = [pose] if isinstance(pose, Pose) else list(pose)
    short = min(height, width)
    scale = CANVAS_SIDE / short if short != CANVAS_SIDE else 1
    canvas = np.zeros((int(height * scale), int(width * scale), 3), dtype=np.uint8)
    _draw_body(canvas, people)
    for side in (0, 1):
        for person in people:
            hand = slice(side * NUM_HAND, (side + 1) * NUM_HAND)
            _draw_hand(canvas, person.hands[hand], person.hands_score[hand])
    for person in people:
        _draw_face(canvas, person.face, person.face_score)
    small = cv2.resize(canvas, (width, height))
    return np.ascontiguousarray(small[..., ::-1])


def overlay(frame: np.ndarray, skeleton: np.ndarray) -> np.ndarray:
    """The skeleton over a half-dimmed ``frame`` (both uint8 RGB of the same size), for people to look at."""
    return cv2.addWeighted(frame, 0.5, skeleton, 1.0, 0.0)


def _scaled(value: float, alpha: float) -> list[int]:
    return [int(c * alpha) for c in value]


def _draw_body(canvas: np.ndarray, people: list[Pose]) -> None:
    height, width = canvas.shape[:2]
    for limb, (a, b) in enumerate(LIMBS):
        for person in people:
            if not (person.body_visible[a] and person.body_visible[b]):
                continue
            xs = (float(person.body[a, 0]) * width, float(person.body[b, 0]) * width)
            ys = (float(person.body[a, 1]) * height, float(person.body[b, 1]) * height)
            length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
            centre = (int((xs[0] + xs[1]) / 2), int((ys[0] + ys[1]) / 2))
            polygon = cv2.ellipse2Poly(centre, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
            alpha = float(person.body_score[a]) * float(person.body_score[b])
            cv2.fillConvexPoly(canvas, polygon, _scaled(COLORS[limb], alpha))
    cv2.LUT(canvas, _DIM, dst=canvas)
    for joint in range(len(COLORS)):
        for person in people:
            if not person.body_visible[joint]:
                continue
            x, y = person.body[joint]
            centre = (int(float(x) * width), int(float(y) * height))
            cv2.circle(canvas, centre, 4, _scaled(COLORS[joint], float(person.body_score[joint])),
                       thickness=-1)


def _pixel(point: np.ndarray, width: int, height: int) -> tuple[int, int]:
    return int(float(point[0]) * width), int(float(point[1]) * height)


def _draw_hand(canvas: np.ndarray, points: np.ndarray, scores: np.ndarray) -> None:
    height, width = canvas.shape[:2]
    pixels = [_pixel(p, width, height) for p in points]
    for edge, (a, b) in enumerate(HAND_EDGES):
        if scores[a] <= 0 or scores[b] <= 0 or min(*pixels[a], *pixels[b]) <= _EPS:
            continue
        strength = int(float(scores[a]) * float(scores[b]) * 255)
        cv2.line(canvas, pixels[a], pixels[b], [c * strength for c in HAND_COLORS[edge]], thickness=2)
    for (x, y), score in zip(pixels, scores):
        if score > 0 and x > _EPS and y > _EPS:
            cv2.circle(canvas, (x, y), 4, (0, 0, int(float(score) * 255)), thickness=-1)


def _draw_face(canvas: np.ndarray, points: np.ndarray, scores: np.ndarray) -> None:
    height, width = canvas.shape[:2]
    for point, score in zip(points, scores):
        x, y = _pixel(point, width, height)
        if score > 0 and x > _EPS and y > _EPS:
            level = int(float(score) * 255)
            cv2.circle(canvas, (x, y), 3, (level, level, level), thickness=-1)
