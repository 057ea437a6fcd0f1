"""``dispose eval`` reads videos frame by frame: memory does not grow with length, progress moves inside a
video, streamed values equal the whole-video definitions, and rotation tags are honoured."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from dispose.cli import main
from dispose.evaluation import frame_metrics, fvd, suite, vbench
from dispose.evaluation.suite import EvalSettings, evaluate
from dispose.evaluation.videos import pair_inputs, read_frames

STREAMED = ["ssim", "l1", "temporal_flickering", "dynamic_degree_dis", "subject_consistency", "cd_fvd"]


def _write(path: Path, frames: np.ndarray, fps: int = 8, rotation: int = 0) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _moving(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), (0, 0), 2)
    return np.stack([np.roll(base, 2 * i, axis=1) for i in range(count)])


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from dispose.evaluation.dino import DinoViT
    from dispose.evaluation.videomae import VideoMAEv2

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(DinoViT(dim=64, depth=1, heads=1).state_dict(), folder / "dino_vitbase16_tiny.pth")
    videomae = dict(VideoMAEv2(dim=64, depth=1, heads=1, hidden=128).state_dict())
    torch.save({"module": videomae | {"head.weight": torch.zeros(174, 64), "head.bias": torch.zeros(174)}},
               folder / "vit_g_hybrid_pt_1200e_ssv2_ft.pth")
    return folder


def _pairs(root: Path, count: int) -> list[tuple[str, Path, Path]]:
    for side, seed in (("pred", 1), ("gt", 2)):
        (root / side).mkdir(parents=True)
        for name in ("a", "b"):
            _write(root / side / f"{name}.mp4", _moving(count, seed + (name == "b")))
    return pair_inputs([root / "pred"], [root / "gt"])


def _held_frames(monkeypatch, pairs, weights: Path) -> tuple[int, dict]:
    """Most frames read from the videos that were alive at once during an evaluation, and the report."""
    alive, most = [0], [0]
    original = suite.stream

    def tracked(*args, **kwargs):
        for frame in original(*args, **kwargs):
            alive[0] += 1
            most[0] = max(most[0], alive[0])
            weakref.finalize(frame, lambda: alive.__setitem__(0, alive[0] - 1))
            yield frame

    monkeypatch.setattr(suite, "stream", tracked)
    settings = EvalSettings(metrics=tuple(STREAMED), clip_frames=16, progress=False)
    report = evaluate(pairs, settings, suite.find_weights(weights))
    return most[0], report


def test_frames_held_do_not_grow_with_video_length(tmp_path: Path, monkeypatch, weights: Path) -> None:
    held, report = _held_frames(monkeypatch, _pairs(tmp_path, 64), weights)
    assert report["skipped"] == {} and report["frechet_samples"]["cd_fvd"]["pred"] == 2 * (64 // 16)
    # of the 128 frames of a pair: one 16-frame clip and one 8-frame batch per side
    assert held <= 2 * (16 + 8)


def test_streamed_values_equal_whole_video_definitions(tmp_path: Path, weights: Path) -> None:
    from dispose.evaluation.dino import load_dino
    from dispose.evaluation.videomae import load_videomae

    pairs = _pairs(tmp_path, 20)
    report = evaluate(pairs, EvalSettings(metrics=tuple(STREAMED), clip_frames=9, clip_stride=5,
                                          progress=False),
                      suite.find_weights(weights))
    pred, gt = read_frames(pairs[0][1]), read_frames(pairs[0][2])
    values = report["videos"][0]["metrics"]
    assert values["ssim"] == pytest.approx(np.mean([frame_metrics.ssim(a, b)
                                                    for a, b in zip(pred, gt, strict=True)]))
    assert values["temporal_flickering"] == pytest.approx(
        (255 - np.abs(np.diff(pred.astype(np.float64), axis=0)).mean()) / 255, abs=1e-12)
    assert values["dynamic_degree_dis"] == vbench.dynamic_degree_dis(pred, 8.0)
    dino = load_dino(next(weights.glob("dino*")))
    assert values["subject_consistency"] == pytest.approx(vbench.subject_consistency(dino, pred), abs=1e-6)
    videomae = load_videomae(weights / "vit_g_hybrid_pt_1200e_ssv2_ft.pth")

    # clips of 9 frames starting every 5 frames, one at a time
    def clips(path: Path) -> dict[str, np.ndarray]:
        frames = read_frames(path)
        return {"videomae": np.concatenate([
            fvd.clip_features(frames[s:s + 9], videomae=videomae, clip_frames=9)["videomae"]
            for s in (0, 5, 10)])}

    expected = fvd.cd_fvd([clips(p) for _, p, _ in pairs], [clips(g) for _, _, g in pairs])
    assert report["aggregate"]["cd_fvd"] == pytest.approx(expected, rel=1e-5)


def test_progress_moves_inside_a_video(tmp_path: Path, capsys) -> None:
    frames = _moving(24, 3)
    _write(tmp_path / "x.mp4", frames)
    _write(tmp_path / "y.mp4", frames)
    assert main(["eval", "--pred", str(tmp_path / "x.mp4"), "--gt", str(tmp_path / "y.mp4"), "--out",
                 str(tmp_path / "r.json"), "--metrics", "l1", "temporal_flickering"]) == 0
    err = capsys.readouterr().err
    assert "x: " in err and "/24" in err and "frame" in err  # a bar over the video's frames, named after it


def test_rotation_tag_is_honoured(tmp_path: Path) -> None:
    stored = _moving(6, 4)
    _write(tmp_path / "phone.mp4", stored, rotation=90)  # displayed turned 90 degrees counterclockwise
    upright = tmp_path / "upright"
    upright.mkdir()
    for index, frame in enumerate(np.rot90(stored, 1, axes=(1, 2))):
        cv2.imwrite(str(upright / f"{index:03d}.png"),
                    cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
    out = tmp_path / "r.json"
    assert main(["eval", "--pred", str(tmp_path / "phone.mp4"), "--gt", str(upright), "--out", str(out),
                 "--no-progress", "--metrics", "l1"]) == 0
    report = json.loads(out.read_text())
    assert report["videos"][0]["size"] == [64, 96] and report["aggregate"]["l1"] < 0.01  # YUV rounding only
