"""Checkpoint layouts of the release (key names written down from reading it), strict loading, full-size
counts, ``dispose convert`` / ``dispose models``, and the tiny weight layout through ``load_pipeline``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel
from safetensors.torch import load_file

from dispose.bases.mimicmotion.tiny import build_tiny_weights, tiny_unet_config
from dispose.bases.mimicmotion.weights import (
    load_controlnet,
    load_mimicmotion,
    load_pipeline,
    read_checkpoint,
)
from dispose.cli import main
from dispose.errors import UserError
from dispose.guidance.tiny import DIFT_CHANNELS
from dispose.pipelines.weights import resolve_weights

WIDTH = 32  # tiny block width (all four blocks)


def release_controlnet_keys(layers_per_block: int = 1, point_channels: int = DIFT_CHANNELS,
                            widths: tuple[int, ...] = (WIDTH,) * 4) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the release's ``ControlNetSVDModel`` parts that are its own (from controlnet.py,
    point_adapter.py): zero convs, point adapter MLPs, the two-branch conditioning embedding."""
    keys: dict[str, tuple[int, ...]] = {}
    skip_widths = [widths[0]]
    for index, block_width in enumerate(widths):
        skip_widths += [block_width] * (layers_per_block + (index < len(widths) - 1))
    for index, skip_width in enumerate(skip_widths):
        keys[f"controlnet_down_blocks.{index}.weight"] = (skip_width, skip_width, 1, 1)
        keys[f"controlnet_down_blocks.{index}.bias"] = (skip_width,)
    keys["controlnet_mid_block.weight"] = (widths[-1], widths[-1], 1, 1)
    keys["controlnet_mid_block.bias"] = (widths[-1],)
    for level, level_width in enumerate(widths):
        keys[f"point_adapter.model_list.{level}.mlp.0.weight"] = (128, point_channels)
        keys[f"point_adapter.model_list.{level}.mlp.0.bias"] = (128,)
        keys[f"point_adapter.model_list.{level}.mlp.2.weight"] = (level_width, 128)
        keys[f"point_adapter.model_list.{level}.mlp.2.bias"] = (level_width,)
    width = widths[0]
    prefix = "controlnet_cond_embedding"
    for branch in ("flow", "traj"):
        keys[f"{prefix}.conv_in_{branch}.weight"] = (16, 2, 3, 3)
        keys[f"{prefix}.conv_in_{branch}.bias"] = (16,)
        for index, (c_in, c_out) in enumerate(((16, 32), (32, 96), (96, 256))):
            keys[f"{prefix}.blocks_{branch}.{2 * index}.weight"] = (c_in, c_in, 3, 3)
            keys[f"{prefix}.blocks_{branch}.{2 * index}.bias"] = (c_in,)
            keys[f"{prefix}.blocks_{branch}.{2 * index + 1}.weight"] = (c_out, c_in, 3, 3)
            keys[f"{prefix}.blocks_{branch}.{2 * index + 1}.bias"] = (c_out,)
        keys[f"{prefix}.conv_out_{branch}.weight"] = (width, 256, 3, 3)
        keys[f"{prefix}.conv_out_{branch}.bias"] = (width,)
    keys[f"{prefix}.conv_final.weight"] = (width, width, 3, 3)
    keys[f"{prefix}.conv_final.bias"] = (width,)
    return keys


#: PoseNet of MimicMotion (pose_net.py): eight convs in a Sequential with SiLUs between, a 1x1 projection, a
#: scale.
POSE_NET_KEYS = {
    **{f"conv_layers.{2 * i}.{kind}": shape for i, (c_in, c_out, k) in enumerate(
        ((3, 3, 3), (3, 16, 4), (16, 16, 3), (16, 32, 4), (32, 32, 3), (32, 64, 4), (64, 64, 3),
         (64, 128, 3)))
       for kind, shape in (("weight", (c_out, c_in, k, k)), ("bias", (c_out,)))},
    "final_proj.weight": (WIDTH, 128, 1, 1), "final_proj.bias": (WIDTH,), "scale": (1,),
}

#: What the release's ``from_unet`` copies by ``load_state_dict`` from the UNet (so these keys are
#: diffusers').
ENCODER_PREFIXES = ("conv_in.", "time_embedding.", "add_embedding.", "down_blocks.", "mid_block.")


def _release_state(seed: int = 0) -> tuple[dict, dict]:
    """(DisPose.pth, MimicMotion_1-1.pth) state dicts with the release's key names and random values."""
    torch.manual_seed(seed)
    diffusers_unet = UNetSpatioTemporalConditionModel(**tiny_unet_config()).state_dict()
    dispose = {k: v.clone() for k, v in diffusers_unet.items() if k.startswith(ENCODER_PREFIXES)}
    dispose.update({k: torch.randn(shape) * 0.05 for k, shape in release_controlnet_keys().items()})
    mimicmotion = {f"unet.{k}": v for k, v in diffusers_unet.items()}
    mimicmotion.update({f"pose_net.{k}": torch.randn(shape) * 0.05 for k, shape in POSE_NET_KEYS.items()})
    return dispose, mimicmotion


@pytest.fixture(scope="module")
def release_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("release")
    dispose, mimicmotion = _release_state()
    torch.save(dispose, folder / "DisPose.pth")
    torch.save(mimicmotion, folder / "MimicMotion_1-1.pth")
    return folder


def test_release_layout_loads_strictly(release_files):
    unet, pose_net = load_mimicmotion(release_files / "MimicMotion_1-1.pth", unet_config=tiny_unet_config())
    control = load_controlnet(release_files / "DisPose.pth", unet)
    assert control.config.point_channels == DIFT_CHANNELS  # read from the tensor shapes
    dispose, mimicmotion = _release_state()
    for name, tensor in control.state_dict().items():
        assert torch.equal(tensor, dispose[name]), name
    assert torch.equal(pose_net.scale, mimicmotion["pose_net.scale"])
    assert not any(t.is_meta for t in [*unet.parameters(), *pose_net.parameters(), *control.parameters()])


def test_missing_and_extra_keys_are_named(release_files, tmp_path):
    unet, _ = load_mimicmotion(release_files / "MimicMotion_1-1.pth", unet_config=tiny_unet_config())
    dispose, mimicmotion = _release_state()
    missing = dict(dispose)
    del missing["controlnet_cond_embedding.conv_final.bias"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(UserError, match=r"missing\.pth is not the DisPose hybrid ControlNet checkpoint "
                                        r"\(DisPose\.pth\): 1 missing keys "
                                        r"\(controlnet_cond_embedding\.conv_final\.bias\)$"):
        load_controlnet(tmp_path / "missing.pth", unet)
    extra = {**dispose, "point_adapter.model_list.4.mlp.0.weight": torch.zeros(128, DIFT_CHANNELS)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(UserError,
                       match=r"1 unexpected keys \(point_adapter\.model_list\.4\.mlp\.0\.weight\)$"):
        load_controlnet(tmp_path / "extra.pth", unet)
    no_scale = {k: v for k, v in mimicmotion.items() if k != "pose_net.scale"}
    torch.save(no_scale, tmp_path / "mm.pth")
    with pytest.raises(UserError, match=r"1 missing keys \(pose_net\.scale\)$"):
        load_mimicmotion(tmp_path / "mm.pth", unet_config=tiny_unet_config())
    torch.save({**mimicmotion, "vae.encoder.conv_in.weight": torch.zeros(1)}, tmp_path / "mm_vae.pth")
    load_mimicmotion(tmp_path / "mm_vae.pth", unet_config=tiny_unet_config())  # SVD parts: skipped


def test_full_size_counts_match_the_release():
    from accelerate import init_empty_weights

    from dispose.models.controlnet_svd import HybridControlNetSVD
    from dispose.models.pose_net import PoseNet
    from dispose.models.unet_mimicmotion import SVD_XT_UNET_CONFIG, MimicMotionUNet

    with init_empty_weights():
        unet = MimicMotionUNet.from_config(SVD_XT_UNET_CONFIG)
        control = HybridControlNetSVD.from_unet(unet, load_weights_from_unet=False)
        pose_net = PoseNet()
    state = control.state_dict()
    assert len(state) == 705  # DisPose.pth
    assert sum(t.numel() for t in state.values()) == 685_139_601  # the paper's 653.40 "MB" x 2^20
    own = {k: tuple(v.shape) for k, v in state.items() if not k.startswith(ENCODER_PREFIXES)}
    assert own == release_controlnet_keys(layers_per_block=2, point_channels=1280,
                                          widths=(320, 640, 1280, 1280))
    encoder = {k for k in state if k.startswith(ENCODER_PREFIXES)}
    assert encoder == {k for k in unet.state_dict() if k.startswith(ENCODER_PREFIXES)}
    assert sum(t.numel() for t in pose_net.state_dict().values()) == 205_557


def test_safetensors_convert_and_load(release_files, tmp_path, capsys):
    import json

    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_unet_config()))
    options = ["--unet-config", str(config), "--no-progress"]
    source = tmp_path / "DisPose.pth"
    source.write_bytes((release_files / "DisPose.pth").read_bytes())
    assert main(["convert", str(source), *options]) == 0
    converted = tmp_path / "DisPose.safetensors"
    assert converted.is_file() and not list(tmp_path.glob(".*partial*"))
    assert "DisPose.safetensors" in capsys.readouterr().out
    original = read_checkpoint(source, "dispose")
    again = read_checkpoint(converted, "dispose")
    assert original.keys() == again.keys() and all(torch.equal(original[k], again[k]) for k in original)
    unet, _ = load_mimicmotion(release_files / "MimicMotion_1-1.pth", unet_config=tiny_unet_config())
    load_controlnet(converted, unet)
    assert main(["convert", str(source), *options]) == 2  # exists: refuses without --force
    assert main(["convert", str(source), "--force", *options]) == 0

    mimic = tmp_path / "MimicMotion_1-1.pth"
    mimic.write_bytes((release_files / "MimicMotion_1-1.pth").read_bytes())
    out = tmp_path / "mm.safetensors"
    assert main(["convert", str(mimic), "--out", str(out), *options]) == 0
    assert set(load_file(str(out))) == set(read_checkpoint(mimic, "mimicmotion"))


def test_convert_rejects_other_files(tmp_path, capsys):
    path = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(2)}, path)
    assert main(["convert", str(path), "--no-progress"]) == 2
    assert "neither DisPose.pth nor MimicMotion" in capsys.readouterr().err


def test_models_command_prints_full_size_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "685,139,601" in out and "705 tensors" in out and "1,524,623,082" in out and "205,557" in out


def test_tiny_layout_samples_through_load_pipeline(tmp_path):
    from dispose.guidance.correspondence import point_embeddings
    from dispose.guidance.dift import DiftFeaturizer, DiftSetting
    from dispose.guidance.stage import GuidanceTensors

    frames = 4  # one tile of 4
    root = build_tiny_weights(tmp_path / "fresh", controlnet="fresh")
    pipe = load_pipeline(resolve_weights(root, required=("svd", "mimicmotion", "dispose")))
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.controlnet).__name__ == "HybridControlNetSVD"

    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (SIZE := 64, SIZE, 3), dtype=np.uint8)
    features = DiftFeaturizer.from_pretrained(root / "stable-diffusion-v1-5")(
        reference, DiftSetting(ensemble_size=2))
    points = torch.rand(frames, 18, 2, generator=torch.Generator().manual_seed(0))
    visible = torch.ones(frames, 18, dtype=torch.bool)
    guidance = GuidanceTensors(trajectories=(points * (SIZE - 1)).double(), visible=visible, points=points,
                               dense_flow=torch.randn(frames - 1, 2, SIZE, SIZE),
                               point_embeddings=point_embeddings(features, points[0], visible[0],
                                                                 (SIZE, SIZE)),
                               width=SIZE, height=SIZE)
    poses = torch.rand(frames, 3, SIZE, SIZE) * 2 - 1

    def sample(pipeline, with_guidance, **options):
        return pipeline(reference, poses, guidance if with_guidance else None, tile_size=4, tile_overlap=1,
                        num_inference_steps=2, generator=torch.Generator().manual_seed(3), **options).frames

    guided = sample(pipe, True)
    assert guided.shape == (1, frames - 1, SIZE, SIZE, 3) and np.isfinite(guided).all()
    baseline = sample(pipe, False)
    np.testing.assert_array_equal(guided, baseline)  # fresh ControlNet: zero residuals

    with torch.no_grad():  # trained-looking ControlNet: the guidance now changes the video
        for param in pipe.controlnet.parameters():
            if not param.abs().sum():
                param.normal_(0, 0.05)
    guided = sample(pipe, True)
    assert not np.allclose(guided, baseline)
    # Encoding the guidance once per step instead of once per job: the same numbers.
    np.testing.assert_array_equal(sample(pipe, True, cache_guidance=False), guided)
