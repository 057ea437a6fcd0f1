"""``dispose animate --config`` under torchrun on CPU processes: every process animates its own share of the
jobs (accelerate reports the other CPU processes only when asked for a CPU state)."""

from __future__ import annotations

import json

from launch import torchrun


def test_two_cpu_processes_share_the_jobs(tiny_weights, shared_data, tmp_path) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(json.dumps({"jobs": [
        {"ref": str(shared_data / "musepose_ref.png"), "driving": str(shared_data / "musepose_dance.mp4"),
         "out": f"job{index}.mp4", "seed": index} for index in range(2)]}))
    out = tmp_path / "out"
    done = torchrun(2, "-m", "dispose.cli", "animate", "--config", str(jobs), "--out", str(out),
                    "--weights", str(tiny_weights), "--detector", "mediapipe", "--dense", "propagate",
                    "--resolution", "128", "--steps", "1", "--max-frames", "2", "--device", "cpu",
                    "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    written = [line for line in done.stderr.splitlines() if line.startswith("wrote ")]
    # once each, not twice
    assert sorted(written) == [f"wrote {out / 'job0.mp4'}", f"wrote {out / 'job1.mp4'}"]
    assert (out / "job0.mp4").is_file() and (out / "job1.mp4").is_file()
