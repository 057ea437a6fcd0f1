"""Job settings, YAML job files (ours and the release's test.yaml), sharding and the sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dispose.errors import UserError
from dispose.jobs import Sidecar, build_jobs, load_job_file, shard, sidecar_path
from dispose.settings import JobSettings

RELEASE_YAML = """\
base_model_path: ./pretrained_weights/stable-video-diffusion-img2vid-xt-1-1
dift_model_path: ./pretrained_weights/stable-diffusion-v1-5
ckpt_path: ./pretrained_weights/MimicMotion_1-1.pth
controlnet_path: ./pretrained_weights/DisPose.pth
test_case:
  - ref_video_path: ./videos/video1.mp4
    ref_image_path: ./images/ref1.png
    num_frames: 16
    resolution: 576
    frames_overlap: 6
    num_inference_steps: 25
    noise_aug_strength: 0
    guidance_scale: 2.0
    sample_stride: 2
    decode_chunk_size: 8
    fps: 15
    seed: 42
  - ref_video_path: ./videos/video2.mp4
    ref_image_path: ./images/ref2.png
    seed: 7
"""


def test_defaults_are_release_test_settings():
    job = JobSettings()
    assert (job.resolution, job.num_frames, job.frames_overlap, job.num_inference_steps, job.guidance_scale,
            job.sample_stride, job.fps, job.noise_aug_strength, job.decode_chunk_size, job.seed) == (
        576, 16, 6, 25, 2.0, 2, 15, 0.0, 8, 42)
    assert job.conditioning_fps == 7 and job.motion_bucket_id == 127
    assert job.guidance_range == (2.0, 2.0)


def test_release_job_file(tmp_path):
    path = tmp_path / "test.yaml"
    path.write_text(RELEASE_YAML)
    jobs, weights = load_job_file(path)
    assert [j.ref for j in jobs] == [tmp_path / "images/ref1.png", tmp_path / "images/ref2.png"]
    assert jobs[1].seed == 7 and jobs[1].num_inference_steps == 25
    assert weights["dispose"].endswith("pretrained_weights/DisPose.pth")
    assert set(weights) == {"svd", "sd15", "mimicmotion", "dispose"}


def test_build_jobs_precedence_and_outputs(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text("defaults: {seed: 3, num_inference_steps: 10}\n"
                    "jobs:\n  - {ref: a.png, driving: d.mp4}\n"
                    "  - {ref: b.png, driving: d.mp4, seed: 9, out: x.mp4}\n")
    jobs, _ = build_jobs(path, {"num_inference_steps": 4, "seed": None}, tmp_path / "outs")
    assert [j.seed for j in jobs] == [3, 9]
    assert all(j.num_inference_steps == 4 for j in jobs)
    assert jobs[0].out == tmp_path / "outs" / "a_to_d.mp4"
    assert jobs[1].out == tmp_path / "outs" / "x.mp4"  # a relative out: is relative to --out when given
    jobs, _ = load_job_file(path)
    assert jobs[1].out == tmp_path / "x.mp4"  # ... and to the job file without it


def test_single_job_from_options(tmp_path):
    jobs, _ = build_jobs(None, {"ref": Path("r.png"), "driving": Path("d.mp4"), "baseline": True},
                         tmp_path / "o.mp4")
    assert len(jobs) == 1 and jobs[0].out == tmp_path / "o.mp4" and jobs[0].baseline


@pytest.mark.parametrize(("text", "match"), [
    ("jobs: []\n", "non-empty list"),
    ("jobs:\n  - {ref: a.png, driving: d.mp4, colour: red}\n", "unknown setting 'colour'"),
    ("jobs:\n  - {ref: a.png, driving: d.mp4, resolution: 500}\n", "resolution: 500.*nearest: 448 or 512"),
    ("jobs:\n  - {ref: a.png}\n", "driving video"),
    ("weights: x\njobs:\n  - {ref: a.png, driving: d.mp4}\n", "unknown top-level"),
    ("jobs: [\n", "not valid YAML"),
])
def test_bad_job_files(tmp_path, text, match):
    path = tmp_path / "jobs.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=match):
        build_jobs(path, {}, tmp_path / "outs")


def test_duplicate_outputs_and_missing_out(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text("jobs:\n  - {ref: a.png, driving: d.mp4}\n  - {ref: a.png, driving: d.mp4, seed: 2}\n")
    with pytest.raises(UserError, match="same output"):
        build_jobs(path, {}, tmp_path / "outs")
    with pytest.raises(UserError, match="pass --out"):
        build_jobs(None, {"ref": Path("r.png"), "driving": Path("d.mp4")}, None)
    with pytest.raises(UserError, match="is a file"):
        build_jobs(path, {}, tmp_path / "one.mp4")


def test_shard_round_robin():
    jobs = [JobSettings(seed=i) for i in range(5)]
    assert [j.seed for j in shard(jobs, 1, 2)] == [1, 3]
    assert sum(len(shard(jobs, i, 3)) for i in range(3)) == 5
    with pytest.raises(ValueError):
        shard(jobs, 2, 2)


def test_sidecar_is_json_with_everything(tmp_path):
    out = tmp_path / "v.mp4"
    job = JobSettings(ref=Path("r.png"), driving=Path("d.mp4"), out=out, seed=5)
    Sidecar(job=job, runtime={"device": "cpu"}, weights={"svd": {"path": "x"}}).write(sidecar_path(out))
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["seed"] == 5 and data["job"]["out"] == str(out) and data["runtime"]["device"] == "cpu"
    assert data["format"] == "dispose-animate-v1"
