"""Per-frame cost of the ``dispose guidance`` pictures (skeleton | F_s | F_d): the command's full-size drawing
before issue 14 vs :func:`dispose.guidance.flow_pictures.guidance_panels` at its preview size.

Inputs: the example dancer (MediaPipe poses, 576x1024), F_s from the trajectories, F_d by the weight-free
propagation.  "full size (before)" is the former per-frame code, kept here as the baseline: the skeleton drawn
at 576x1024, the float64 colour code on every pixel of both fields, arrows sampled one by one, three 576x1024
panels.  "preview (guidance_panels)" draws the skeleton at the panel size and calls ``guidance_panels`` with
its default panel width.  Timed per frame, interleaved: the panels; one PNG per frame (PIL as
``dispose.media.image.save_image`` at both sizes, and OpenCV's encoder at the preview size); the mp4 encoding
per frame of both picture sizes (whole clip, ``dispose.media.video.write_video``).  Prints min and median, the
ratios, and per-frame totals for writing PNGs + mp4 or the mp4 only (the command's choice).
Run by hand: ``python bench/bench_pictures.py [--frames 16] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from timing import dancer_poses, interleaved, report, set_threads

from dispose.guidance.flow_pictures import colour_wheel, guidance_panels, label, panel_size, video_scale
from dispose.guidance.propagation import FlowPropagator
from dispose.guidance.reference_flow import reference_displacements
from dispose.guidance.sparse_field import sparse_motion_field
from dispose.guidance.trajectories import body_trajectories
from dispose.media.video import write_video
from dispose.pose.drawing import draw_pose


def colour_before(flow: np.ndarray, scale: float) -> np.ndarray:
    """The former colour code: float64 on every pixel (same formula as ``flow_to_color``)."""
    u, v = flow.astype(np.float64) / scale
    radius = np.sqrt(u * u + v * v)
    wheel = colour_wheel()
    position = (np.arctan2(-v, -u) / np.pi + 1) / 2 * (len(wheel) - 1)
    k0 = np.floor(position).astype(int)
    frac = (position - k0)[..., None]
    colour = ((1 - frac) * wheel[k0] + frac * wheel[(k0 + 1) % len(wheel)]) / 255
    colour = np.where((radius <= 1)[..., None], 1 - radius[..., None] * (1 - colour), colour * 0.75)
    return np.round(255 * colour).astype(np.uint8)


def arrows_before(image: np.ndarray, flow: np.ndarray, step: int, scale: float) -> np.ndarray:
    out = image.copy()
    for y in range(step // 2, flow.shape[1], step):
        for x in range(step // 2, flow.shape[2], step):
            dx, dy = float(flow[0, y, x]) * scale, float(flow[1, y, x]) * scale
            if np.hypot(dx, dy) >= 0.5:
                cv2.arrowedLine(out, (x, y), (round(x + dx), round(y + dy)), (0, 0, 0), 1, cv2.LINE_AA,
                                tipLength=0.3)
    return out


def png_pil(picture: np.ndarray) -> None:
    """The PNG as ``dispose.media.image.save_image`` writes it (PIL, default compression), in memory."""
    Image.fromarray(picture).save(io.BytesIO(), format="PNG")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch and OpenCV threads (default: theirs)")
    args = parser.parse_args()
    set_threads(args.threads)
    reference, extraction = dancer_poses(args.frames)
    height, width = reference.shape[:2]
    traj = body_trajectories(extraction.reference, extraction.driving, width, height)
    sparse = sparse_motion_field(traj)
    _, vectors, given = reference_displacements(traj)
    dense = FlowPropagator(reference, traj.points[0], traj.visible[0]).propagate(vectors, given)
    scales = {"sparse_scale": video_scale(sparse), "dense_scale": video_scale(dense)}
    step = max(16, width // 18)
    arrow_scale = min(1.0, 1.5 * step / scales["dense_scale"])
    preview = panel_size(width, height)
    frames = range(len(sparse))
    print(f"dancer: {len(frames)} frames, fields {width}x{height}, preview panels {preview[0]}x{preview[1]}")

    def before(n: int) -> np.ndarray:
        dense_panel = arrows_before(colour_before(dense[n], scales["dense_scale"]), dense[n], step,
                                    arrow_scale)
        return np.concatenate([label(draw_pose(extraction.driving[n], width, height), f"skeleton {n}"),
                               label(colour_before(sparse[n], scales["sparse_scale"]), "F_s sparse"),
                               label(dense_panel, "F_d propagate")], axis=1)

    def after() -> list[np.ndarray]:
        skeletons = (draw_pose(extraction.driving[n], *preview) for n in frames)
        return list(guidance_panels(skeletons, sparse, dense, dense_label="propagate", **scales))

    old, new = [before(n) for n in frames], after()
    print(f"pictures {old[0].shape[1]}x{old[0].shape[0]} before, {new[0].shape[1]}x{new[0].shape[0]} now")
    per_frame = len(frames) / 1000
    print("panels per frame:")
    times = interleaved({"full size (before)": lambda: [before(n) for n in frames],
                         "preview (guidance_panels)": after}, args.repeats)
    report(times, "full size (before)", per_frame, "ms")
    panels = {name: statistics.median(values) / per_frame for name, values in times.items()}
    print("one PNG per frame:")
    times = interleaved({"PIL, full size (before)": lambda: [png_pil(p) for p in old],
                         "PIL, preview": lambda: [png_pil(p) for p in new],
                         "cv2.imencode, preview": lambda: [cv2.imencode(".png", p[..., ::-1]) for p in new]},
                        args.repeats)
    report(times, "PIL, full size (before)", per_frame, "ms")
    pngs = {name: statistics.median(values) / per_frame for name, values in times.items()}
    print("mp4 encoding per frame (libx264, crf 18, whole clip):")
    mp4 = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, pictures in (("full size", old), ("preview", new)):
            start = time.perf_counter()
            write_video(Path(folder) / f"{name}.mp4", pictures, 15.0)
            mp4[name] = (time.perf_counter() - start) / per_frame
            print(f"  {name:34s} {mp4[name]:9.1f} ms")
    total_before = panels["full size (before)"] + pngs["PIL, full size (before)"] + mp4["full size"]
    print(f"per frame, medians: before (panels + PNG + mp4 at full size) {total_before:.0f} ms; now:")
    for name, png_ms in (("panels + PIL PNG + mp4", pngs["PIL, preview"]),
                         ("panels + cv2 PNG + mp4", pngs["cv2.imencode, preview"]),
                         ("panels + mp4 only", 0.0)):
        total = panels["preview (guidance_panels)"] + png_ms + mp4["preview"]
        print(f"  {name:34s} {total:6.0f} ms   x{total_before / total:.1f}")


if __name__ == "__main__":
    main()
