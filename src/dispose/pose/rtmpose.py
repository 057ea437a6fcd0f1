"""Top-down whole-body keypoint maths for DWPose's ``dw-ll_ucoco_384.onnx`` (an RTMPose-style SimCC model).

Same numbers as the release (``mimicmotion/dwpose/onnxpose.py``):

* each person box ``(x1, y1, x2, y2)`` becomes a centre and a size enlarged 1.25x, widened or heightened
  to the model's aspect ratio (w / h = 288 / 384);
* that window is cut out with an affine warp (OpenCV bilinear, black outside the image) to the model's
  input size and normalised with ImageNet's mean (123.675, 116.28, 103.53) and std (58.395, 57.12, 57.375)
  in the channel order given (the release passes RGB);
* SimCC decoding: the keypoint is the arg-max bin along x and along y divided by the split ratio 2; its
  score is the smaller of the two maxima; a keypoint whose score is <= 0 gets location -1;
* locations go back to image pixels by ``p / input_size * window + centre - window / 2``.

The affine matrix is built, as in the release, by OpenCV's ``getAffineTransform`` from three float32 point
pairs (centre, a point above it, and that one turned 90 degrees), so the sampled pixels match.
"""

from __future__ import annotations

import cv2
import numpy as np

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])
BOX_PADDING = 1.25
SIMCC_SPLIT_RATIO = 2.0


def box_center_scale(box: np.ndarray, padding: float = BOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Centre (x, y) and padded size (w, h) of an ``(x1, y1, x2, y2)`` box."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([x1 + x2, y1 + y2]) * 0.5, np.array([x2 - x1, y2 - y1]) * padding


def fix_aspect_ratio(scale: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """Grow the window's width or height so that width / height equals ``aspect_ratio``."""
    width, height = scale
    if width > height * aspect_ratio:
        return np.array([width, width / aspect_ratio])
    return np.array([height * aspect_ratio, height])


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    direction = a - b
    return b + np.array([-direction[1], direction[0]])


def warp_matrix(center: np.ndarray, scale: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """2x3 affine matrix taking window ``center`` +- ``scale / 2`` onto an ``output_size = (w, h)`` image."""
    out_w, out_h = output_size
    src = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + np.array([0.0, scale[0] * -0.5])
    src[2] = _third_point(src[0], src[1])
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0] = [out_w * 0.5, out_h * 0.5]
    dst[1] = np.array([out_w * 0.5, out_h * 0.5]) + np.array([0.0, out_w * -0.5])
    dst[2] = _third_point(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst)


def crop_person(image: np.ndarray, box: np.ndarray,
                input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model input (3, h, w) float32 for one person box, with the window's centre and size (for decoding).

    ``input_size`` is ``(w, h)`` of the model input.
    """
    width, height = input_size
    center, scale = box_center_scale(box)
    scale = fix_aspect_ratio(scale, width / height)
    crop = cv2.warpAffine(image, warp_matrix(center, scale, input_size), (int(width), int(height)),
                          flags=cv2.INTER_LINEAR)
    normalised = (crop - MEAN) / STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32), center, scale


def simcc_maximum(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arg-max bins (N, K, 2) as float32 (x, y) and scores (N, K) of SimCC outputs (N, K, Wx), (N, K, Wy).

    The score is the smaller of the two axis maxima; keypoints whose score is <= 0 get location -1.
    """
    n, k, _ = simcc_x.shape
    flat_x, flat_y = simcc_x.reshape(n * k, -1), simcc_y.reshape(n * k, -1)
    locations = np.stack((flat_x.argmax(axis=1), flat_y.argmax(axis=1)), axis=-1).astype(np.float32)
    scores = np.minimum(flat_x.max(axis=1), flat_y.max(axis=1))
    locations[scores <= 0.0] = -1
    return locations.reshape(n, k, 2), scores.reshape(n, k)


def decode_keypoints(simcc_x: np.ndarray, simcc_y: np.ndarray, centers: np.ndarray, scales: np.ndarray,
                     input_size: tuple[int, int], split_ratio: float = SIMCC_SPLIT_RATIO
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (N, K, 2) in image pixels (float64) and scores (N, K) for N windows."""
    locations, scores = simcc_maximum(simcc_x, simcc_y)
    locations /= np.float32(split_ratio)
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 1, 2)
    scales = np.asarray(scales, dtype=np.float64).reshape(-1, 1, 2)
    keypoints = locations / np.asarray(input_size, dtype=np.float64) * scales + centers - scales / 2
    return keypoints, scores
