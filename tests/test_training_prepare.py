"""``dispose prepare`` on the shared clips: manifest and shards, resume, failed clips, input lists, refusals,
several launched processes.

CPU only: MediaPipe poses, OpenCV DIS flow, DIFT from the tiny random SD1.5 of dispose.bases.mimicmotion.tiny.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from launch import torchrun
from PIL import Image
from safetensors.numpy import load_file

from dispose.bases.mimicmotion.tiny import build_tiny_weights
from dispose.cli import main
from dispose.guidance.tiny import DIFT_CHANNELS
from dispose.media.video import read_video
from dispose.training import shard
from dispose.training.sources import list_clips, read_clip

SIZE = (128, 192)
FRAMES = 16
REFERENCES = 2
CLIPS = ["animatex_ubc_fashion", "corrupt", "moore_pose_video2_kps", "musepose_dance"]


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    return build_tiny_weights(tmp_path_factory.mktemp("weights")) / "stable-diffusion-v1-5"


@pytest.fixture(scope="module")
def videos(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    for name in ("musepose_dance.mp4", "animatex_ubc_fashion.mp4", "moore_pose_video2_kps.mp4"):
        (folder / name).symlink_to(shared_data / name)
    (folder / "corrupt.mp4").write_bytes((shared_data / "musepose_dance.mp4").read_bytes()[:4000])
    return folder


def _prepare(videos, out, sd15, *extra: str) -> int:
    return main(["prepare", str(videos), "--out", str(out), "--size", f"{SIZE[0]}x{SIZE[1]}", "--max-frames",
                 str(FRAMES), "--references", str(REFERENCES), "--sd15", str(sd15), "--device", "cpu",
                 "--no-progress", "--detector", "mediapipe", *extra])


@pytest.fixture(scope="module")
def prepared(videos, sd15, tmp_path_factory):
    """The dataset one process writes, on one torch thread as each launched process runs (torchrun sets
    OMP_NUM_THREADS=1): float reductions split over threads round differently, and the two-process test
    compares bytes."""
    out = tmp_path_factory.mktemp("dataset")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _prepare(videos, out, sd15) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_manifest_records_every_clip_with_its_quality(prepared, shared_data) -> None:
    records = {r["id"]: r for r in shard.read_manifest(prepared)}
    assert sorted(records) == CLIPS
    for name in ("musepose_dance", "animatex_ubc_fashion"):
        record = records[name]
        assert record["status"] == "ok" and record["reason"] is None
        assert record["frames"] == FRAMES and record["size"] == list(SIZE)
        video = read_video(shared_data / f"{name}.mp4", sample_stride=2, max_frames=FRAMES)
        assert record["stride"] == video.stride and record["fps"] == pytest.approx(video.fps, abs=1e-3)
        assert record["source_size"] == [video.width, video.height]
        digest = hashlib.sha256((shared_data / f"{name}.mp4").read_bytes()).hexdigest()
        assert record["fingerprint"] == {"size": (shared_data / f"{name}.mp4").stat().st_size,
                                         "sha256": digest}
        assert record["pose"]["people"] == 1 and record["pose"]["visible_fraction"] > 0.5
        assert 0.3 < record["pose"]["mean_score"] <= 1
        assert record["flow"]["model"].startswith("OpenCV DIS") and record["detector"] == "mediapipe"
        assert record["dift"].startswith("SD1.5")
        assert record["references"] == [0, FRAMES - 1]  # spread over the clip
        assert record["bytes"] > 0
    assert records["moore_pose_video2_kps"]["status"] == "failed"
    assert "no person" in records["moore_pose_video2_kps"]["reason"]
    assert records["corrupt"]["status"] == "failed" and "corrupt.mp4" in records["corrupt"]["reason"]


def test_shards_hold_frames_poses_flows_and_embeddings(prepared) -> None:
    folder = shard.clip_dir(prepared, "musepose_dance")
    record = shard.read_record(folder)
    assert set(record["files"]) == {"frames.safetensors", "poses.json", "flows.safetensors",
                                    "dift.safetensors"}
    frames = load_file(folder / "frames.safetensors")
    assert len(frames["offsets"]) == FRAMES + 1
    first = shard.decode_jpeg(frames["jpeg"][frames["offsets"][0]:frames["offsets"][1]])
    assert first.shape == (SIZE[1], SIZE[0], 3)
    poses = json.loads((folder / "poses.json").read_text())
    assert (poses["width"], poses["height"], len(poses["frames"])) == (*SIZE, FRAMES)
    flows = load_file(folder / "flows.safetensors")
    references = record["record"]["references"]
    assert flows["flow"].shape == (len(references), FRAMES, 2, SIZE[1] // 4, SIZE[0] // 4)
    assert flows["flow"].dtype == np.float16 and np.isfinite(flows["flow"]).all()
    for r, ref in enumerate(references):
        assert not flows["flow"][r, ref].any()  # a frame does not move relative to itself
    assert flows["watershed_offsets"][-1] == len(flows["watershed_points"]) == len(flows["watershed_vectors"])
    points = flows["watershed_points"]
    assert ((points >= 0) & (points < np.array(SIZE))).all()
    embeddings = load_file(folder / "dift.safetensors")["point_embeddings"]
    assert embeddings.shape == (len(references), 18, DIFT_CHANNELS) and embeddings.any()
    assert not (shard.clip_dir(prepared, "corrupt") / "frames.safetensors").exists()


def test_two_launched_processes_write_what_one_process_writes(prepared, videos, sd15, tmp_path) -> None:
    out = tmp_path / "distributed"
    done = torchrun(2, "-m", "dispose.cli", "prepare", str(videos), "--out", str(out), "--size",
                    f"{SIZE[0]}x{SIZE[1]}", "--max-frames", str(FRAMES), "--references", str(REFERENCES),
                    "--sd15", str(sd15), "--device", "cpu", "--no-progress", "--detector", "mediapipe")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(process 0 of 2): 0 already prepared, 2 to do" in done.stdout  # the world size obtained
    assert "(process 1 of 2): 0 already prepared, 2 to do" in done.stdout

    def without_timing(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert without_timing(shard.read_manifest(out)) == without_timing(shard.read_manifest(prepared))
    for clip in CLIPS:
        ours, theirs = shard.clip_dir(out, clip), shard.clip_dir(prepared, clip)
        names = sorted(p.name for p in theirs.iterdir() if p.name != shard.RECORD)
        assert sorted(p.name for p in ours.iterdir() if p.name != shard.RECORD) == names
        for name in names:
            if name.endswith(".safetensors"):  # the header's key order varies between processes
                assert _tensors(ours / name) == _tensors(theirs / name), (clip, name)
            else:
                assert (ours / name).read_bytes() == (theirs / name).read_bytes(), (clip, name)


def _tensors(path) -> tuple[dict, dict]:
    """Metadata and tensors (as bytes) of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as handle:
        names = handle.keys()
        return handle.metadata(), {key: handle.get_tensor(key).tobytes() for key in names}


def test_rerun_skips_finished_clips_and_redoes_an_interrupted_one(prepared, videos, sd15, capsys) -> None:
    stamps = {c: (shard.clip_dir(prepared, c) / shard.RECORD).stat().st_mtime_ns for c in CLIPS}
    (shard.clip_dir(prepared, "animatex_ubc_fashion") / shard.RECORD).unlink()  # as if killed before the end
    capsys.readouterr()
    assert _prepare(videos, prepared, sd15) == 0
    out = capsys.readouterr().out
    assert "4 clip(s): 3 already prepared, 1 to do" in out and "2 of 4 clip(s) prepared" in out
    for clip in ("corrupt", "moore_pose_video2_kps", "musepose_dance"):
        assert (shard.clip_dir(prepared, clip) / shard.RECORD).stat().st_mtime_ns == stamps[clip]
    assert shard.read_record(shard.clip_dir(prepared, "animatex_ubc_fashion"))["record"]["status"] == "ok"
    assert [r["id"] for r in shard.read_manifest(prepared)] == CLIPS


def test_other_settings_on_an_existing_dataset_are_refused(prepared, videos, sd15, capsys) -> None:
    assert _prepare(videos, prepared, sd15, "--nms-kernel", "21") == 2
    assert "prepared with other settings" in capsys.readouterr().err


def test_dift_needs_sd15_or_an_explicit_no_dift(videos, tmp_path, capsys) -> None:
    code = main(["prepare", str(videos), "--out", str(tmp_path / "out"), "--no-progress", "--detector",
                 "mediapipe"])
    assert code == 2 and "--sd15" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_dwpose_is_the_default_and_its_absence_names_mediapipe(videos, tmp_path, capsys) -> None:
    code = main(["prepare", str(videos), "--out", str(tmp_path / "out"), "--no-dift", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--detector mediapipe" in err and "hand" in err and not (tmp_path / "out").exists()


def test_an_id_that_is_not_one_folder_name_is_refused(shared_data, tmp_path, capsys) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "list.jsonl").write_text(json.dumps({"path": str(shared_data / "musepose_dance.mp4"),
                                                "id": "../../escape"}) + "\n")
    code = main(["prepare", str(work / "list.jsonl"), "--out", str(work / "ds"), "--no-dift", "--detector",
                 "mediapipe", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'../../escape'" in err and "line 1" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["list.jsonl", "work"]  # nothing written anywhere


def test_a_refused_run_leaves_no_folder(videos, tmp_path, capsys) -> None:
    (tmp_path / "raft.pth").write_text("not a checkpoint")
    code = main(["prepare", str(videos), "--out", str(tmp_path / "out"), "--no-dift", "--detector",
                 "mediapipe", "--raft", str(tmp_path / "raft.pth"), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "raft.pth" in err
    assert not (tmp_path / "out").exists()


def test_lists_videos_frame_folders_and_path_lists(shared_data, tmp_path) -> None:
    video = read_video(shared_data / "musepose_dance.mp4", sample_stride=1, max_frames=5)
    tiktok = tmp_path / "TikTok"
    for clip in ("00001", "00002"):
        (tiktok / clip / "images").mkdir(parents=True)
        for i, frame in enumerate(video.frames):
            Image.fromarray(frame[::8, ::8]).save(tiktok / clip / "images" / f"{i:04d}.png")
    shutil.copy(shared_data / "musepose_dance.mp4", tiktok / "extra.mp4")
    clips = list_clips(tiktok)
    assert sorted((c.id, c.kind) for c in clips) == [("00001", "frames"), ("00002", "frames"),
                                                     ("extra", "video")]
    frames = read_clip(next(c for c in clips if c.id == "00001"), sample_stride=2, max_frames=None)
    # 30 fps folder, every 2nd frame
    assert len(frames.frames) == 3 and frames.stride == 2 and frames.fps == 15
    (tmp_path / "list.txt").write_text("# clips\nTikTok/00002/images\n\nTikTok/extra.mp4\n")
    assert [c.id for c in list_clips(tmp_path / "list.txt")] == ["TikTok__00002", "TikTok__extra"]
    (tmp_path / "list.jsonl").write_text(
        json.dumps({"path": str(tiktok / "extra.mp4"), "id": "dance"}) + "\n")
    assert [(c.id, c.path) for c in list_clips(tmp_path / "list.jsonl")] == [("dance", tiktok / "extra.mp4")]


def test_worker_processes_record_every_clip(shared_data, tmp_path, capsys) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "skeleton.mp4").symlink_to(shared_data / "moore_pose_video2_kps.mp4")
    (videos / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    assert main(["prepare", str(videos), "--out", str(out), "--workers", "2", "--no-dift",
                 "--max-frames", "16", "--size", "128x192", "--device", "cpu", "--no-progress",
                 "--detector", "mediapipe"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "every clip failed" in err and "manifest.jsonl" in err
    records = {r["id"]: r for r in shard.read_manifest(out)}
    assert {k: r["status"] for k, r in records.items()} == {"broken": "failed", "skeleton": "failed"}
    assert "no person" in records["skeleton"]["reason"] and "broken.mp4" in records["broken"]["reason"]


def test_raft_flow_keeps_the_frame_size(shared_data, tmp_path) -> None:
    import torch

    from dispose.evaluation.raft import RAFT
    from dispose.training.flow_estimators import RaftFlowEstimator, load_flow_estimator

    torch.manual_seed(0)
    torch.save(RAFT().state_dict(), tmp_path / "raft-things.pth")
    assert (load_flow_estimator(tmp_path / "raft-things.pth", "cpu")[1]
            == "RAFT (raft-things.pth, 20 iterations)")
    # not multiples of 8
    frames = read_video(shared_data / "musepose_dance.mp4", max_frames=2).frames[:, :133, :130]
    flow = RaftFlowEstimator(tmp_path / "raft-things.pth", iters=2)(frames[0], frames[1])
    assert flow.shape == (133, 130, 2) and np.isfinite(flow).all()
