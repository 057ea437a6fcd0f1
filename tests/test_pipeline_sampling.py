"""Sampling logic of DisPoseMimicMotionPipeline on tiny stand-in models (CPU, 64x64 frames = 8x8 latents)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from precision import HALF_PRECISION_FACTOR, emulated
from test_pipeline_tiny_models import tiny_pipeline

from dispose.bases.mimicmotion.pipeline import DisPoseMimicMotionPipeline
from dispose.guidance.stage import GuidanceTensors
from dispose.pipelines.tiling import tile_indices

SIZE = 64
STEPS = 2


def _inputs(frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    reference = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    poses = torch.rand(frames, 3, SIZE, SIZE, generator=gen) * 2 - 1
    points = torch.rand(frames, 18, 2, generator=gen)
    visible = torch.rand(frames, 18, generator=gen) > 0.3
    guidance = GuidanceTensors(
        trajectories=(points * (SIZE - 1)).double() * visible[..., None], visible=visible, points=points,
        dense_flow=torch.randn(frames - 1, 2, SIZE, SIZE, generator=gen),
        point_embeddings=torch.randn(18, 32, generator=gen), width=SIZE, height=SIZE)
    return reference, poses, guidance


def _run(pipe, reference, poses, guidance, seed=42, **options):
    options = {"tile_size": 4, "tile_overlap": 1, "num_inference_steps": STEPS, "decode_chunk_size": 8,
               "output_type": "np", **options}
    return pipe(reference, poses, guidance, generator=torch.Generator().manual_seed(seed), **options).frames


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(controlnet="random")


@pytest.fixture(scope="module")
def video():
    return _inputs(7)


@pytest.fixture(scope="module")
def reference_output(pipe, video):
    return _run(pipe, *video)


def test_output_shape_drops_reference_frame(reference_output, pipe, video):
    assert reference_output.shape == (1, 6, SIZE, SIZE, 3)
    assert reference_output.min() >= 0 and reference_output.max() <= 1
    kept = _run(pipe, *video, keep_reference=True, output_type="latent")
    assert kept.shape == (1, 7, 4, 8, 8)


def test_same_seed_same_output_other_seed_differs(pipe, video, reference_output):
    np.testing.assert_array_equal(_run(pipe, *video), reference_output)
    assert not np.allclose(_run(pipe, *video, seed=7), reference_output)


def test_zero_controlnet_equals_baseline(video):
    zero = tiny_pipeline(controlnet="zero")
    with_guidance = _run(zero, *video)
    baseline = _run(zero, video[0], video[1], None)
    np.testing.assert_array_equal(with_guidance, baseline)


def test_random_controlnet_changes_output(pipe, video, reference_output):
    baseline = _run(pipe, video[0], video[1], None)
    assert not np.allclose(baseline, reference_output)


def test_cfg_in_two_passes_matches_one_batch(pipe, video, reference_output):
    np.testing.assert_allclose(_run(pipe, *video, cfg_mode="sequential"), reference_output, atol=2e-4)


@pytest.mark.parametrize("cfg_mode", ["batch", "sequential"])
def test_guidance_encoded_once_per_tile_and_shared_by_the_halves(pipe, video, reference_output, cfg_mode):
    tiles = len(tile_indices(7, 4, 1))
    for cache, encodings in ((True, tiles), (False, STEPS * tiles)):
        pipe.controlnet.encodings = 0
        out = _run(pipe, *video, cfg_mode=cfg_mode, cache_guidance=cache)
        assert pipe.controlnet.encodings == encodings
        if cfg_mode == "batch":
            np.testing.assert_array_equal(out, reference_output)


def test_cache_budget_keeps_the_tiles_that_fit_and_changes_nothing(pipe, video, reference_output,
                                                                   monkeypatch):
    """Tiles beyond the budget are encoded again at every step; the frames stay the same."""
    from dispose.pipelines import tile_cache

    sizes = []
    offer = tile_cache.TileCache.offer
    monkeypatch.setattr(tile_cache.TileCache, "offer",
                        lambda self, key, value: (sizes.append(tile_cache.tensor_bytes(value))
                                                  or offer(self, key, value)))
    tiles = len(tile_indices(7, 4, 1))
    pipe.controlnet.encodings = 0
    np.testing.assert_array_equal(_run(pipe, *video, guidance_cache_mb=None), reference_output)
    assert pipe.controlnet.encodings == tiles
    one_tile = sizes[0] / (1 << 20)  # MiB of the first tile's pose latents and encoded guidance
    pipe.controlnet.encodings = 0
    np.testing.assert_array_equal(_run(pipe, *video, guidance_cache_mb=one_tile), reference_output)
    assert pipe.controlnet.encodings == 1 + STEPS * (tiles - 1)


def test_controlnet_interval_reuses_residuals_between_steps(pipe, video, reference_output):
    calls = []
    hook = pipe.controlnet.register_forward_hook(lambda *_: calls.append(1))
    try:
        np.testing.assert_array_equal(_run(pipe, *video, controlnet_interval=1), reference_output)
        every_step = len(calls)
        calls.clear()
        reused = _run(pipe, *video, controlnet_interval=2)
    finally:
        hook.remove()
    assert len(calls) == every_step // STEPS  # step 0 only, of 2 steps
    assert not np.allclose(reused, reference_output)  # an output-changing option
    with pytest.raises(ValueError, match="controlnet_interval"):
        _run(pipe, *video, controlnet_interval=0)


def test_model_cpu_offload_matches(video, reference_output):
    offloaded = tiny_pipeline(controlnet="random")
    offloaded.enable_model_cpu_offload(device="cpu")
    # The UNet and the ControlNet run in turn for every tile: neither may send the other back to the CPU.
    assert offloaded.unet._hf_hook.prev_module_hook.model is offloaded.pose_net
    assert offloaded.controlnet._hf_hook.prev_module_hook is None
    assert offloaded.vae._hf_hook.prev_module_hook.model is offloaded.unet  # the UNet leaves before decoding
    np.testing.assert_allclose(_run(offloaded, *video), reference_output, atol=1e-6)


def test_decode_chunks_only_change_decoding(pipe, video, reference_output):
    latents = _run(pipe, *video, output_type="latent")
    np.testing.assert_array_equal(_run(pipe, *video, output_type="latent", decode_chunk_size=1), latents)
    one = _run(pipe, *video, decode_chunk_size=1)
    assert one.shape == reference_output.shape
    # The temporal decoder sees only the frames of its chunk, so pixels move a little (documented).
    assert np.abs(one - reference_output).mean() < 0.1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_close_to_fp32(pipe, video, reference_output, dtype):
    """Within twice the error of the same rounding emulated in float32 (the bound of tests/precision.py)."""
    emulation = type(pipe)(**{name: emulated(part, dtype) if isinstance(part, torch.nn.Module) else part
                              for name, part in pipe.components.items()})
    emulation.set_progress_bar_config(disable=True)
    emulation_error = np.abs(_run(emulation, *video) - reference_output).mean()
    half = tiny_pipeline(controlnet="random").to(dtype=dtype)
    assert np.abs(_run(half, *video) - reference_output).mean() <= HALF_PRECISION_FACTOR * emulation_error


class _Counter:
    def __init__(self):
        self.count = 0

    def update(self, n=1):
        self.count += n


@pytest.mark.parametrize("frames", [3, 4, 11])
def test_any_length_and_progress_counts_tiles_and_decoding(pipe, frames):
    reference, poses, guidance = _inputs(frames, seed=frames)
    counter = _Counter()
    out = _run(pipe, reference, poses, guidance, progress_bar=counter, decode_chunk_size=2)
    assert out.shape[1] == frames - 1
    # + one per decoded chunk
    assert counter.count == STEPS * len(tile_indices(frames, 4, 1)) + -(-frames // 2)
    assert np.isfinite(out).all()


def test_guidance_scale_one_skips_cfg(pipe, video):
    counter = _Counter()
    out = _run(pipe, *video, min_guidance_scale=1.0, max_guidance_scale=1.0, progress_bar=counter)
    assert out.shape == (1, 6, SIZE, SIZE, 3)


def test_mismatched_guidance_is_rejected(pipe, video):
    reference, poses, _ = video
    _, _, short = _inputs(5)
    with pytest.raises(ValueError, match="guidance covers"):
        _run(pipe, reference, poses, short)


def test_save_and_load_pretrained_round_trip(tmp_path, pipe, video, reference_output):
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = type(pipe).from_pretrained(tmp_path / "pipe")
    np.testing.assert_array_equal(_run(loaded, *video), reference_output)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_release_pixel_arithmetic(dtype):
    """The reference and a tile's uint8 skeletons reach the models as the release's script computes them."""
    from types import SimpleNamespace

    from dispose.bases.mimicmotion import release_reference
    from dispose.media.frame_store import FrameStore

    rng = np.random.default_rng(1)
    reference = rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)
    skeletons = rng.integers(0, 256, (3, 16, 8, 3), dtype=np.uint8)
    ours_reference = release_reference(reference, dtype)
    pipe = SimpleNamespace(unet=SimpleNamespace(dtype=dtype))
    ours_poses = DisPoseMimicMotionPipeline._tile_pose_images(pipe, FrameStore.from_array(skeletons), [0, 2])
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # the release's script: fp16 default dtype, float32 with --no_use_float16
    try:
        image_pixels = torch.from_numpy(reference.transpose(2, 0, 1).copy()) / 127.5 - 1
        release_reference_ = ((image_pixels + 1.0) * 127.5).to(torch.uint8).permute(1, 2, 0).numpy()
        release_poses = torch.from_numpy(skeletons.transpose(0, 3, 1, 2).copy()) / 127.5 - 1
    finally:
        torch.set_default_dtype(default)
    np.testing.assert_array_equal(ours_reference, release_reference_)
    assert not np.array_equal(ours_reference, reference)  # some dark levels lose one
    assert ours_poses.dtype == release_poses.dtype and torch.equal(ours_poses, release_poses[[0, 2]])
