"""``dispose benchmark quality``: the paper's TikTok protocol in one command (Tables 1 and 6, base vs
DisPose).

Protocol and where each detail comes from:

* Test set: TikTok sequences 00335 to 00340 (paper Sec. 5.2, "Following previous works (Zhang et al., 2024;
  Wang et al., 2024b), we use sequences 335 to 340"), read from the dataset's own layout
  ``<root>/NNNNN/images/*.png`` (as ``dispose eval --protocol tiktok``).
* Reference = the sequence's first frame, driving = the sequence's frames (the protocol of DisCo / MimicMotion
  the paper follows: the first frame's person animated by the sequence's poses, compared with the sequence
  itself); the paper states no resolution, stride or frame count: the base's generation defaults, every frame
  (``sample_stride`` 1) unless set, all frames unless ``max_frames``.
* Both the base alone (``baseline``) and base + DisPose animate every sequence through the one engine
  (:class:`dispose.engine.Animator`) with the same seed; the metrics are ``dispose eval``'s
  (:mod:`dispose.evaluation`): Table 1 (VBench x100, FID-FVD, FVD, CD-FVD) and Table 6 (SSIM, PSNR, LPIPS, L1;
  the paper's L1 is DisCo's scale, our ``l1_disco``), the ground truth resized to the generated size and cut
  to its length.  A metric whose weights are missing is skipped, never given a number.

Outputs below ``out``: ``videos/base/NNNNN.mp4`` and ``videos/dispose/NNNNN.mp4`` with their JSON sidecars,
``side_by_side/{base,dispose}/NNNNN.mp4`` (reference | skeleton | result), each written atomically by the
same writer as ``dispose animate``.  Resumable: a video whose sidecar (written last) exists is reused.
Sharded like ``dispose animate --config``: under ``accelerate launch --num_processes K`` each process
animates every K-th video, then the first process evaluates once all are there.  Frame folders are read
into memory one sequence at a time (the engine takes frames as an array).
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from dispose.bases import DEFAULT_BASE
from dispose.benchmark import paper
from dispose.benchmark.report import table
from dispose.devices import process_shard

VARIANTS = ("base", "dispose")
TABLE6 = (("ssim", "SSIM", 1), ("psnr", "PSNR", 1), ("lpips", "LPIPS", 1), ("l1_disco", "L1", 1))
TINY_METRICS = ("ssim", "psnr", "l1", "l1_disco", "temporal_flickering")


@dataclass
class QualitySettings:
    base: str = DEFAULT_BASE
    data: Path | None = None
    sequences: list | None = None
    weights: Path | None = None
    eval_weights: Path | None = None
    metrics: list | None = None
    resolution: int | None = None
    steps: int | None = None
    max_frames: int | None = None
    sample_stride: int = 1
    folder_fps: float = 30.0
    detector: str = "dwpose"
    dense: str = "cmp"
    device: str = "auto"
    dtype: str = "auto"
    tiny: bool = False
    out: Path | None = None
    progress: bool = True


def _sequences(settings: QualitySettings) -> dict[str, Path]:
    """Sequence name -> frame folder; a UserError naming every missing one."""
    from dispose.errors import UserError
    from dispose.evaluation.suite import TIKTOK_SEQUENCES
    from dispose.evaluation.videos import is_video

    if not settings.data.is_dir():
        raise UserError(
            f"--data {settings.data} is not a folder (the TikTok dataset root, NNNNN/images/*.png)"
        )
    names = settings.sequences or list(TIKTOK_SEQUENCES)
    folders = {name: settings.data / name for name in names}
    missing = [name for name, folder in folders.items() if not (folder.is_dir() and is_video(folder))]
    if missing:
        raise UserError(
            f"--data {settings.data} lacks the frame folders of sequences {', '.join(missing)} "
            "(expected <root>/NNNNN/images/*.png); choose others with --sequences"
        )
    return folders


def _all_jobs(settings: QualitySettings, folders: dict[str, Path]) -> list:
    """The jobs (sequence, variant, settings) with the base's defaults, without loading any model."""
    from dispose.bases import get_base

    base = get_base(settings.base)
    values = {"sample_stride": 1, "fps": max(1, round(settings.folder_fps / settings.sample_stride))}
    if settings.resolution:
        values["resolution"] = settings.resolution
    if settings.steps:
        values["num_inference_steps"] = settings.steps
    jobs = []
    for name in folders:
        for variant in VARIANTS:
            job = base.job_settings(**values, base=settings.base, baseline=variant == "base",
                                    out=settings.out / "videos" / variant / f"{name}.mp4",
                                    side_by_side=settings.out / "side_by_side" / variant / f"{name}.mp4")
            jobs.append((name, variant, job))
    return jobs


def _done(job) -> bool:
    """Whether the job's video, side-by-side and sidecar (written last) exist; a UserError when they were made
    with other settings (a reused video must be the one this run would make)."""
    import json

    from dispose.errors import UserError
    from dispose.jobs import sidecar_path

    sidecar = sidecar_path(job.out)
    if not (job.out.is_file() and sidecar.is_file() and job.side_by_side.is_file()):
        return False
    try:
        made = json.loads(sidecar.read_text()).get("job", {})
    except (OSError, ValueError):
        return False  # an unreadable sidecar: the video is made again
    wanted = job.to_dict()
    changed = sorted(key for key in wanted if key in made and made[key] != wanted[key])
    if changed:
        raise UserError(f"{job.out} was made with other settings ({', '.join(changed)}); use another --out "
                        "or remove that folder to start again")
    return True


def _engine(settings: QualitySettings, weights: Path | None, device: str):
    from dispose.engine import Animator, Runtime

    tiny = settings.tiny
    runtime = Runtime(device=device, dtype=settings.dtype, progress=settings.progress,
                      detector="mediapipe" if tiny else settings.detector,
                      dense="propagate" if tiny else settings.dense)
    return Animator.load(settings.base, weights, None, runtime)


def animate_all(settings: QualitySettings, folders: dict[str, Path]) -> int:
    """Animate this process's share of the missing videos (module docstring); returns the process count."""
    from dispose.evaluation.videos import read_frames
    from dispose.jobs import shard, write_result
    from dispose.media.files import ensure_folder

    jobs = _all_jobs(settings, folders)
    finished = {id(job) for _, _, job in jobs if _done(job)}
    with tempfile.TemporaryDirectory(prefix="dispose-bench-") as workdir:
        weights = settings.weights
        if settings.tiny and len(finished) < len(jobs):
            from dispose.benchmark.networks import tiny_weights

            # before any process group exists: inside one, transformers saves its models on rank 0 only
            weights = Path(workdir) / "tiny-weights"
            tiny_weights(settings.base, weights)
        index, count, device = process_shard(settings.device)
        engine, current, frames = None, None, None
        for name, _, job in shard(jobs, index, count):
            if id(job) in finished:
                print(f"process {index + 1}/{count}: reuse (exists) {job.out}", file=sys.stderr)
                continue
            if engine is None:
                engine = _engine(settings, weights, device)
            if current != name:
                frames = read_frames(folders[name], stride=settings.sample_stride,
                                     max_frames=settings.max_frames)
                current = name
            for path in (job.out, job.side_by_side):
                ensure_folder(path.parent)
            result = engine.animate(frames[0], frames, fps=settings.folder_fps / settings.sample_stride,
                                    settings=job)
            write_result(job, result)
            print(f"process {index + 1}/{count}: wrote {job.out}", file=sys.stderr)
    if count > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
    return count


def evaluate_all(settings: QualitySettings, folders: dict[str, Path]) -> dict:
    """``dispose eval``'s metrics of each variant against the sequences (ground truth cut to the length)."""
    from dispose.evaluation.suite import EvalSettings, evaluate, find_weights
    from dispose.evaluation.videos import pair_videos

    metrics = tuple(settings.metrics or (TINY_METRICS if settings.tiny else ()))
    reports = {}
    for variant in VARIANTS:
        pred = {name: settings.out / "videos" / variant / f"{name}.mp4" for name in folders}
        options = {"metrics": metrics} if metrics else {}
        eval_settings = EvalSettings(
            **options,
            gt_stride=settings.sample_stride,
            max_frames=None,
            truncate=True,
            device=settings.device,
            progress=settings.progress,
            protocol="tiktok" if not settings.sequences else None,
        )
        reports[variant] = evaluate(
            pair_videos(pred, dict(folders)), eval_settings, find_weights(settings.eval_weights)
        )
    return reports


def run_quality(settings: QualitySettings) -> tuple[dict, str, list]:
    """Animate (sharded, resumable), evaluate on the first process; returns (report, tables, chart groups)."""
    from dispose.benchmark.measure import environment
    from dispose.devices import resolve_device

    folders = _sequences(settings)
    processes = animate_all(settings, folders)
    if process_shard(settings.device)[0] != 0:
        return {}, "", []
    reports = evaluate_all(settings, folders)
    jobs = {f"{variant}/{name}": job.to_dict() for name, variant, job in _all_jobs(settings, folders)}
    report = {
        "benchmark": "quality",
        "networks": "tiny random" if settings.tiny else "real",
        "settings": asdict(settings),
        "sequences": list(folders),
        "jobs": jobs,
        "processes": processes,
        "environment": environment(resolve_device(settings.device)),
        "evaluation": reports,
    }
    return report, format_quality(report), chart_groups(report)


def _rows(report: dict, columns) -> list[list]:
    base = report["settings"]["base"]
    rows = []
    for variant in VARIANTS:
        label = paper.TABLE7[base][variant][0] if base in paper.TABLE7 else variant
        figures = {
            **paper.TABLE1.get(base, {}).get(variant, {}),
            **paper.TABLE6.get(base, {}).get(variant, {}),
        }
        aggregate = report["evaluation"][variant]["aggregate"]
        rows.append([f"{label} (paper)", *(figures.get(key) for key, _, _ in columns)])
        rows.append(
            [
                f"{label} (ours)",
                *(None if key not in aggregate else aggregate[key] * scale for key, _, scale in columns),
            ]
        )
    return rows


def format_quality(report: dict) -> str:
    from dispose.evaluation.report import TABLE1

    names = ", ".join(report["sequences"])
    lines = [
        f"TikTok protocol ({names}), {report['settings']['base']}, {report['networks']} weights",
        "Table 1 layout (VBench x100):",
        table(["Method", *(t for _, t, _ in TABLE1)], _rows(report, TABLE1)),
        "",
        "Table 6 layout (L1 on DisCo's scale, as the paper):",
        table(["Method", *(t for _, t, _ in TABLE6)], _rows(report, TABLE6)),
    ]
    skipped = {
        key: reason
        for variant in VARIANTS
        for key, reason in report["evaluation"][variant]["skipped"].items()
    }
    if skipped:
        lines += ["", "Skipped (n/a above):"] + [f"  {key}: {reason}" for key, reason in skipped.items()]
    return "\n".join(lines)


def chart_groups(report: dict) -> list:
    """Per metric, DisPose / base: ours and the paper's (1 = no change)."""
    from dispose.evaluation.report import TABLE1

    base = report["settings"]["base"]
    ours = {v: report["evaluation"][v]["aggregate"] for v in VARIANTS}
    figures = {
        v: {**paper.TABLE1.get(base, {}).get(v, {}), **paper.TABLE6.get(base, {}).get(v, {})}
        for v in VARIANTS
    }
    groups = []
    for key, title, _ in (*TABLE1, *TABLE6):
        pair = [ours[v].get(key) for v in VARIANTS]
        mine = pair[1] / pair[0] if None not in pair and pair[0] else None
        theirs = figures["dispose"].get(key), figures["base"].get(key)
        groups.append(
            (
                f"{title} DisPose/base",
                {"ours": mine, "paper": theirs[0] / theirs[1] if None not in theirs else None},
            )
        )
    return [group for group in groups if any(v is not None for v in group[1].values())]
