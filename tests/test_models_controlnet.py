"""Hybrid ControlNet (Eq. 8) + MimicMotion UNet on tiny random models (CPU): zero start, weight copy, residual
accounting of the release and of the paper, where the guidance enters, gradients."""

from __future__ import annotations

import pytest
import torch
from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module
from diffusers import AutoencoderKLTemporalDecoder
from precision import HALF_PRECISION_FACTOR, emulated, mean_error

from dispose.bases.mimicmotion.tiny import EMBED, tiny_models, tiny_unet_config
from dispose.guidance.tiny import DIFT_CHANNELS
from dispose.models.controlnet_svd import HybridControlNetSVD
from dispose.models.unet_mimicmotion import MimicMotionUNet, skip_counts

SIZE = 64  # frames of 64x64 -> latents 8x8, correspondence grid 4x4
BATCH, FRAMES = 2, 3


def _inputs(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    # Keypoints on cells (0, 0), (1, 1), (2, 3): (0, 0) with (1, 1) survives to the 1x1 levels.
    mask = torch.zeros(BATCH, FRAMES, 4, 4)
    mask[..., 0, 0] = mask[..., 1, 1] = mask[..., 2, 3] = 1
    return {
        "sample": torch.randn(BATCH, FRAMES, 8, 8, 8, generator=generator),
        "timestep": torch.tensor(1.7),
        "encoder_hidden_states": torch.randn(BATCH, 1, EMBED, generator=generator),
        "added_time_ids": torch.tensor([[6.0, 127.0, 0.02]] * BATCH),
        "sparse_flow": torch.randn(BATCH, FRAMES, 2, SIZE, SIZE, generator=generator),
        "dense_flow": torch.randn(BATCH, FRAMES, 2, SIZE, SIZE, generator=generator),
        "point_features": (torch.randn(BATCH, FRAMES, DIFT_CHANNELS, 4, 4, generator=generator)
                           * mask[:, :, None]),
        "point_mask": mask,
        "pose_latents": torch.randn(BATCH * FRAMES, 32, 8, 8, generator=generator),
    }


def _split(inputs: dict) -> tuple[tuple, dict, dict]:
    base = (inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"], inputs["added_time_ids"])
    guidance = {key: inputs[key] for key in ("sparse_flow", "dense_flow", "point_features", "point_mask")}
    return base, guidance, {"pose_latents": inputs["pose_latents"]}


@pytest.fixture(scope="module")
def fresh():
    return tiny_models("fresh")


@pytest.fixture(scope="module")
def random_models():
    return tiny_models("random", seed=1)


def _record_outputs(blocks) -> tuple[list, list]:
    outputs = []
    handles = [block.register_forward_hook(lambda _m, _a, out: outputs.append(out)) for block in blocks]
    return outputs, handles


def test_fresh_controlnet_gives_zero_residuals_and_leaves_the_unet_alone(fresh):
    unet, _, control = fresh
    base, guidance, pose = _split(_inputs())
    with torch.no_grad():
        down, mid = control(*base, **guidance)
        assert len(down) == len(unet.residual_counts) == 8
        assert all(torch.count_nonzero(residual) == 0 for residual in (*down, mid))
        with_control = unet(*base, **pose, down_block_additional_residuals=down,
                            mid_block_additional_residual=mid, return_dict=False)[0]
        without = unet(*base, **pose, return_dict=False)[0]
    assert torch.equal(with_control, without)


def test_from_unet_copies_the_encoder(fresh):
    unet, _, control = fresh
    base, _, _ = _split(_inputs(seed=3))
    unet_outputs, handles = _record_outputs(unet.down_blocks)
    control_outputs, more = _record_outputs(control.down_blocks)
    mid_outputs, mid_handles = _record_outputs([unet.mid_block, control.mid_block])
    try:
        with torch.no_grad():
            unet(*base)
            control(*base)  # no guidance: the copied encoder alone
    finally:
        for handle in handles + more + mid_handles:
            handle.remove()
    for ours, theirs in zip(control_outputs, unet_outputs, strict=True):
        assert torch.equal(ours[0], theirs[0])
        assert all(torch.equal(a, b) for a, b in zip(ours[1], theirs[1], strict=True))
    assert torch.equal(mid_outputs[0], mid_outputs[1])


def test_from_unet_add_embedding_switch(fresh):
    unet = fresh[0]
    copied = HybridControlNetSVD.from_unet(unet, point_channels=DIFT_CHANNELS)
    assert torch.equal(copied.add_embedding.linear_1.weight, unet.add_embedding.linear_1.weight)
    release = HybridControlNetSVD.from_unet(unet, point_channels=DIFT_CHANNELS, copy_add_embedding=False)
    assert not torch.equal(release.add_embedding.linear_1.weight, unet.add_embedding.linear_1.weight)
    assert torch.equal(release.time_embedding.linear_1.weight, unet.time_embedding.linear_1.weight)


def test_residual_counts_hand_counted():
    tiny = MimicMotionUNet(**tiny_unet_config())
    # Tiny: 1 layer per block -> skips: conv_in, (resnet, down) x 3 blocks, resnet of the last block.
    assert tiny.residual_counts == [4, 4, 4, 3, 3, 2, 2, 1]
    tiny.set_residual_mode("paper")
    assert tiny.residual_counts == [1] * 8
    with pytest.raises(ValueError, match="residual_mode"):
        tiny.set_residual_mode("twice")
    from accelerate import init_empty_weights

    from dispose.models.unet_mimicmotion import SVD_XT_UNET_CONFIG

    with init_empty_weights():
        full = MimicMotionUNet.from_config(SVD_XT_UNET_CONFIG)
    # SVD-xt: residuals 0-3 four times, 4-6 three times, 7-9 twice, 10-11 once.
    assert skip_counts(full.down_blocks, "release") == [4] * 4 + [3] * 3 + [2] * 3 + [1] * 2
    assert skip_counts(full.down_blocks, "paper") == [1] * 12


@pytest.mark.parametrize("mode", ["release", "paper"])
def test_residuals_reach_the_skips_as_counted(mode):
    torch.manual_seed(0)
    unet = MimicMotionUNet(**tiny_unet_config())
    unet.set_residual_mode(mode)
    base, _, pose = _split(_inputs(seed=5))
    counts = {"release": [4, 4, 4, 3, 3, 2, 2, 1], "paper": [1] * 8}[mode]
    shapes = [(32, 8, 8), (32, 8, 8), (32, 4, 4), (32, 4, 4), (32, 2, 2), (32, 2, 2), (32, 1, 1), (32, 1, 1)]
    down = [torch.full((BATCH * FRAMES, *shape), 0.25 * (i + 1)) for i, shape in enumerate(shapes)]
    mid = torch.full((BATCH * FRAMES, 32, 1, 1), -0.5)

    def run(**residuals):
        skips, hidden = [], []

        def grab(_module, args, kwargs):
            skips[:0] = list(kwargs["res_hidden_states_tuple"])  # up blocks read the skips from the end
            hidden.append(kwargs["hidden_states"])

        with torch.no_grad():
            unet(*base, **pose, **residuals)  # hooks of the UNet are installed now; ours run after them
            handles = [block.register_forward_pre_hook(grab, with_kwargs=True) for block in unet.up_blocks]
            try:
                unet(*base, **pose, **residuals)
            finally:
                for handle in handles:
                    handle.remove()
        return skips, hidden[0]

    plain_skips, plain_mid = run()
    skips, mid_out = run(down_block_additional_residuals=down, mid_block_additional_residual=mid)
    for index, (with_residual, plain) in enumerate(zip(skips, plain_skips, strict=True)):
        torch.testing.assert_close(with_residual - plain, counts[index] * down[index], atol=1e-5, rtol=0)
    torch.testing.assert_close(mid_out - plain_mid, mid.expand_as(mid_out), atol=1e-5, rtol=0)


def test_wrong_number_of_residuals_is_an_error(fresh):
    unet = fresh[0]
    base, _, _ = _split(_inputs())
    with pytest.raises(ValueError, match="expected 8 down residuals"):
        unet(*base, down_block_additional_residuals=[torch.zeros(1)] * 7)


def test_where_the_guidance_enters(random_models):
    _, _, control = random_models
    base, guidance, _ = _split(_inputs(seed=2))
    outputs, handles = _record_outputs([control.conv_in, *control.down_blocks])
    skips_seen = []
    handles.append(control.controlnet_down_blocks[0].register_forward_pre_hook(
        lambda _m, args: skips_seen.append(args[0])))

    def run(**kwargs):
        outputs.clear()
        skips_seen.clear()
        with torch.no_grad():
            control(*base, **kwargs)
        return [out if torch.is_tensor(out) else out[1] for out in outputs], skips_seen[0]

    try:
        plain, plain_skip0 = run()
        _, motion_skip0 = run(sparse_flow=guidance["sparse_flow"], dense_flow=guidance["dense_flow"])
        points, _ = run(point_features=guidance["point_features"], point_mask=guidance["point_mask"])
    finally:
        for handle in handles:
            handle.remove()
    # F_m is added to the conv_in output (skip 0).
    expected = control.controlnet_cond_embedding(guidance["sparse_flow"].flatten(0, 1),
                                                 guidance["dense_flow"].flatten(0, 1))
    torch.testing.assert_close(motion_skip0 - plain_skip0, expected.detach(), atol=1e-5, rtol=1e-5)
    # F_c^0 is added after down block 0: that block's own skips are unchanged, the next block's are not.
    assert all(torch.equal(a, b) for a, b in zip(points[1], plain[1], strict=True))
    assert not torch.allclose(points[2][0], plain[2][0])


class _RecordingHook(ModelHook):
    def __init__(self):
        self.calls = 0

    def pre_forward(self, module, *args, **kwargs):
        self.calls += 1
        return args, kwargs


def test_encoded_guidance_is_reused_and_shared_by_the_batch(random_models):
    _, _, control = random_models
    base, guidance, _ = _split(_inputs(seed=6))
    one = {key: value[:1].expand_as(value) for key, value in guidance.items()}  # both batch elements alike
    with torch.no_grad():
        down, mid = control(*base, **one)
        encoded = control.encode_guidance(**{key: value[0] for key, value in guidance.items()})
        assert encoded.levels == {}
        for _ in range(2):  # the second call reuses the point features of the first
            reused_down, reused_mid = control(*base, guidance=encoded)
            assert sorted(encoded.levels) == [0, 1, 2, 3]
            # Same maths; the point MLPs multiply fewer rows, so float rounding may differ a little.
            for ours, theirs in zip((*reused_down, reused_mid), (*down, mid), strict=True):
                torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    hook = _RecordingHook()  # model CPU offload moves the ControlNet in when encode_guidance is called
    add_hook_to_module(control, hook)
    try:
        control.encode_guidance(**{key: value[0] for key, value in guidance.items()})
    finally:
        remove_hook_from_module(control)
    assert hook.calls == 1
    with pytest.raises(ValueError, match="not both"):
        control(*base, guidance=encoded, sparse_flow=guidance["sparse_flow"])
    with pytest.raises(ValueError, match="covers 2 frames"):
        control(*base, guidance=control.encode_guidance(**{k: v[0, :2] for k, v in guidance.items()}))


def test_conditioning_scale_scales_every_residual(random_models):
    _, _, control = random_models
    base, guidance, _ = _split(_inputs())
    with torch.no_grad():
        down, mid = control(*base, **guidance)
        half_down, half_mid = control(*base, **guidance, conditioning_scale=0.5)
    for full, half in zip((*down, mid), (*half_down, half_mid)):
        torch.testing.assert_close(half, full * 0.5)


def test_gradients_reach_only_the_trainable_parts(random_models):
    unet, pose_net, control = random_models
    for module in (unet, pose_net):
        module.requires_grad_(False)
    control.requires_grad_(True)
    vae = AutoencoderKLTemporalDecoder(block_out_channels=(32,) * 4,
                                       down_block_types=("DownEncoderBlock2D",) * 4,
                                       layers_per_block=1, latent_channels=4).requires_grad_(False)
    control.zero_grad(set_to_none=True)
    inputs = _inputs(seed=4)
    base, guidance, _ = _split(inputs)
    reference = vae.encode(torch.rand(BATCH, 3, SIZE, SIZE) * 2 - 1).latent_dist.mode()
    sample = torch.cat([base[0][:, :, :4], reference[:, None].expand(-1, FRAMES, -1, -1, -1)], dim=2)
    pose = pose_net(torch.rand(BATCH * FRAMES, 3, SIZE, SIZE) * 2 - 1)
    down, mid = control(sample, *base[1:], **guidance)
    out = unet(sample, *base[1:], pose_latents=pose, down_block_additional_residuals=down,
               mid_block_additional_residual=mid, return_dict=False)[0]
    out.square().mean().backward()

    for name, module in (("UNet", unet), ("PoseNet", pose_net), ("VAE", vae)):
        assert all(p.grad is None for p in module.parameters()), name
    parts = {"motion encoder": control.controlnet_cond_embedding, "conv_in": control.conv_in,
             "down blocks": control.down_blocks, "mid block": control.mid_block,
             "zero convs": control.controlnet_down_blocks, "mid zero conv": control.controlnet_mid_block}
    parts.update({f"point MLP {level}": mlp for level, mlp in enumerate(control.point_adapter.model_list)})
    for name, module in parts.items():
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name
    control.zero_grad(set_to_none=True)
    control.requires_grad_(False)


def test_bfloat16_forward(random_models):
    """bfloat16 residuals within twice the error of bfloat16 rounding emulated in float32 (tests/precision.py:
    the bound follows from the dtype's unit roundoff and this network, not from one CPU's kernels)."""
    _, _, control = random_models
    base, guidance, _ = _split(_inputs())
    half = HybridControlNetSVD.from_unet(random_models[0], point_channels=DIFT_CHANNELS)
    half.load_state_dict(control.state_dict())
    torch.nn.Module.to(half, dtype=torch.bfloat16)

    def run(model, dtype):
        with torch.no_grad():
            down, mid = model(*(t.to(dtype) if t.is_floating_point() else t for t in base),
                              **{k: v.to(dtype) for k, v in guidance.items()})
        return (*down, mid)

    reference = run(control, torch.float32)
    emulation = run(emulated(control, torch.bfloat16), torch.float32)
    ours = run(half, torch.bfloat16)
    assert ours[-1].dtype == torch.bfloat16
    for low, rounding, exact in zip(ours, emulation, reference, strict=True):
        assert mean_error(low, exact) <= HALF_PRECISION_FACTOR * mean_error(rounding, exact)
