"""The in-memory engine (dispose.engine) on tiny random weights: one load serves many animations, guidance
reused from a folder gives the same video without rerunning its models, progress, cancellation, a base
registered from outside, and the release-exact mode."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from dispose.cli import main
from dispose.engine import Animator, Cancelled, Runtime
from dispose.media.image import load_image
from dispose.media.video import read_video

FAST = {"resolution": 128, "max_frames": 4, "num_inference_steps": 2, "num_frames": 4, "frames_overlap": 2}
#: Options that shape the guidance, then those of sampling (the only ones given with --guidance).
SHAPE = ["--resolution", "128", "--max-frames", "4"]
SAMPLE = ["--steps", "2", "--num-frames", "4", "--frames-overlap", "2", "--detector", "mediapipe", "--dense",
          "propagate", "--no-progress"]
CLI_FAST = SHAPE + SAMPLE


pytestmark = pytest.mark.usefixtures("offline_hub")


@pytest.fixture(scope="module")
def weights(tiny_weights):
    return tiny_weights


@pytest.fixture(scope="module")
def engine(weights):
    return Animator.load(weights=weights,
                         runtime=Runtime(detector="mediapipe", dense="propagate", progress=False))


def test_one_load_animates_two_references_with_progress(weights, shared_data, monkeypatch):
    from dispose.bases.mimicmotion import weights as loading

    loads = []
    original = loading.load_pipeline
    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **k: loads.append(1) or original(*a, **k))
    engine = Animator.load(weights=weights,
                           runtime=Runtime(detector="mediapipe", dense="propagate", progress=False))
    events = []
    settings = engine.settings(**FAST)
    dancer = engine.animate(shared_data / "musepose_ref.png", shared_data / "musepose_dance.mp4",
                            settings=settings,
                            on_progress=lambda stage, done, total: events.append((stage, done, total)))
    other = engine.animate(load_image(shared_data / "moore_anyone-1.png"), shared_data / "musepose_dance.mp4",
                           settings=settings)
    assert loads == [1]
    assert dancer.frames.shape == (4, 192, 128, 3) and dancer.frames.dtype == np.uint8
    assert other.frames.shape[0] == 4 and not np.array_equal(dancer.frames, other.frames)
    assert np.stack(list(dancer.side_by_side())).shape == (4, 192, 3 * 128, 3)
    stages = [stage for stage, _, _ in events]
    assert stages.index("poses") < stages.index("sampling") < stages.index("decoding")
    steps = [done for stage, done, _ in events if stage in ("sampling", "decoding")]
    assert steps == sorted(steps) and steps[-1] == events[-1][2]
    meta = dancer.metadata
    assert meta["seed"] == 42 and meta["result"]["tiles"] == 2 and meta["inputs"]["reference"]["sha256"]
    assert {"poses", "dift", "motion_fields", "sampling", "decoding"} <= set(meta["timings"])


def test_cancel_between_steps(engine, shared_data):
    cancel = threading.Event()
    seen = []

    def step_end(pipeline, step, timestep, kwargs):
        seen.append(step)
        cancel.set()
        return kwargs

    with pytest.raises(Cancelled, match="cancelled after step 1"):
        engine.animate(shared_data / "musepose_ref.png", shared_data / "musepose_dance.mp4",
                       settings=engine.settings(**FAST), callback_on_step_end=step_end, cancel=cancel)
    assert seen == [0]


def test_saved_guidance_gives_the_same_video_without_its_models(weights, shared_data, tmp_path, monkeypatch):
    from dispose.guidance import motion_fields
    from dispose.guidance.dift import DiftFeaturizer
    from dispose.pose.mediapipe_pose import MediaPipePose

    inputs = ["--ref", str(shared_data / "musepose_ref.png"), "--driving",
              str(shared_data / "musepose_dance.mp4")]
    assert main(["guidance", *inputs, "--resolution", "128", "--max-frames", "4", "--no-progress",
                 "--no-pictures", "--sd15", str(weights / "stable-diffusion-v1-5"), "--out",
                 str(tmp_path / "g")]) == 0
    assert main(["animate", *inputs, "--weights", str(weights), *CLI_FAST, "--out",
                 str(tmp_path / "one.mp4")]) == 0

    calls = []
    for owner, name in ((DiftFeaturizer, "__call__"), (MediaPipePose, "detect_people"),
                        (motion_fields, "dense_motion_field")):
        original = getattr(owner, name)
        monkeypatch.setattr(owner, name,
                            lambda *a, _o=original, _n=name, **k: calls.append(_n) or _o(*a, **k))
    assert main(["animate", "--guidance", str(tmp_path / "g"), "--weights", str(weights), *SAMPLE,
                 "--out", str(tmp_path / "two.mp4")]) == 0
    assert calls == []
    assert (tmp_path / "one.mp4").read_bytes() == (tmp_path / "two.mp4").read_bytes()


def test_saved_guidance_from_another_reference_is_refused(weights, shared_data, tmp_path, capsys):
    assert main(["guidance", "--ref", str(shared_data / "musepose_ref.png"), "--driving",
                 str(shared_data / "musepose_dance.mp4"), "--resolution", "128", "--max-frames", "2",
                 "--no-progress", "--no-pictures", "--out", str(tmp_path / "g")]) == 0
    code = main(["animate", "--guidance", str(tmp_path / "g"), "--ref",
                 str(shared_data / "moore_anyone-1.png"), "--weights", str(weights), *SAMPLE, "--out",
                 str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "made from another reference" in err and err.count("\n") == 1
    assert not (tmp_path / "x.mp4").exists()


def test_a_base_registered_in_a_test_runs_through_the_command(weights, shared_data, tmp_path, monkeypatch):
    from dispose import bases

    sampled = []

    def sample(pipeline, request):
        sampled.append(request.skeletons.shape)
        yield np.full((len(request.skeletons) - 1, *request.reference.shape), 7, np.uint8)  # one chunk

    fake = bases.Base(name="fake", title="a stand-in", components=(), required_components=lambda dispose: [],
                      load_pipeline=lambda paths, dispose, dtype, device: _FakePipeline(), sample=sample,
                      tiles=lambda n, settings: [list(range(n))], sampling_steps=lambda n, settings: 1,
                      steps_per_video=lambda n, settings: 1, defaults={"fps": 9})
    monkeypatch.setitem(bases.BASES, "fake", fake)
    out = tmp_path / "fake.mp4"
    assert main(["animate", "--base", "fake", "--baseline", "--ref", str(shared_data / "musepose_ref.png"),
                 "--driving", str(shared_data / "musepose_dance.mp4"), *CLI_FAST, "--out", str(out)]) == 0
    clip = read_video(out, sample_stride=1)
    assert (sampled == [(5, 192, 128, 3)] and clip.frames.shape == (4, 192, 128, 3)
            and clip.fps == pytest.approx(9))


class _FakePipeline:
    controlnet = None

    def set_progress_bar_config(self, **options):
        pass


def test_release_temporal_context_order():
    """diffusers 0.27's order: row j of the temporal blocks reads the CLIP context of video j % B (batch-major
    today: video j // (H*W)); nothing changes outside the context manager."""
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

    from dispose.models.release_compat import release_temporal_context

    torch.manual_seed(0)
    model = TransformerSpatioTemporalModel(num_attention_heads=4, attention_head_dim=8, in_channels=32,
                                           cross_attention_dim=8).eval()
    videos, frames, height, width = 2, 3, 2, 3
    contexts = torch.randn(videos, 1, 8)
    hidden = torch.randn(videos * frames, 32, height, width)
    seen = []
    model.temporal_transformer_blocks[0].register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["encoder_hidden_states"].clone()), with_kwargs=True)

    def run():
        context = contexts.repeat_interleave(frames, dim=0)
        with torch.no_grad():
            return model(hidden, encoder_hidden_states=context,
                         image_only_indicator=torch.zeros(videos, frames)).sample

    current = run()
    with release_temporal_context([model]):
        release = run()
    again = run()
    rows = torch.arange(videos * height * width)
    torch.testing.assert_close(seen[0], contexts[rows // (height * width)])
    torch.testing.assert_close(seen[1], contexts[rows % videos])
    torch.testing.assert_close(seen[2], seen[0])
    assert not torch.allclose(release, current) and torch.equal(again, current)
    with release_temporal_context([model]):  # one video per batch: both orders agree
        single = model(hidden[:frames], encoder_hidden_states=contexts[:1].repeat(frames, 1, 1),
                       image_only_indicator=torch.zeros(1, frames)).sample
    torch.testing.assert_close(single, current[:frames])


def test_match_release_runs_end_to_end(engine, shared_data):
    settings = engine.settings(**FAST)
    ours = engine.animate(shared_data / "musepose_ref.png", shared_data / "musepose_dance.mp4",
                          settings=settings)
    release = engine.animate(shared_data / "musepose_ref.png", shared_data / "musepose_dance.mp4",
                             settings=dataclasses.replace(settings, match_release=True))
    assert release.guidance.dense_flow.dtype == np.float32 and release.guidance.release_missing_points
    assert release.frames.shape == ours.frames.shape and not np.array_equal(release.frames, ours.frames)
