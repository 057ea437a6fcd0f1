"""MusePose sampling on tiny random weights in the release layout: windows, baseline vs DisPose, callbacks,
skeletons read a window at a time and the per-window conditioning cache."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dispose.bases import SamplingRequest
from dispose.bases.musepose.pipeline import context_windows, padded_length
from dispose.bases.musepose.tiny import build_tiny_musepose_weights, tiny_unet_config
from dispose.bases.musepose.weights import (
    DEFAULT_SETTINGS,
    load_pipeline,
    required_components,
    sample,
    steps_per_video,
    tiles,
)
from dispose.errors import UserError
from dispose.guidance.stage import GuidanceTensors
from dispose.media.frame_store import FrameStore
from dispose.settings import JobSettings

SIZE = 64
SETTINGS = {"num_inference_steps": 2, "context_frames": 4, "context_overlap": 1}


def test_windows_follow_the_release():
    # test_stage_2.py defaults: 300 pose frames at stride 2 -> 150, windows of 48 overlapping by 4.
    assert padded_length(150, 48, 4) == 180
    assert [window[0] for window in context_windows(180, 48, 4)] == [0, 44, 88, 132]
    assert context_windows(180, 48, 4)[-1][-1] == 179
    assert padded_length(10, 48, 4) == 48  # a short video is padded to one window
    assert padded_length(92, 48, 4) == 92
    assert context_windows(5, 8, 2) == [list(range(5))]
    # Without the padding the release's windows wrap around to the first frames.
    assert context_windows(11, 4, 1)[-1] == [9, 10, 0, 1]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = build_tiny_musepose_weights(tmp_path_factory.mktemp("musepose"), dift=False)
    paths = {"musepose": root / "MusePose", "sd_image_variations": root / "sd-image-variations-diffusers",
             "clip_image_encoder": root / "image_encoder", "sd_vae": root / "sd-vae-ft-mse",
             "dispose_musepose": root / "DisPose_MusePose.pth"}
    pipe = load_pipeline(paths, dispose=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _inputs(frames: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, SIZE, SIZE, generator=generator)
    poses = torch.rand(frames, 3, SIZE, SIZE, generator=generator) * 2 - 1
    points = torch.rand(frames, 18, 2, generator=generator)
    guidance = GuidanceTensors(trajectories=points * SIZE, visible=torch.ones(frames, 18, dtype=torch.bool),
                               points=points,
                               dense_flow=torch.randn(frames - 1, 2, SIZE, SIZE, generator=generator),
                               point_embeddings=torch.randn(18, 32, generator=generator), width=SIZE,
                               height=SIZE)
    return image, poses, guidance


def _run(pipe, image, poses, guidance=None, **options):
    return pipe(image, poses, guidance, generator=torch.Generator().manual_seed(7),
                **{**SETTINGS, **options}).frames


def test_baseline_and_dispose_share_everything_but_the_controlnet_residuals(pipeline):
    image, poses, guidance = _inputs(4)
    baseline = _run(pipeline, image, poses)
    assert baseline.shape == (1, 3, SIZE, SIZE, 3)  # the 3 driving frames; frame 0 is the reference pose
    assert 0 <= baseline.min() and baseline.max() <= 1
    silent = _run(pipeline, image, poses, guidance, controlnet_conditioning_scale=0.0)
    assert (silent == baseline).all()
    guided = _run(pipeline, image, poses, guidance)
    assert abs(guided - baseline).max() > 1e-3


def test_long_videos_are_sampled_in_windows_with_progress_and_callbacks(pipeline):
    image, poses, guidance = _inputs(6)  # 5 driving frames -> windows [0..3], [3..6] of 7 padded frames
    updates, steps = [], []

    class Bar:
        def update(self, n=1):
            updates.append(n)

    def callback(pipe, step, timestep, tensors):
        steps.append((step, tensors["latents"].shape))
        return {}

    frames = _run(pipeline, image, poses, guidance, progress_bar=Bar(), callback_on_step_end=callback,
                  decode_chunk_size=2)
    assert frames.shape == (1, 5, SIZE, SIZE, 3)
    assert len(updates) == 2 * 2 + 3  # steps x windows + decoded chunks
    assert steps == [(0, (1, 4, 7, 8, 8)), (1, (1, 4, 7, 8, 8))]


def test_bad_inputs_are_refused(pipeline):
    image, poses, guidance = _inputs(3)
    with pytest.raises(ValueError, match="multiples of 64"):
        pipeline(image[..., :48, :48], poses[..., :48, :48], **SETTINGS)
    with pytest.raises(ValueError, match="guidance covers 3 frames"):
        pipeline(image, poses[:2], guidance, **SETTINGS)
    assert required_components(False) == ["musepose", "sd_image_variations", "clip_image_encoder", "sd_vae"]


def test_missing_release_file_names_it(tmp_path):
    paths = {"musepose": tmp_path, "sd_image_variations": tmp_path}
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps(tiny_unet_config()))
    with pytest.raises(UserError, match=r"denoising_unet\.pth not found"):
        load_pipeline(paths, dispose=False)


def test_base_entry_functions_sample_a_request(pipeline):
    job = replace(JobSettings(), **{**DEFAULT_SETTINGS, "num_inference_steps": 1, "num_frames": 4,
                                    "frames_overlap": 1, "decode_chunk_size": 2})
    rng = np.random.default_rng(0)
    updates = []

    class Bar:
        def update(self, n=1):
            updates.append(n)

    request = SamplingRequest(reference=rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
                              skeletons=rng.integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8),
                              guidance=None, settings=job,
                              runtime=SimpleNamespace(cache_guidance=True, guidance_cache_mb=2048.0),
                              generator=torch.Generator().manual_seed(0), progress_bar=Bar())
    chunks = list(sample(pipeline, request))
    assert [len(chunk) for chunk in chunks] == [2, 1]  # yielded a decoding chunk at a time
    frames = np.concatenate(chunks)
    assert frames.shape == (3, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert tiles(4, job) == [[1, 2, 3, 3]]  # 3 driving frames padded with the last one to a window of 4
    assert len(updates) == steps_per_video(4, job) == 1 + 2


class _CountingStore(FrameStore):
    """A frame store that records how many frames each read asks for."""

    reads: list[int]

    def read(self, indices):
        self.reads.append(len(indices))
        return super().read(indices)


def test_uint8_skeletons_read_per_window_and_cache_budgets_give_the_same_frames(pipeline):
    image, _, guidance = _inputs(6)  # 5 driving frames: two windows of 4
    skeletons = np.random.default_rng(1).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    # what sample() passed before
    as_float = torch.from_numpy(skeletons).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    expected = _run(pipeline, image, as_float, guidance)
    store = _CountingStore.from_array(skeletons)
    store.reads = []
    assert (_run(pipeline, image, store, guidance) == expected).all()
    assert store.reads == [4, 4]  # each window's skeletons, once: the whole video is never read
    store.reads = []
    assert (_run(pipeline, image, store, guidance, guidance_cache_mb=0) == expected).all()
    assert store.reads == [4, 4] * SETTINGS["num_inference_steps"]  # nothing kept: every window, every step


def test_controlnet_interval_reuses_residuals_between_steps(pipeline):
    image, poses, guidance = _inputs(4)
    calls = []
    hook = pipeline.controlnet.register_forward_hook(lambda *_: calls.append(1))
    try:
        every = _run(pipeline, image, poses, guidance)
        every_calls = len(calls)
        calls.clear()
        reused = _run(pipeline, image, poses, guidance, controlnet_interval=2)
    finally:
        hook.remove()
    assert len(calls) == every_calls // 2  # SETTINGS has 2 steps: the ControlNet runs at step 0 only
    assert abs(reused - every).max() > 0
