"""Sample ``dispose eval`` report: the shared dancer video against a degraded copy of itself.

Cuts the first 96 frames of ``musepose_dance.mp4`` (24 fps) at 288x512 into three 32-frame videos
(``dance_1..3``: FID-VID needs at least two videos per side) as ground truth, writes a copy of each
with a Gaussian blur (sigma 1.5) plus Gaussian noise (sigma 8 on 0..255) as "generated", then runs
``dispose eval`` on the three pairs and prints the tables.  Usage: ``python bench/eval_sample_report.py
[SHARED_DATA_DIR] [OUT_DIR] [extra dispose eval options, e.g. --weights DIR]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from dispose.cli import main as cli_main
from dispose.evaluation.videos import read_frames


def _write(path: Path, frames: np.ndarray, fps: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def main() -> None:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "data"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="dispose_eval_"))
    frames = read_frames(data / "musepose_dance.mp4", (288, 512), 1, 96)
    rng = np.random.default_rng(0)
    noisy = [np.clip(cv2.GaussianBlur(f, (0, 0), 1.5) + rng.normal(0, 8, f.shape), 0, 255).astype(np.uint8)
             for f in frames]
    (out / "gt").mkdir(parents=True, exist_ok=True)
    (out / "pred").mkdir(exist_ok=True)
    for part in range(3):
        _write(out / "gt" / f"dance_{part + 1}.mp4", frames[32 * part:32 * (part + 1)], 24)
        _write(out / "pred" / f"dance_{part + 1}.mp4", np.stack(noisy[32 * part:32 * (part + 1)]), 24)
    start = time.perf_counter()
    code = cli_main(["eval", "--pred", str(out / "pred"), "--gt", str(out / "gt"),
                     "--out", str(out / "report.json"), "--name", "degraded copy", "--no-progress",
                     *sys.argv[3:]])
    print(f"dispose eval took {time.perf_counter() - start:.1f} s (exit {code}); files in {out}")


if __name__ == "__main__":
    main()
