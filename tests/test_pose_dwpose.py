"""DWPose wrapper: decoding maths against hand-computed values, and the whole detector on tiny ONNX models
with the release models' signatures (built here with onnx.helper; the real weights are not needed)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dispose.errors import UserError
from dispose.pose.detector_factory import load_detector
from dispose.pose.dwpose import BODY_FROM_COCO, DWPose, wholebody_pose
from dispose.pose.rtmpose import (
    box_center_scale,
    crop_person,
    decode_keypoints,
    fix_aspect_ratio,
    simcc_maximum,
    warp_matrix,
)
from dispose.pose.yolox import anchor_grid, decode_boxes, letterbox, nms, person_boxes

# ----------------------------------------------------------------------------------------------- maths


def test_nms_hand_computed():
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29], [0, 0, 9, 4]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # IoU with the +1 convention: boxes 0/1 overlap 9x9 = 81 of 100 + 100 - 81 -> 0.68; box 3 (10x5) lies
    # inside box 0: 50 / 100 = 0.5.
    assert nms(boxes, scores, 0.45) == [3, 1, 2]  # 3 suppresses 0 (0.5); 1 vs 3: 45 / 105 = 0.43 kept
    assert nms(boxes, scores, 0.7) == [3, 0, 1, 2]  # no overlap reaches 0.7
    assert nms(boxes, scores, 0.5) == [3, 0, 2]  # an overlap equal to the threshold is kept; 0 then drops 1

    assert nms(boxes[:0], scores[:0]) == []


def test_anchor_grid_and_box_decoding():
    cells, strides = anchor_grid()
    assert cells.shape == (8400, 2) and strides.shape == (8400, 1)
    assert tuple(cells[81]) == (1, 1) and strides[81, 0] == 8  # row-major cells, stride 8 first
    assert tuple(cells[6400]) == (0, 0) and strides[6400, 0] == 16
    raw = np.zeros((8400, 85), np.float32)
    raw[81, :6] = (0.5, 0.25, math.log(3), math.log(2), 0.8, 0.5)
    boxes, scores = decode_boxes(raw)
    # centre ((1 + 0.5) * 8, (1 + 0.25) * 8) = (12, 10); size (3 * 8, 2 * 8) = (24, 16).
    np.testing.assert_allclose(boxes[81], [0, 2, 24, 18], atol=1e-5)
    assert scores[81] == pytest.approx(0.4)


def test_letterbox():
    image = np.full((720, 1280, 3), 200, np.uint8)
    tensor, ratio = letterbox(image)
    assert ratio == 0.5 and tensor.shape == (3, 640, 640) and tensor.dtype == np.float32
    assert (tensor[:, :360] == 200).all() and (tensor[:, 360:] == 114).all()


def test_box_window_and_aspect():
    center, scale = box_center_scale(np.array([10.0, 20.0, 110.0, 420.0]))
    np.testing.assert_allclose(center, [60, 220])
    np.testing.assert_allclose(scale, [125, 500])
    np.testing.assert_allclose(fix_aspect_ratio(scale, 0.75), [375, 500])  # too narrow: widened
    np.testing.assert_allclose(fix_aspect_ratio(np.array([600.0, 500.0]), 0.75), [600, 800])  # heightened


def test_warp_matrix_maps_the_window_onto_the_input():
    center, scale = np.array([300.5, 200.25]), np.array([375.0, 500.0])
    matrix = warp_matrix(center, scale, (288, 384))
    s = 288 / 375
    np.testing.assert_allclose(matrix, [[s, 0, 144 - s * 300.5], [0, s, 192 - s * 200.25]], atol=1e-4)
    corners = cv2.transform(np.array([[center - scale / 2, center + scale / 2]], np.float32), matrix)[0]
    np.testing.assert_allclose(corners, [[0, 0], [288, 384]], atol=1e-3)


def test_simcc_maximum():
    simcc_x = np.full((1, 3, 8), -1.0, np.float32)
    simcc_y = np.full((1, 3, 6), -1.0, np.float32)
    simcc_x[0, 0, 5], simcc_y[0, 0, 2] = 0.9, 0.6  # score = min(0.9, 0.6)
    simcc_x[0, 1, 1], simcc_y[0, 1, 4] = 0.3, 0.7
    locations, scores = simcc_maximum(simcc_x, simcc_y)
    np.testing.assert_allclose(locations[0, :2], [[5, 2], [1, 4]])
    np.testing.assert_allclose(scores[0], [0.6, 0.3, -1.0])
    np.testing.assert_allclose(locations[0, 2], [-1, -1])  # score <= 0: location -1


def test_crop_and_decode_round_trip():
    image = np.zeros((480, 640, 3), np.uint8)
    target = np.array([301.0, 170.0])
    image[168:173, 299:304] = 255  # a 5x5 spot centred on the target pixel
    crop, center, scale = crop_person(image, np.array([236.0, 64.0, 436.0, 464.0]), (288, 384))
    assert crop.shape == (3, 384, 288) and crop.dtype == np.float32
    # The crop is normalised with ImageNet statistics: black -> -mean / std.
    assert crop[0].min() == pytest.approx(-123.675 / 58.395, rel=1e-5)
    rows, cols = np.nonzero(crop[0] > 0)
    # A SimCC model would put the maximum at twice the crop location; decoding must return the target.
    simcc_x = np.zeros((1, 1, 576), np.float32)
    simcc_y = np.zeros((1, 1, 768), np.float32)
    simcc_x[0, 0, round(cols.mean() * 2)] = 1
    simcc_y[0, 0, round(rows.mean() * 2)] = 1
    keypoints, scores = decode_keypoints(simcc_x, simcc_y, center[None], scale[None], (288, 384))
    pixel = scale[0] / 288  # one crop pixel in image pixels
    np.testing.assert_allclose(keypoints[0, 0], target, atol=pixel)
    assert keypoints.dtype == np.float64 and scores[0, 0] == 1


def test_wholebody_layout():
    keypoints = np.stack([np.arange(133) * 2.0, np.arange(133) * 3.0], axis=1)
    scores = np.full(133, 0.9, np.float32)
    scores[5] = 0.2  # left shoulder unsure -> neck score 0
    pose = wholebody_pose(keypoints, scores, 200, 300)
    for index, coco in enumerate(BODY_FROM_COCO):
        if coco is not None:
            np.testing.assert_allclose(pose.body[index], [coco * 2 / 200, coco * 3 / 300], rtol=1e-6)
    np.testing.assert_allclose(pose.body[1], [5.5 * 2 / 200, 5.5 * 3 / 300], rtol=1e-6)
    assert pose.body_score[1] == 0 and not pose.body_visible[1] and not pose.body_visible[5]
    assert pose.body_visible[2]  # right shoulder = COCO 6
    np.testing.assert_allclose(pose.face[0], [23 * 2 / 200, 23 * 3 / 300], rtol=1e-6)
    np.testing.assert_allclose(pose.hands[0], [91 * 2 / 200, 91 * 3 / 300], rtol=1e-6)  # left hand first
    np.testing.assert_allclose(pose.hands[21], [112 * 2 / 200, 112 * 3 / 300], rtol=1e-6)
    scores[5] = 0.9
    assert wholebody_pose(keypoints, scores, 200, 300).body_score[1] == 1


# ------------------------------------------------------------------------------- tiny ONNX models

# Three YOLOX anchors whose objectness grows with the image's mean grey level (x 1/128): A (stride 32,
# cell 10, 8) -> box (236, 64, 436, 464); B (stride 16, cell 21, 16), inside A, suppressed by NMS;
# C (stride 8, cell 10, 30) -> box (44, 84, 124, 404), a second person.
_ANCHORS = {8170: ((0.5, 0.25, math.log(6.25), math.log(12.5)), 1.0),
            7061: ((0.0, 0.5, math.log(12), math.log(24)), 0.9),
            2410: ((0.5, 0.5, math.log(10), math.log(40)), 0.6)}
_BOX_A, _BOX_C = (236, 64, 436, 464), (44, 84, 124, 404)


def _save(graph, path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _brightness(input_name: str) -> list:
    return [helper.make_node("ReduceMean", [input_name], ["mean"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Reshape", ["mean", "shape"], ["level"])]


def _detector(path, batch) -> None:
    constant = np.zeros((1, 8400, 85), np.float32)
    gain = np.zeros((1, 8400, 85), np.float32)
    for index, (box, factor) in _ANCHORS.items():
        constant[0, index, :4] = box
        constant[0, index, 5] = 1.0  # class 0 (person) probability
        gain[0, index, 4] = factor / 128
    nodes = _brightness("images") + [helper.make_node("Mul", ["level", "gain"], ["scaled"]),
                                     helper.make_node("Add", ["scaled", "constant"], ["output"])]
    graph = helper.make_graph(
        nodes, "tiny_yolox",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 640, 640])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 8400, 85])],
        [numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape"),
         numpy_helper.from_array(gain, "gain"), numpy_helper.from_array(constant, "constant")])
    _save(graph, path)


#: The tiny pose model's answer for every crop: keypoint k at bins (100 + k, 200 + k) (crop pixels half of
#: that); scores 0.8, except COCO 3 (left ear, 0.2) and 132 (all logits negative: location -1).
def _simcc() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.full(133, 0.8, np.float32)
    scores[3] = 0.2
    simcc_x = np.zeros((1, 133, 576), np.float32)
    simcc_y = np.zeros((1, 133, 768), np.float32)
    for k in range(133):
        simcc_x[0, k, 100 + k] = scores[k]
        simcc_y[0, k, 200 + k] = 1.0
    simcc_x[0, 132], simcc_y[0, 132] = -0.5, -0.5
    scores[132] = -0.5
    return simcc_x, simcc_y, scores


def _pose_model(path, batch) -> None:
    simcc_x, simcc_y, _ = _simcc()
    nodes = _brightness("input") + [helper.make_node("Mul", ["level", "zero"], ["nothing"]),
                                    helper.make_node("Add", ["nothing", "cx"], ["simcc_x"]),
                                    helper.make_node("Add", ["nothing", "cy"], ["simcc_y"])]
    graph = helper.make_graph(
        nodes, "tiny_dwpose",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 384, 288])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [batch, 133, 576]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [batch, 133, 768])],
        [numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape"),
         numpy_helper.from_array(np.zeros((1, 1, 1), np.float32), "zero"),
         numpy_helper.from_array(simcc_x, "cx"), numpy_helper.from_array(simcc_y, "cy")])
    _save(graph, path)


@pytest.fixture(scope="module", params=[1, "batch"], ids=["fixed-batch", "dynamic-batch"])
def dwpose_dir(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"dwpose_{request.param}")
    _detector(folder / "yolox_l.onnx", request.param)
    _pose_model(folder / "dw-ll_ucoco_384.onnx", request.param)
    return folder


def _expected_keypoints(box) -> np.ndarray:
    """Hand-computed decoding of the tiny pose model's bins inside ``box`` (image pixels)."""
    x1, y1, x2, y2 = box
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    width, height = (x2 - x1) * 1.25, (y2 - y1) * 1.25
    scale = np.array([width, width / 0.75]) if width > height * 0.75 else np.array([height * 0.75, height])
    bins = np.stack([100 + np.arange(133), 200 + np.arange(133)], axis=1).astype(np.float64)
    bins[132] = -1
    return bins / 2 / np.array([288, 384]) * scale + center - scale / 2


def test_dwpose_end_to_end(dwpose_dir):
    detector = load_detector(dwpose_dir, device="cpu")
    assert isinstance(detector, DWPose) and detector.name == "DWPose (CPU)"
    bright = np.full((480, 640, 3), 200, np.uint8)  # mean with YOLOX padding = 178.5: A and C found
    dark = np.zeros((480, 640, 3), np.uint8)  # scores 0.22 at most: nobody -> whole-frame fallback
    people = detector.detect_people([bright, dark, bright], progress=False)
    assert [len(p) for p in people] == [2, 1, 2]
    first, second = people[0]
    _, _, scores = _simcc()
    for pose, box in ((first, _BOX_A), (second, _BOX_C)):
        expected = wholebody_pose(_expected_keypoints(box), scores, 640, 480)
        np.testing.assert_allclose(pose.body, expected.body, atol=1e-4)
        np.testing.assert_allclose(pose.hands, expected.hands, atol=1e-4)
        np.testing.assert_allclose(pose.face, expected.face, atol=1e-4)
        np.testing.assert_array_equal(pose.body_visible, expected.body_visible)
        # left ear (COCO 3) unsure; neck from shoulders
        assert not pose.body_visible[17] and pose.body_visible[1]
    # Whole-frame fallback: the pose model runs on the full 640x480 frame.
    fallback = wholebody_pose(_expected_keypoints((0, 0, 640, 480)), scores, 640, 480)
    np.testing.assert_allclose(people[1][0].body, fallback.body, atol=1e-4)
    assert detector.detect([dark, bright], progress=False)[1].body[0, 0] == pytest.approx(first.body[0, 0])


def test_fallback_without_visible_keypoints_is_nobody(dwpose_dir, monkeypatch):
    import dispose.pose.dwpose as module

    detector = load_detector(dwpose_dir)
    low = module.wholebody_pose

    def unsure(keypoints, scores, width, height, threshold=0.3):
        return low(keypoints, np.minimum(scores, 0.1), width, height, threshold)

    monkeypatch.setattr(module, "wholebody_pose", unsure)
    assert detector.detect([np.zeros((480, 640, 3), np.uint8)], progress=False) == [None]


def test_person_boxes_threshold_and_order():
    raw = np.zeros((8400, 85), np.float32)
    for index, (box, factor) in _ANCHORS.items():
        raw[index, :4] = box
        raw[index, 4], raw[index, 5] = factor, 1.0
    np.testing.assert_allclose(person_boxes(raw, 1.0), [_BOX_A, _BOX_C], atol=1e-3)
    np.testing.assert_allclose(person_boxes(raw, 0.5), np.array([_BOX_A, _BOX_C]) * 2, atol=1e-3)
    raw[8170, 4] = 0.25  # A below 0.3: B (0.9) is no longer suppressed by it and becomes the first person
    assert len(person_boxes(raw, 1.0)) == 2 and person_boxes(raw, 1.0)[0][0] == pytest.approx(240, abs=1e-3)


def test_bad_dwpose_paths(tmp_path, dwpose_dir):
    with pytest.raises(UserError, match="does not exist") as error:
        load_detector(tmp_path / "nowhere")
    assert "nowhere" in str(error.value)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "yolox_l.onnx").write_bytes((dwpose_dir / "yolox_l.onnx").read_bytes())
    with pytest.raises(UserError, match="lacks dw-ll_ucoco_384.onnx"):
        load_detector(tmp_path / "half")
    (tmp_path / "half" / "dw-ll_ucoco_384.onnx").write_text("<html>rate limited</html>")
    with pytest.raises(UserError, match="not a readable ONNX model") as error:
        load_detector(tmp_path / "half")
    assert "dw-ll_ucoco_384.onnx" in str(error.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        load_detector(tmp_path / "file")
    # Swapped files: the signatures are checked.
    (tmp_path / "swapped").mkdir()
    (tmp_path / "swapped" / "yolox_l.onnx").write_bytes((dwpose_dir / "dw-ll_ucoco_384.onnx").read_bytes())
    (tmp_path / "swapped" / "dw-ll_ucoco_384.onnx").write_bytes((dwpose_dir / "yolox_l.onnx").read_bytes())
    with pytest.raises(UserError, match="expected"):
        load_detector(tmp_path / "swapped")


def test_missing_onnxruntime_is_explained(monkeypatch, dwpose_dir):
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(UserError, match=r"pip install 'dispose-animate\[pose\]'"):
        load_detector(dwpose_dir)


def test_execution_providers_follow_the_device(monkeypatch):
    import onnxruntime

    from dispose.pose.dwpose import _providers

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert _providers("auto") == _providers("cuda") == _providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert _providers("auto") == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert _providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert _providers("cpu") == _providers("mps") == ["CPUExecutionProvider"]
