"""CMP dense motion field F_d: our batched ``cmp_motion_field`` vs the release's per-frame loop, speed and
peak memory per chunk size, on the example dancer's real poses.

Inputs: MediaPipe poses of the shared reference image and dancer video (every 2nd frame, aligned to the
reference, as ``dispose guidance`` without weights), their trajectories and ``P_d`` on CMP's 384x384 grid
(``reference_sparse_flow``, default missing-keypoint rule); ``CMP()`` with random weights, float32, CPU (the
public checkpoint has the same cost).  Both sides take the reference at the generation size (``--resolution``,
576 -> 576x1024 for the dancer) and return ``F_d`` float32 at that size: reference resized to 384x384
(nearest), CMP on the 384 grid, flow resized back (nearest) and scaled, as the release does.  CMP itself
always runs at 384x384, whatever the generation size, so its activations do not depend on it; only the
returned field (2 x H x W float32 per frame) does.

* ours: ``dispose.guidance.motion_fields.cmp_motion_field`` with ``chunk_size`` in ``--chunks``: the
  reference is encoded once, the frames are decoded ``chunk_size`` at a time.
* release-style loop (written here after the release's ``get_cmp_flow`` + ``CMP.run``): the reference image
  repeated once per frame, then one full CMP forward per frame (image encoder, sparse encoder, decoder, bin
  fusion, bilinear upsampling), so the same image is encoded again for every frame.

Speed: min and median wall time of ``--repeats`` interleaved rounds (after one untimed warm-up round), and the
ratios release-style / ours.

Peak memory: each variant is run again in ``--memory-repeats`` fresh Python processes (this script with
``--memory-child``), each of which builds CMP, loads the same inputs, resets the resident-set high-water mark
(writing ``5`` to ``/proc/self/clear_refs``), runs the variant once and reports ``VmHWM``
(``/proc/self/status``) minus the ``VmRSS`` just before the call: the peak resident memory the call adds on
top of the loaded model and inputs, output included (min - max over the processes).  A fresh process per run
keeps one variant's freed-but-cached heap from hiding another's needs (an in-process reading would depend on
the run order); the call is the first in its process, as in ``dispose guidance``, so lazy library set-up is
included (the same for every variant).  From run to run the figure moves by up to about 100 MiB (glibc heap
reuse, thread timing); the growth with the chunk size is far larger.  Each child saves its output, and the
largest absolute difference of each of ours from the release-style output is printed (all children build CMP
from the same seed).  Linux only.

Run by hand: ``python bench/bench_cmp.py [--frames 16] [--repeats 2] [--memory-repeats 1] [--chunks 1 4 8 16]
[--resolution 576] [--threads N]`` (the default run takes about 3 minutes on an idle 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from timing import dancer_poses, interleaved, report, set_threads

from dispose.guidance.cmp import CMP, release_image_tensor, resize_flow_nearest, resize_nearest_384
from dispose.guidance.motion_fields import cmp_motion_field
from dispose.guidance.reference_flow import reference_sparse_flow
from dispose.guidance.trajectories import body_trajectories

RELEASE = "release-style loop (per frame)"
SEED = 0


def release_style_field(cmp: CMP, reference: np.ndarray, flow: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """F_d as the release computes it: a per-frame copy of the 384x384 image and one whole CMP forward per
    frame, then the nearest resize to the generation size."""
    height, width = reference.shape[:2]
    images = release_image_tensor(resize_nearest_384(reference)).repeat(len(flow), 1, 1, 1)
    sparse = torch.from_numpy(np.concatenate([flow, mask], axis=1))
    per_frame = [cmp.predict_flow(cmp.encode_image(images[i:i + 1]), sparse[i:i + 1])
                 for i in range(len(flow))]
    return resize_flow_nearest(torch.cat(per_frame), height, width).numpy()


def run_variant(name: str, cmp: CMP, reference: np.ndarray, flow: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``name`` is ``release`` or a chunk size."""
    with torch.no_grad():
        if name == "release":
            return release_style_field(cmp, reference, flow, mask)
        return cmp_motion_field(cmp, reference, flow, mask, chunk_size=int(name))


def memory_kb() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in kB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


def memory_child(name: str, folder: Path) -> None:
    """Runs in a fresh process: print the peak RSS increase (kB) of one call of variant ``name`` on the inputs
    in ``folder`` (same seed, so the same weights as the parent) and save its output there."""
    data = np.load(folder / "inputs.npz")
    reference, flow, mask = data["reference"], data["flow"], data["mask"]
    torch.manual_seed(SEED)
    cmp = CMP().eval()
    Path("/proc/self/clear_refs").write_text("5")
    before = memory_kb()["VmRSS"]
    field = run_variant(name, cmp, reference, flow, mask)
    print(json.dumps({"before_kb": before, "peak_increase_kb": memory_kb()["VmHWM"] - before}))
    np.save(folder / f"{name}.npy", field)


def peak_memory(name: str, folder: Path, threads: int | None) -> tuple[dict[str, int], np.ndarray]:
    """Peak RSS figures of variant ``name`` measured in a fresh process, and its output."""
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", name, "--inputs", str(folder)]
    if threads is not None:
        command += ["--threads", str(threads)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1]), np.load(folder / f"{name}.npy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16,
                        help="driving frames (every 2nd frame of the video)")
    parser.add_argument("--repeats", type=int, default=2, help="timed interleaved rounds")
    parser.add_argument("--memory-repeats", type=int, default=1, help="fresh processes per variant for the "
                        "peak memory (min - max printed)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 4, 8, 16], help="our chunk sizes")
    parser.add_argument("--resolution", type=int, default=576, help="generation size (short side)")
    parser.add_argument("--threads", type=int, help="torch and OpenCV threads (default: theirs)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)  # folder of the memory child's files
    args = parser.parse_args()
    set_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.inputs)
        return

    reference, extraction = dancer_poses(args.frames, args.resolution)
    height, width = reference.shape[:2]
    traj = body_trajectories(extraction.reference, extraction.driving, width, height)
    flow, mask = reference_sparse_flow(traj)
    n = len(flow)
    print(f"dancer: {n} driving frames, reference {width}x{height}, "
          f"CMP on {flow.shape[-1]}x{flow.shape[-2]}, "
          f"random fp32 weights, CPU, torch threads {torch.get_num_threads()}")

    torch.manual_seed(SEED)
    cmp = CMP().eval()
    names = {RELEASE: "release", **{f"ours, chunk_size {c}": str(c) for c in args.chunks}}
    times = interleaved({label: lambda name=name: run_variant(name, cmp, reference, flow, mask)
                         for label, name in names.items()}, args.repeats)
    print(f"wall time for {n} frames ({args.repeats} interleaved rounds):")
    report(times, RELEASE)
    print("per frame:")
    report(times, RELEASE, unit=n / 1000, unit_name="ms/frame")

    print(f"peak RSS added by one call ({n} frames, fresh process each; output {n} x 2 x {height} x {width} "
          f"float32 = {n * 2 * height * width * 4 / 2**20:.0f} MiB included), max |F_d - release-style|:")
    with tempfile.TemporaryDirectory() as folder:
        np.savez(Path(folder) / "inputs.npz", reference=reference, flow=flow, mask=mask)
        expected = None
        for label, name in names.items():
            peaks = []
            for _ in range(args.memory_repeats):
                peak, field = peak_memory(name, Path(folder), args.threads)
                peaks.append(peak["peak_increase_kb"] / 1024)
            expected = field if expected is None else expected
            print(f"  {label:34s} {min(peaks):6.0f} - {max(peaks):6.0f} MiB "
                  f"(process RSS before the call {peak['before_kb'] / 1024:.0f} MiB)   "
                  f"max diff {np.abs(field - expected).max():.2e} px")


if __name__ == "__main__":
    main()
