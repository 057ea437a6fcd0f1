"""Frame metrics (SSIM/PSNR/L1 vs scikit-image), LPIPS, Fréchet distance and VBench rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from dispose.errors import UserError
from dispose.evaluation import frame_metrics, vbench
from dispose.evaluation.frechet import feature_statistics, frechet_distance, frechet_distance_features
from dispose.evaluation.lpips import LPIPS, load_lpips, lpips_distance
from dispose.evaluation.videos import read_frames

skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is the reference for SSIM/PSNR")


@pytest.fixture(scope="module")
def real_frames(shared_data) -> np.ndarray:
    return read_frames(shared_data / "musepose_dance.mp4", (72, 128), 1, 6)


def _pairs(real_frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    random = [(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8),
               rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))]
    noisy = np.clip(real_frames[0].astype(int) + rng.integers(-20, 21, real_frames[0].shape),
                    0, 255).astype(np.uint8)
    return random + [(real_frames[0], real_frames[3]), (real_frames[1], noisy)]


def test_ssim_psnr_l1_match_skimage(real_frames: np.ndarray) -> None:
    for a, b in _pairs(real_frames):
        x, y = a / 255.0, b / 255.0
        expected_ssim = skimage_metrics.structural_similarity(x, y, channel_axis=2, data_range=1.0)
        assert frame_metrics.ssim(a, b) == pytest.approx(expected_ssim, abs=1e-9)
        assert frame_metrics.psnr(a, b) == pytest.approx(
            skimage_metrics.peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)
        assert frame_metrics.l1(a, b) == pytest.approx(np.abs(x - y).mean(), abs=1e-12)


def test_identical_frames(real_frames: np.ndarray) -> None:
    frame = real_frames[2]
    assert frame_metrics.ssim(frame, frame) == pytest.approx(1.0)
    assert math.isinf(frame_metrics.psnr(frame, frame))
    assert frame_metrics.l1(frame, frame) == 0.0
    assert math.isinf(frame_metrics.mean_or_inf([30.0, math.inf]))


def test_frame_metric_bad_input(real_frames: np.ndarray) -> None:
    with pytest.raises(ValueError, match="differ in size"):
        frame_metrics.ssim(real_frames[0], real_frames[0][:-1])
    with pytest.raises(ValueError, match="uint8"):
        frame_metrics.l1(real_frames[0].astype(np.float32), real_frames[0].astype(np.float32))


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_random_backbone(net: str, real_frames: np.ndarray) -> None:
    torch.manual_seed(0)
    model = LPIPS(net).eval()
    for lin in model.lins:
        torch.nn.init.uniform_(lin.weight, 0.0, 1.0)
    frames = real_frames[:2]
    assert lpips_distance(model, frames, frames) == pytest.approx([0.0, 0.0], abs=1e-7)
    other = lpips_distance(model, frames, frames[::-1].copy())
    assert all(d > 0 for d in other)


def test_lpips_loads_torchvision_and_lpips_files_strictly(tmp_path) -> None:
    source = LPIPS("alex")
    backbone = {f"features.{k}": v for k, v in source.features.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(2, 2)  # torchvision files carry the unused classifier
    heads = {f"lin{i}.model.1.weight": torch.rand_like(lin.weight) for i, lin in enumerate(source.lins)}
    torch.save(backbone, tmp_path / "alexnet.pth")
    torch.save(heads, tmp_path / "alex.pth")
    model = load_lpips(tmp_path / "alexnet.pth", tmp_path / "alex.pth", "alex")
    assert torch.equal(model.lins[3].weight, heads["lin3.model.1.weight"])
    assert torch.equal(model.features[3].weight, source.features[3].weight)
    del backbone["features.8.bias"]
    torch.save(backbone, tmp_path / "broken.pth")
    with pytest.raises(UserError, match=r"broken\.pth is not a torchvision alexnet state dict: "
                                        r"1 missing keys \(features\.8\.bias\)$"):
        load_lpips(tmp_path / "broken.pth", tmp_path / "alex.pth", "alex")
    with pytest.raises(UserError, match="linear-head"):
        load_lpips(tmp_path / "alexnet.pth", tmp_path / "alexnet.pth", "alex")


def test_frechet_matches_direct_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 12)), rng.normal(0.3, 1.5, size=(150, 12)) @ rng.normal(size=(12, 12))
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(linalg.sqrtm(s1 @ s2)))
    assert frechet_distance_features(a, b) == pytest.approx(direct, rel=1e-8)
    assert frechet_distance_features(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = np.array([3.0, 4.0] + [0.0] * 10)
    assert frechet_distance_features(a, a + shift) == pytest.approx(25.0, rel=1e-8)
    mu, sigma = feature_statistics(a)
    assert frechet_distance(mu, sigma, mu + 1, sigma) == pytest.approx(12.0, rel=1e-8)
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(a[:1])


def test_temporal_flickering_definition() -> None:
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    assert vbench.temporal_flickering(frames) == 1.0
    frames[1] = 51  # |diff| 51 for both pairs
    assert vbench.temporal_flickering(frames) == pytest.approx((255 - 51) / 255)


def test_dynamic_degree_dis_static_and_moving() -> None:
    rng = np.random.default_rng(2)
    texture = cv2_blur(rng.integers(0, 256, (256, 320, 3), dtype=np.uint8))
    static = np.stack([texture] * 16)
    moving = np.stack([np.roll(texture, 12 * i, axis=1) for i in range(16)])
    assert vbench.dynamic_degree_dis(static, fps=8.0) == 0.0
    assert vbench.dynamic_degree_dis(moving, fps=8.0) == 1.0
    assert "--amt" in vbench.skip_reason("motion_smoothness")
    assert "--dino" in vbench.skip_reason("subject_consistency")


def cv2_blur(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(image, (0, 0), 2.0)


def _tiny_dino(tmp_path, name: str = "dino_vitbase16_pretrain.pth"):
    from dispose.evaluation.dino import DinoViT

    torch.manual_seed(0)
    model = DinoViT(dim=64, depth=2, heads=1, patch=16, grid=14).eval()
    torch.nn.init.normal_(model.pos_embed, std=0.02)
    torch.save(model.state_dict(), tmp_path / name)
    return model, tmp_path / name


def test_dino_loader_and_subject_consistency(tmp_path, real_frames: np.ndarray) -> None:
    from dispose.evaluation.dino import load_dino

    source, path = _tiny_dino(tmp_path)
    model = load_dino(path)
    assert len(model.blocks) == 2 and model.blocks[0].attn.heads == 1
    x = vbench.dino_input(real_frames[:2])  # 128x72 frames: short side (width) -> 224
    assert x.shape == (2, 3, 398, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), source(x)) and model(x).shape == (2, 64)
    still = np.stack([real_frames[0]] * 4)
    assert vbench.subject_consistency(model, still) == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= vbench.subject_consistency(model, real_frames) <= 1.0
    state = torch.load(path, weights_only=True)
    del state["norm.bias"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(UserError, match="not a DINO"):
        load_dino(tmp_path / "broken.pth")


def test_raft_loader_and_dynamic_degree(tmp_path) -> None:
    from dispose.evaluation.raft import RAFT, load_raft, pad_to_8

    torch.manual_seed(0)
    source = RAFT().eval()
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "raft-things.pth")
    model = load_raft(tmp_path / "raft-things.pth")
    a, b = pad_to_8(torch.rand(1, 3, 125, 130) * 255, torch.rand(1, 3, 125, 130) * 255)
    assert a.shape == (1, 3, 128, 136)
    with torch.no_grad():
        flow = model(a, b, iters=2)
        assert flow.shape == (1, 2, 128, 136) and torch.isfinite(flow).all()
        assert torch.allclose(flow, source(a, b, iters=2))
        with pytest.raises(ValueError, match="at least 128"):
            model(a[..., :64], b[..., :64])
    frames = np.random.default_rng(0).integers(0, 256, (4, 125, 130, 3), dtype=np.uint8)
    assert vbench.dynamic_degree(model, frames, fps=8.0, iters=2) in (0.0, 1.0)
    state = torch.load(tmp_path / "raft-things.pth", weights_only=True)
    del state["module.update_block.mask.2.bias"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(UserError, match="not a RAFT"):
        load_raft(tmp_path / "broken.pth")


def test_dynamic_degree_rule_matches_current_vbench() -> None:
    frames = np.zeros((16, 64, 96, 3), np.uint8)  # threshold 6 * 64 / 256 = 1.5, no fps factor
    scores = iter([1.6, 0.0, 1.6, 1.6, 1.6] + [0.0] * 10)
    assert vbench._is_dynamic(frames, 8.0, lambda a, b: next(scores)) == 1.0  # 4 of 15 pairs move
    scores = iter([1.4] * 15)  # below 1.5; an fps factor max(1, 8/4) would have set 3.0 at 4 fps
    assert vbench._is_dynamic(frames, 8.0, lambda a, b: next(scores)) == 0.0
    seen = []
    assert vbench._is_dynamic(frames[:2], 8.0, lambda a, b: seen.append(1) or 0.0) == 1.0  # round(0.5) == 0
    assert len(seen) == 1  # VBench's check precedes its count test: the first pair decides
    calls = []
    vbench._is_dynamic(frames[:16], 24.0, lambda a, b: calls.append(1) or 0.0)
    assert len(calls) == 5  # every 3rd frame at 24 fps: 6 frames, 5 pairs


def test_set_score_weighting_and_l1_disco() -> None:
    assert vbench.frame_weighted_mean([1.0, 0.5], [2, 11]) == pytest.approx((1.0 * 1 + 0.5 * 10) / 11)
    a = np.zeros((4, 5, 3), np.uint8)
    b = np.full((4, 5, 3), 10, np.uint8)
    assert frame_metrics.l1_disco(a, b) == pytest.approx(10 / 20)
    assert frame_metrics.l1(a, b) == pytest.approx(10 / 255)


def test_vbench_transforms_resize_float_values() -> None:
    frames = np.random.default_rng(3).integers(0, 256, (2, 90, 160, 3), dtype=np.uint8)
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float()
    expected = torch.nn.functional.interpolate(x, size=(224, 398), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(vbench.dino_input(frames), (expected / 255 - mean) / std, atol=1e-6)
    assert vbench.clip_input(frames).shape == (2, 3, 224, 224)
    big = np.zeros((1, 720, 1280, 3), np.uint8)
    assert vbench.musiq_input(big).shape == (1, 3, 288, 512)  # longer side capped at 512
    assert (vbench.musiq_input(frames).shape == (2, 3, 90, 160)
            and float(vbench.musiq_input(frames).max()) <= 1)


def test_frechet_population_covariance_and_per_video_fid() -> None:
    from dispose.evaluation import fvd

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(40, 6)), rng.normal(0.5, 2.0, size=(30, 6))
    s1, s2 = np.cov(a, rowvar=False, ddof=0), np.cov(b, rowvar=False, ddof=0)
    direct = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * np.real(linalg.sqrtm(s1 @ s2)))
    assert frechet_distance_features(a, b, ddof=0) == pytest.approx(direct, rel=1e-8)
    pred = [{"pool": a[:20], "logits": a[:20], "videomae": a[:20]}, {"pool": a[20:], "logits": a[20:],
                                                                      "videomae": a[20:]}]
    gt = [{"pool": b[:10], "logits": b[:10], "videomae": b[:10]}, {"pool": b[10:], "logits": b[10:],
                                                                   "videomae": b[10:]}]
    per_video = frechet_distance_features(np.stack([a[:20].mean(0), a[20:].mean(0)]),
                                          np.stack([b[:10].mean(0), b[10:].mean(0)]))
    assert fvd.fid_vid(pred, gt) == pytest.approx(per_video)
    assert fvd.fvd(pred, gt) == pytest.approx(frechet_distance_features(a, b))
    assert fvd.cd_fvd(pred, gt) == pytest.approx(direct, rel=1e-8)


def test_frechet_low_rank_shortcut_is_exact() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(6, 50)), rng.normal(0.2, 1.3, size=(9, 50))
    for ddof in (0, 1):
        mu1, s1 = a.mean(0), np.cov(a, rowvar=False, ddof=ddof)
        mu2, s2 = b.mean(0), np.cov(b, rowvar=False, ddof=ddof)
        values, vectors = np.linalg.eigh(s1)
        root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
        product = np.linalg.eigvalsh(root @ s2 @ root)
        trace_sqrt = np.sqrt(product[product > 1e-9 * product.max()]).sum()  # rank <= 5: drop round-off
        exact = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
        assert frechet_distance_features(a, b, ddof) == pytest.approx(exact, rel=1e-9)
        assert frechet_distance_features(a, b, ddof) == pytest.approx(frechet_distance(mu1, s1, mu2, s2),
                                                                      rel=1e-6)
    assert frechet_distance_features(a, a) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="dimension"):
        frechet_distance_features(a, b[:, :10])
