"""YOLOX person detection maths for DWPose's ``yolox_l.onnx`` (pre- and post-processing, no model).

Same numbers as the release (``mimicmotion/dwpose/onnxdet.py``):

* input: the frame scaled by ``r = min(640 / H, 640 / W)`` to ``(int(W r), int(H r))`` with OpenCV's bilinear
  resize, pasted at the top-left of a 640x640 canvas filled with 114, fed as float32 0-255 in the channel
  order it was given (the release passes RGB);
* output decoding: anchor-free grids of strides 8, 16, 32: ``xy = (out + cell) * stride``,
  ``wh = exp(out) * stride``; score = objectness x class probability;
* boxes with a person score > 0.1 go through NMS at IoU 0.45 (areas and overlaps with the ``+1`` pixel
  convention), and the survivors with a score > 0.3 are kept, best first.

Arithmetic is float32 where the release's is (its arrays are the model's float32 outputs).  The release
runs NMS for all 80 classes and then keeps class 0 (person) only; NMS is per class, so running
it for class 0 alone gives the same boxes in the same order.
"""

from __future__ import annotations

import cv2
import numpy as np

INPUT_SIZE = (640, 640)  # (height, width)
STRIDES = (8, 16, 32)
PAD_VALUE = 114
SCORE_THRESHOLD = 0.1
NMS_THRESHOLD = 0.45
PERSON_THRESHOLD = 0.3


def letterbox(image: np.ndarray, size: tuple[int, int] = INPUT_SIZE) -> tuple[np.ndarray, float]:
    """Detector input (3, H, W) float32 for a uint8 (h, w, 3) image, and the scale ``r`` applied to it."""
    ratio = min(size[0] / image.shape[0], size[1] / image.shape[1])
    new_w, new_h = int(image.shape[1] * ratio), int(image.shape[0] * ratio)
    padded = np.full((size[0], size[1], 3), PAD_VALUE, dtype=np.uint8)
    padded[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32), ratio


def anchor_grid(size: tuple[int, int] = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Cell offsets (A, 2) as (x, y) and strides (A, 1) of the YOLOX anchors, in output order."""
    cells, strides = [], []
    for stride in STRIDES:
        rows, cols = size[0] // stride, size[1] // stride
        xs, ys = np.meshgrid(np.arange(cols), np.arange(rows))
        cells.append(np.stack((xs, ys), axis=-1).reshape(-1, 2))
        strides.append(np.full((rows * cols, 1), stride))
    return np.concatenate(cells), np.concatenate(strides)


def decode_boxes(raw: np.ndarray, size: tuple[int, int] = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (A, 4) as x1, y1, x2, y2 in input pixels and person scores (A,) from one image's raw output
    (A, 85).

    float32 throughout, as the release (it writes the decoded values back into the model's float32 output).
    """
    cells, strides = anchor_grid(size)
    if raw.shape[0] != cells.shape[0]:
        raise ValueError(f"detector output has {raw.shape[0]} anchors; a {size[1]}x{size[0]} input has "
                         f"{cells.shape[0]}")
    raw = raw.astype(np.float32, copy=False)
    centre = ((raw[:, :2] + cells) * strides).astype(np.float32)
    half = (np.exp(raw[:, 2:4]) * strides).astype(np.float32) / np.float32(2.0)
    boxes = np.concatenate((centre - half, centre + half), axis=1)
    return boxes, raw[:, 4] * raw[:, 5]


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = NMS_THRESHOLD) -> list[int]:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first.

    Overlap is intersection over union with the ``+1`` pixel convention (a box from 0 to 9 is 10 px wide);
    a box is dropped when its overlap with a kept one exceeds ``threshold``.
    """
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = inter_w * inter_h
        overlap = inter / (areas[best] + areas[rest] - inter)
        order = rest[overlap <= threshold]
    return keep


def person_boxes(raw: np.ndarray, ratio: float, size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """Person boxes (K, 4) in the original image's pixels, best first, from one image's raw output."""
    boxes, scores = decode_boxes(raw, size)
    boxes = boxes / np.float32(ratio)
    candidates = scores > SCORE_THRESHOLD
    boxes, scores = boxes[candidates], scores[candidates]
    keep = [k for k in nms(boxes, scores) if scores[k] > PERSON_THRESHOLD]
    return boxes[keep].reshape(-1, 4).astype(np.float64)
