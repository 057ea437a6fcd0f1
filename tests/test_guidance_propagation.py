"""The weight-free dense field (dense="propagate") on a synthetic person: the properties it promises."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dispose.errors import UserError
from dispose.guidance.propagation import FlowPropagator

WIDTH, HEIGHT = 288, 512
BACKGROUND, SKIN, SHIRT, SLEEVE, TROUSERS = ((60, 90, 140), (240, 200, 170), (220, 180, 60), (200, 60, 60),
                                             (40, 160, 90))
KEYPOINTS = np.array([[144, 90], [144, 140], [104, 145], [84, 215], [74, 285], [184, 145], [204, 215],
                      [214, 285], [119, 280], [114, 370], [109, 460], [169, 280], [174, 370], [179, 460],
                      [136, 82], [152, 82], [128, 88], [160, 88]], float)
LEFT_ARM = [5, 6, 7]  # the person's left arm: shoulder, elbow, wrist (on the image's right)


def draw_person(image: np.ndarray,
                colours: dict[str, tuple[int, int, int]] | None = None) -> dict[str, np.ndarray]:
    """Draw the person on ``image`` (in place); return the mask of each part."""
    colours = {"head": SKIN, "torso": SHIRT, "arms": SLEEVE, "legs": TROUSERS, **(colours or {})}
    p = KEYPOINTS.astype(int)
    parts = {}
    for name in ("torso", "head", "arms", "legs"):
        mask = np.zeros(image.shape[:2], np.uint8)
        if name == "torso":  # much wider than the skeleton: the edge must come from the image
            cv2.rectangle(mask, (94, 140), (194, 285), 1, -1)
        elif name == "head":
            cv2.circle(mask, tuple(p[0]), 38, 1, -1)
            cv2.rectangle(mask, (132, 110), (156, 142), 1, -1)  # neck
        else:
            chains = ([(2, 3), (3, 4), (5, 6), (6, 7)] if name == "arms"
                      else [(8, 9), (9, 10), (11, 12), (12, 13)])
            for a, b in chains:
                cv2.line(mask, tuple(p[a]), tuple(p[b]), 1, 22 if name == "arms" else 28)
        image[mask.astype(bool)] = colours[name]
        parts[name] = mask.astype(bool)
    for name in ("torso", "head", "arms"):  # later parts cover earlier ones
        for later in ("head", "arms", "legs")[("torso", "head", "arms").index(name):]:
            parts[name] &= ~parts[later]
    return parts


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, dict[str, np.ndarray], FlowPropagator]:
    rng = np.random.default_rng(0)
    image = np.clip(np.array(BACKGROUND) + rng.normal(0, 6, (HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)
    parts = draw_person(image)
    return image, parts, FlowPropagator(image, KEYPOINTS, np.ones(18, bool))


def _erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)).astype(bool)


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)).astype(bool)


def test_region_follows_image_edges_and_background_is_zero(scene) -> None:
    _, parts, propagator = scene
    body = np.logical_or.reduce(list(parts.values()))
    alpha = propagator.foreground
    assert alpha.shape == (HEIGHT, WIDTH) and alpha.dtype == np.float32
    assert alpha[_erode(body, 3)].min() == 1.0
    assert alpha[~_dilate(body, 3)].max() == 0.0
    # the torso is 25 px wider on each side than its skeleton at the hips, and the head 8 px larger than
    # its seed: their edges are found at the image's edges
    assert alpha[275, 97] == 1.0 and alpha[275, 91] == 0.0
    assert alpha[56, 144] == 1.0 and alpha[48, 144] == 0.0


def test_global_translation_moves_the_person_exactly(scene) -> None:
    _, parts, propagator = scene
    body = np.logical_or.reduce(list(parts.values()))
    vectors = np.tile([[7.5, -3.25]], (18, 1))
    flow = propagator(vectors, np.ones(18, bool))
    assert flow.shape == (2, HEIGHT, WIDTH) and flow.dtype == np.float32
    inside = _erode(body, 3)
    np.testing.assert_allclose(flow[0][inside], 7.5, rtol=1e-5)
    np.testing.assert_allclose(flow[1][inside], -3.25, rtol=1e-5)
    assert np.abs(flow[:, ~_dilate(body, 3)]).max() == 0.0


def test_smooth_inside_and_separated_at_edges(scene) -> None:
    _, parts, propagator = scene
    vectors = np.zeros((18, 2))
    vectors[LEFT_ARM[1:]] = [30.0, 0.0]  # elbow and wrist swing out, the rest stays
    flow = propagator(vectors, np.ones(18, bool))[0]
    # smooth: in every uniformly coloured part, neighbouring pixels differ by a small fraction of the motion
    for name, mask in parts.items():
        inner = _erode(mask, 2)
        dx = np.abs(np.diff(flow, axis=1))[inner[:, 1:] & inner[:, :-1]]
        dy = np.abs(np.diff(flow, axis=0))[inner[1:] & inner[:-1]]
        assert max(dx.max(), dy.max()) < 0.05 * 30.0, name
    # the moving forearm moves, the legs and the head (other parts, behind image edges) do not
    forearm = _erode(parts["arms"], 2) & (np.arange(HEIGHT)[:, None] > 230) & (np.arange(WIDTH)[None] > 144)
    assert flow[forearm].mean() > 0.8 * 30.0
    for name in ("legs", "head"):
        assert np.abs(flow[parts[name]]).max() < 0.1 * 30.0, name


def test_missing_keypoints_are_ignored(scene) -> None:
    _, _, propagator = scene
    rng = np.random.default_rng(1)
    vectors = rng.normal(0, 5, (3, 18, 2))
    given = np.ones((3, 18), bool)
    given[1, [3, 4, 9]] = False
    given[2] = False
    junk = vectors.copy()
    junk[1, [3, 4, 9]] = np.nan
    out = propagator.propagate(junk, given)
    assert out.shape == (3, 2, HEIGHT, WIDTH)
    np.testing.assert_array_equal(out[0], propagator(vectors[0], given[0]))
    clean = vectors[1].copy()
    clean[[3, 4, 9]] = 1e6  # never read
    np.testing.assert_array_equal(out[1], propagator(clean, given[1]))
    np.testing.assert_array_equal(out[2], 0.0)  # nothing known in that frame


def test_reference_keypoints_missing_and_bad_input() -> None:
    image = np.full((64, 48, 3), 128, np.uint8)
    with pytest.raises(UserError, match="no person found in the reference"):
        FlowPropagator(image, KEYPOINTS / 6, np.zeros(18, bool))
    with pytest.raises(ValueError, match="uint8"):
        FlowPropagator(image.astype(np.float32), KEYPOINTS / 6, np.ones(18, bool))
    visible = np.zeros(18, bool)
    visible[[1, 2]] = True
    propagator = FlowPropagator(image, KEYPOINTS / 6, visible)  # a flat image: no colour model to fit
    flow = propagator(np.ones((18, 2)), np.ones(18, bool))
    assert np.isfinite(flow).all()
    with pytest.raises(ValueError, match="NaN or inf"):
        propagator(np.full((18, 2), np.inf), visible)
    with pytest.raises(ValueError, match="expected vectors"):
        propagator.propagate(np.zeros((2, 17, 2)), np.ones((2, 17), bool))
