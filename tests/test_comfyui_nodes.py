"""The ComfyUI nodes without ComfyUI: every node's declared contract is one ComfyUI accepts, the package loads
the way ComfyUI loads a custom-nodes folder, the example workflow wires existing inputs and outputs, and the
nodes chained on tiny random weights give exactly the engine's frames (with ComfyUI's progress bar and Cancel
stood in by small fakes of ``comfy.utils`` and ``comfy.model_management``)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from dispose.errors import UserError
from dispose.integrations.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from dispose.integrations.comfyui import nodes as comfy_nodes
from dispose.media.image import load_image
from dispose.media.video import read_video

PACKAGE = Path(comfy_nodes.__file__).parent
WORKFLOW = Path(__file__).resolve().parents[1] / "examples" / "comfyui" / "dispose_workflow.json"
#: ComfyUI's own types (widgets and tensors); every other type must be made by one of our nodes.
BUILTIN = {"IMAGE", "INT", "FLOAT", "STRING", "BOOLEAN"}
#: Outputs of the core ComfyUI nodes the example workflow uses.
CORE_OUTPUTS = {"LoadImage": ("IMAGE", "MASK"), "LoadVideo": ("VIDEO",),
                "GetVideoComponents": ("IMAGE", "AUDIO", "FLOAT"), "CreateVideo": ("VIDEO",)}


def declared_inputs(node) -> dict[str, tuple]:
    spec = node.INPUT_TYPES()
    return {**spec["required"], **spec.get("optional", {})}


@pytest.mark.parametrize("name", sorted(NODE_CLASS_MAPPINGS))
def test_every_node_declares_a_valid_contract(name):
    node = NODE_CLASS_MAPPINGS[name]
    spec = node.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
    produced = {kind for other in NODE_CLASS_MAPPINGS.values() for kind in other.RETURN_TYPES}
    for input_name, entry in declared_inputs(node).items():
        kind, options = entry[0], (entry[1] if len(entry) > 1 else {})
        if isinstance(kind, list):  # a combo: its default is one of its choices
            assert kind and options.get("default", kind[0]) in kind, input_name
        elif kind in ("INT", "FLOAT"):
            assert options["min"] <= options["default"] <= options["max"], input_name
        else:
            assert kind in BUILTIN or kind in produced, f"{name}.{input_name}: nobody makes {kind}"
    assert isinstance(node.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in node.RETURN_TYPES)
    assert len(getattr(node, "RETURN_NAMES", node.RETURN_TYPES)) == len(node.RETURN_TYPES)
    assert node.RETURN_TYPES or node.OUTPUT_NODE
    assert node.CATEGORY == "DisPose" and NODE_DISPLAY_NAME_MAPPINGS[name].startswith("DisPose: ")
    function = inspect.signature(getattr(node(), node.FUNCTION))
    assert set(spec["required"]) | set(spec.get("optional", {})) == set(function.parameters)
    assert all(function.parameters[key].default is inspect.Parameter.empty for key in spec["required"])
    assert all(function.parameters[key].default is not inspect.Parameter.empty
               for key in spec.get("optional", {}))


def test_the_folder_loads_as_comfyui_loads_custom_nodes():
    """ComfyUI executes ``custom_nodes/<folder>/__init__.py`` under a module name made from its path."""
    name = str(PACKAGE).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, PACKAGE / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    assert module.NODE_CLASS_MAPPINGS is NODE_CLASS_MAPPINGS
    assert set(module.NODE_DISPLAY_NAME_MAPPINGS) == set(NODE_CLASS_MAPPINGS)


def test_example_workflow_wires_existing_inputs_and_outputs():
    workflow = json.loads(WORKFLOW.read_text())
    outputs = {node_id: (NODE_CLASS_MAPPINGS[node["class_type"]].RETURN_TYPES if node["class_type"] in
                         NODE_CLASS_MAPPINGS else CORE_OUTPUTS.get(node["class_type"], ()))
               for node_id, node in workflow.items()}
    ours = {node["class_type"] for node in workflow.values()} & set(NODE_CLASS_MAPPINGS)
    assert {"DisPoseLoadModels", "DisPoseComputeGuidance", "DisPoseAnimate"} <= ours
    for node_id, node in workflow.items():
        if node["class_type"] not in NODE_CLASS_MAPPINGS:
            continue
        declared = declared_inputs(NODE_CLASS_MAPPINGS[node["class_type"]])
        required = NODE_CLASS_MAPPINGS[node["class_type"]].INPUT_TYPES()["required"]
        assert set(required) <= set(node["inputs"]) <= set(declared), node_id
        for key, value in node["inputs"].items():
            kind = declared[key][0]
            if isinstance(value, list):  # a link [node id, output index]
                assert outputs[value[0]][value[1]] == kind, (node_id, key)
            elif isinstance(kind, list):
                assert value in kind, (node_id, key)
            else:
                assert kind in BUILTIN, (node_id, key)


@pytest.fixture(scope="module")
def model(tiny_weights):
    return comfy_nodes.DisPoseLoadModels().load("mimicmotion", str(tiny_weights), "fp32", "cpu", "mediapipe",
                                                 "propagate", True)[0]


class FakeComfy:
    """``comfy.utils.ProgressBar`` and ``comfy.model_management`` as far as the nodes use them."""

    def __init__(self) -> None:
        self.updates: list[tuple[int, int]] = []
        self.interrupt = False
        outer = self

        class ProgressBar:
            def __init__(self, total):
                self.total = total

            def update_absolute(self, value, total=None, preview=None):
                outer.updates.append((value, total if total is not None else self.total))

        class InterruptProcessingException(Exception):
            pass

        self.utils = types.SimpleNamespace(ProgressBar=ProgressBar)
        self.management = types.SimpleNamespace(processing_interrupted=lambda: self.interrupt,
                                                InterruptProcessingException=InterruptProcessingException)


@pytest.fixture
def comfy(monkeypatch) -> FakeComfy:
    fake = FakeComfy()
    monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))
    monkeypatch.setitem(sys.modules, "comfy.utils", fake.utils)
    monkeypatch.setitem(sys.modules, "comfy.model_management", fake.management)
    return fake


def as_image(frames: np.ndarray) -> torch.Tensor:
    """What ComfyUI's loaders give: (B, H, W, 3) float32 in [0, 1]."""
    return torch.from_numpy(frames).float() / 255.0


def test_four_nodes_chained_give_the_engines_frames(model, shared_data, comfy):
    ref, dance = shared_data / "musepose_ref.png", shared_data / "musepose_dance.mp4"
    frames = read_video(dance, sample_stride=2, max_frames=3).frames
    poses, skeletons = comfy_nodes.DisPoseExtractPoses().extract(as_image(frames), 15.0, model)
    assert skeletons.shape == (3, *frames.shape[1:]) and skeletons.dtype == torch.float32
    guidance, preview = comfy_nodes.DisPoseComputeGuidance().compute(
        as_image(load_image(ref)[None]), 128, 1, 0, 42, poses=poses, model=model)
    assert preview.shape[0] == 3 and preview.shape[2] == 3 * 128 and 0 <= preview.min() <= preview.max() <= 1
    animated, metadata = comfy_nodes.DisPoseAnimate().animate(model, guidance, 2, 2.0, 42, 4, 2, 1.0, False)
    assert animated.shape == (3, 192, 128, 3) and animated.dtype == torch.float32
    assert comfy.updates and comfy.updates[-1][0] == comfy.updates[-1][1]  # the bar ends full

    expected = model.animate(ref, dance, settings=model.settings(resolution=128, max_frames=3,
                                                                 num_inference_steps=2, num_frames=4,
                                                                 frames_overlap=2))
    assert np.array_equal((animated * 255).round().to(torch.uint8).numpy(), expected.frames)
    assert metadata["seed"] == 42 and metadata["result"]["frames"] == 3


def test_guidance_from_frames_without_weights_and_the_sidecar(shared_data, tmp_path):
    frames = read_video(shared_data / "musepose_dance.mp4", sample_stride=1, max_frames=6).frames
    reference = as_image(load_image(shared_data / "musepose_ref.png")[None])
    guidance, preview = comfy_nodes.DisPoseComputeGuidance().compute(reference, 128, 2, 0, 42,
                                                                      driving=as_image(frames), fps=30.0)
    assert guidance.num_frames == 4 and guidance.fps == 15.0 and guidance.point_embeddings is None
    assert preview.shape[:3] == (3, 192, 3 * 128)
    with pytest.raises(UserError, match="connect the driving frames or their poses"):
        comfy_nodes.DisPoseComputeGuidance().compute(reference, 128, 1, 0, 42)
    with pytest.raises(UserError, match="folder"):
        comfy_nodes.DisPoseSaveSidecar().save({"seed": 1}, "dispose/run")
    shown = comfy_nodes.DisPoseSaveSidecar().save({"seed": 1}, "dispose/run", str(tmp_path))
    written = Path(shown["ui"]["text"][0])
    assert written.parent == tmp_path / "dispose" and json.loads(written.read_text()) == {"seed": 1}


def test_comfyui_cancel_interrupts_the_animation(model, shared_data, comfy):
    reference = as_image(load_image(shared_data / "musepose_ref.png")[None])
    frames = read_video(shared_data / "musepose_dance.mp4", sample_stride=2, max_frames=2).frames
    guidance, _ = comfy_nodes.DisPoseComputeGuidance().compute(reference, 128, 1, 0, 42,
                                                               driving=as_image(frames), dense="none")
    comfy.interrupt = True
    with pytest.raises(comfy.management.InterruptProcessingException):
        comfy_nodes.DisPoseAnimate().animate(model, guidance, 2, 2.0, 42, 16, 6, 1.0, True)


def test_weights_come_from_comfyuis_models_folder(monkeypatch, tmp_path):
    from dispose.integrations.comfyui import host

    folders = {}
    folder_paths = types.SimpleNamespace(
        models_dir=str(tmp_path / "models"), folder_names_and_paths=folders,
        add_model_folder_path=lambda name, path: folders.setdefault(name, ([], set()))[0].append(path),
        get_folder_paths=lambda name: list(folders[name][0]))
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    host.register_models_folder()
    assert folders["dispose"][0] == [str(tmp_path / "models" / "dispose")]
    assert host.weights_folder("") == tmp_path / "models" / "dispose"
    (tmp_path / "models" / "dispose" / "mine").mkdir(parents=True)
    assert host.weights_folder("mine") == tmp_path / "models" / "dispose" / "mine"
    assert host.weights_folder(str(tmp_path)) == tmp_path
