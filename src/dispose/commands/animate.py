"""Animate a reference image with the poses of a driving video (DisPose on a base model, MimicMotion by
default).

Defaults are the base model's release settings (``Base.defaults`` of :mod:`dispose.bases`: MimicMotion's
configs/test.yaml, MusePose's test_stage_2.py; ``dispose animate --help`` lists them).  Before loading any
model, every input, option and weight file the run needs is
checked, and all missing weights are listed with where to get them and what to run instead.  Writes OUT.mp4
atomically (its folder is created) and OUT.json (every setting, the seed, sha256 of the inputs and weight
files (cached per file version), timings); --side-by-side adds reference | skeleton | result.  --baseline runs
the base model alone with the same pipeline and seed.  --guidance DIR reuses what `dispose guidance`
wrote (no pose detection, CMP or DIFT); --poses FILE takes the driving poses from a file.  --match-release
reproduces the official release as it ships (README "Release-exact mode").

Several jobs: --config jobs.yaml (see dispose.jobs) with --out FOLDER; a relative `out:` in the file
is then relative to FOLDER.  A job's video, side-by-side and sidecar are written as one unit (temporary names,
renamed together); --resume skips the jobs whose unit is complete and whose sidecar records the same settings,
and says why it runs the others again (a file missing, other settings).  Multi-GPU: accelerate launch
--num_processes K -m dispose.cli animate --config jobs.yaml --out FOLDER (each process runs every K-th job).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: Command-line options that override job settings (dest -> JobSettings field).
_JOB_OPTIONS = {
    "ref": "ref", "driving": "driving", "resolution": "resolution", "num_frames": "num_frames",
    "frames_overlap": "frames_overlap", "steps": "num_inference_steps", "guidance_scale": "guidance_scale",
    "min_guidance_scale": "min_guidance_scale", "noise_aug_strength": "noise_aug_strength",
    "sample_stride": "sample_stride", "fps": "fps", "decode_chunk_size": "decode_chunk_size", "seed": "seed",
    "max_frames": "max_frames", "controlnet_scale": "controlnet_scale", "side_by_side": "side_by_side",
    "controlnet_interval": "controlnet_interval",
    "base": "base", "guidance": "guidance", "poses": "poses", "align": "align",
}
_FLAGS = ("baseline", "release_missing_points", "match_release", "strict")


def _weight_options():
    """(dest, component key, option, help) of every registered weight component (bases add theirs)."""
    from dispose.pipelines.weights import COMPONENTS

    return [(c.option.lstrip("-").replace("-", "_"), c.key, c.option, c.what) for c in COMPONENTS.values()]


def _default_text(name: str) -> str:
    """The default of setting ``name`` for the help: each base's for the settings a base owns."""
    from dispose.bases import BASE_SETTINGS, defaults_text
    from dispose.settings import JobSettings

    return defaults_text(name) if name in BASE_SETTINGS else str(getattr(JobSettings(), name))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dispose.bases import BASES, DEFAULT_BASE
    from dispose.pose.detector_factory import DETECTORS
    from dispose.validation import JOB_RULES, Rule, job_option, option_type

    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--ref", type=Path, help="reference image")
    io.add_argument("--driving", type=Path, help="driving video")
    io.add_argument("--poses", type=Path,
                    help="driving poses from a file (dispose-poses JSON, or OpenPose JSON: one file or a "
                         "folder of per-frame files) instead of detecting them; --driving still gives the "
                         "frame rate and size")
    io.add_argument("--guidance", type=Path,
                    help="a folder written by `dispose guidance`: reuse its poses and guidance (no "
                         "detection, CMP or DIFT); refused when made from another reference or settings")
    io.add_argument("--out", type=Path,
                    help="output .mp4 (one job; its folder is created) or folder (job file)")
    io.add_argument("--config", type=Path,
                    help="YAML job file (one or more jobs; release test.yaml accepted); a relative `out:` in "
                         "it is relative to --out when given")
    io.add_argument("--side-by-side", type=Path, help="also write reference | skeleton | result to this .mp4")
    io.add_argument("--resume", action="store_true",
                    help="skip jobs whose files (video, side-by-side, sidecar) are a finished result of the "
                         "same settings; say what is skipped and why the rest runs")
    io.add_argument("--strict", action="store_true",
                    help="refuse a driving video that ends before the frame count its container declares "
                         "(default: a warning; both counts go to the sidecar)")

    weights = parser.add_argument_group("weights (checked before anything loads)")
    weights.add_argument("--weights", type=Path, help="folder in the release's pretrained_weights/ layout")
    for dest, _, option, what in _weight_options():
        aliases = {"--dwpose": ("--dwpose-dir",), "--cmp": ("--cmp-checkpoint",)}.get(option, ())
        weights.add_argument(option, *aliases, dest=dest,
                             help=f"{what} (path or Hugging Face id in the local cache)")

    gen = parser.add_argument_group("generation (default: the base model's release settings)")
    gen.add_argument("--base", choices=sorted(BASES), help=f"base animation model ({DEFAULT_BASE})")
    #: (option, job field (typed by its rule in dispose.validation), what, whether the help shows its default:
    #: the base's for the settings a base owns, else the same for every base)
    generation = (
        ("--resolution", "resolution", "short side of the output, multiple of 64", True),
        ("--num-frames", "num_frames", "frames per tile", True),
        ("--frames-overlap", "frames_overlap", "overlap of consecutive tiles", True),
        ("--steps", "num_inference_steps", "denoising steps", True),
        ("--guidance-scale", "guidance_scale", "CFG scale; the max of a per-frame ramp", True),
        ("--min-guidance-scale", "min_guidance_scale", "CFG scale of the first frame (= --guidance-scale)",
         False),
        ("--noise-aug-strength", "noise_aug_strength", "noise added to the reference", True),
        ("--sample-stride", "sample_stride", "use every N-th driving frame", True),
        ("--max-frames", "max_frames", "at most N driving frames (after the stride)", True),
        ("--fps", "fps", "output fps", True),
        ("--decode-chunk-size", "decode_chunk_size", "frames per VAE decode (1 = least memory)", True),
        ("--seed", "seed", "random seed", True),
        ("--controlnet-scale", "controlnet_scale", "scale of DisPose's residuals", True),
    )
    for option, field, what, shows_default in generation:
        shown = f" ({_default_text(field)})" if shows_default else ""
        gen.add_argument(option, type=job_option(field), help=what + shown)
    gen.add_argument("--controlnet-interval", type=job_option("controlnet_interval"), metavar="K",
                     help="run the ControlNet at every K-th step and reuse its residuals in between (1 = "
                          "every step, the release; 2 is faster and changes the frames: README, Performance)")
    gen.add_argument("--baseline", action="store_true",
                     help="the base model alone: same pipeline without DisPose")
    gen.add_argument("--release-missing-points", action="store_true",
                     help="treat undetected keypoints in the motion fields as the release does (default: "
                          "ignored)")
    gen.add_argument("--match-release", action="store_true",
                     help="reproduce the official release as it ships (its diffusers-0.27 temporal context "
                          "order in batched CFG, its missing-keypoint handling, float32 F_d); see the README")

    run = parser.add_argument_group("runtime")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    run.add_argument("--dtype", default="auto", choices=("auto", "fp16", "bf16", "fp32"),
                     help="auto = fp16 on CUDA, else fp32")
    run.add_argument("--cfg", dest="cfg_mode", default="batch", choices=("batch", "sequential"),
                     help="CFG halves in one batch (release) or two passes (half the activation memory)")
    run.add_argument("--offload", action="store_true", help="model CPU offload (accelerate hooks)")
    run.add_argument("--compile", action="store_true", help="torch.compile the UNet and ControlNet")
    run.add_argument("--no-guidance-cache", dest="cache_guidance", action="store_false",
                     help="re-encode DisPose's guidance and pose features at every step instead of keeping "
                          "them per tile (same output, slower)")
    from dispose.pipelines.tile_cache import GUIDANCE_CACHE_MB

    run.add_argument("--guidance-cache-mb", type=option_type(Rule(float, least=0)),
                     default=GUIDANCE_CACHE_MB, metavar="MB",
                     help="device memory for the per-tile guidance and pose features kept across steps "
                          "(per-tile sizes: README, Performance); tiles beyond it are re-encoded "
                          "at each step (same output)")
    run.add_argument("--detector", choices=DETECTORS,
                     help="pose detector (dwpose as the release, the default; mediapipe needs no weights); "
                          "not used with --guidance")
    run.add_argument("--dense", choices=("cmp", "propagate", "none"),
                     help="dense motion field: CMP (release, the default), a weight-free propagation, or "
                          "none; "
                          "with --guidance the saved field is used (another --dense is refused)")
    run.add_argument("--align", choices=JOB_RULES["align"].choices,
                     help="pose alignment: global (release's fit, the default), bones or none")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _check_inputs(job) -> None:
    """Cheap checks of one job's inputs and outputs, before any model loads."""
    from dispose.media.files import check_creatable
    from dispose.media.video import VideoFrames

    for label, path in (("reference image", job.ref), ("driving video", job.driving),
                        ("poses file", job.poses)):
        if path is not None and not Path(path).exists():
            raise _error(f"{label} {path} does not exist")
    if job.driving is not None:
        # opens the container: not a video?
        VideoFrames(job.driving, job.sample_stride, 1, release_stride=True)
    for option, path in (("--out", job.out), ("--side-by-side", job.side_by_side)):
        if path is not None:
            check_creatable(path, option)


def _check_apart(jobs, config: Path | None) -> None:
    """No output of any job is an input of any job (or the job file), or another output: symlinks and hard
    links included (:func:`dispose.media.files.check_apart`)."""
    from dispose.jobs import sidecar_path
    from dispose.media.files import check_apart

    inputs = [("--config", config)]
    outputs = []
    for job in jobs:
        inputs += [("--ref", job.ref), ("--driving", job.driving), ("--poses", job.poses),
                   ("--guidance", job.guidance)]
        outputs += [("--out", job.out), ("--side-by-side", job.side_by_side),
                    ("sidecar of --out", sidecar_path(Path(job.out)))]
    check_apart(inputs, outputs)


def _check_references(jobs):
    """Once the detector is loaded, before the base model: every reference can be read and shows a person."""
    from dispose.guidance.stage import reference_frame

    def check(models) -> None:
        for job in jobs:
            if job.guidance is None and job.ref is not None:
                reference_frame(job.ref, job.resolution, models.detector)

    return check


def _not_finished(jobs):
    """The jobs whose files are not a finished result of their settings (--resume); says which it skips and
    why it runs the others again."""
    from dispose.jobs import finished_unit, unit_paths

    remaining = []
    for job in jobs:
        done = finished_unit(job)
        if done is not None:
            print(f"skip (finished: {done})", file=sys.stderr)
            continue
        parts = unit_paths(job)
        missing = [str(path) for path in parts if not path.is_file()]
        if len(missing) < len(parts):  # an unfinished or other result: say why it is made again
            why = f"{', '.join(missing)} missing" if missing else "its sidecar describes other settings"
            print(f"redo {job.out}: {why}", file=sys.stderr)
        remaining.append(job)
    return remaining


def _error(message: str):
    from dispose.errors import UserError

    return UserError(message)


def _load_guidance(job, explicit: set[str], dense: str | None):
    """The saved guidance of a job, checked against its reference, the settings the user gave and ``dense``
    (--dense, when given: the saved field is used, so another method is refused)."""
    from dispose.guidance.stage import Guidance, input_fingerprint

    guidance = Guidance.load(job.guidance)
    saved = guidance.settings.get("dense")
    if dense is not None and saved is not None and dense != saved:
        raise _error(f"--dense {dense} does not apply to --guidance {job.guidance}: its dense field was "
                     f"computed with {saved}; drop --dense or run `dispose guidance --dense {dense}` again")
    inputs = {"reference": input_fingerprint(job.ref)} if job.ref is not None else {}
    if job.driving is not None:
        inputs["driving"] = input_fingerprint(job.driving)
    settings = {key: getattr(job, key) for key in ("resolution", "sample_stride", "max_frames", "align",
                                                   "release_missing_points") if key in explicit}
    guidance.check_matches(str(job.guidance), inputs=inputs, settings=settings)
    return guidance


def run(args: argparse.Namespace) -> int:
    from dispose.devices import process_shard
    from dispose.engine import Animator, Runtime
    from dispose.jobs import build_jobs, explicit_settings, shard, write_result

    overrides = {field: getattr(args, dest) for dest, field in _JOB_OPTIONS.items()}
    for flag in _FLAGS:
        if getattr(args, flag):
            overrides[flag] = True
    explicit = {key for key, value in overrides.items() if value is not None}
    jobs, weight_overrides = build_jobs(args.config, overrides, args.out)
    weight_overrides.update({key: getattr(args, dest) for dest, key, _, _ in _weight_options()
                             if getattr(args, dest, None) is not None})
    _check_apart(jobs, args.config)
    bases = {job.base for job in jobs}
    if len(bases) > 1:
        raise _error(f"a job file must use one base model per run, got {sorted(map(str, bases))}; split it")
    index, count, device = process_shard(args.device)
    if count > 1:
        jobs = shard(jobs, index, count)
    if args.resume:
        jobs = _not_finished(jobs)
    if not jobs:
        return 0
    for job in jobs:
        _check_inputs(job)
    saved = {id(job): _load_guidance(job, explicit | set(explicit_settings(job)), args.dense)
             for job in jobs if job.guidance is not None}
    only_saved = len(saved) == len(jobs)  # nothing to detect or compute: no detector, CMP or DWPose weights
    runtime = Runtime(device=device, dtype=args.dtype, cfg_mode=args.cfg_mode, offload=args.offload,
                      compile=args.compile, cache_guidance=args.cache_guidance,
                      guidance_cache_mb=args.guidance_cache_mb,
                      detector="saved" if only_saved else args.detector or "dwpose",
                      dense="saved" if only_saved else args.dense or "cmp", progress=not args.no_progress)
    runtime.check()
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # one bar of our own, not one per model file loaded
    engine = Animator.load(jobs[0].base, args.weights, weight_overrides, runtime,
                           dispose=any(not job.baseline for job in jobs), check=_check_references(jobs))
    for job in jobs:
        result = engine.animate(job.ref, job.driving, poses=job.poses, guidance=saved.get(id(job)),
                                settings=job)
        write_result(job, result)
        print(f"wrote {job.out}", file=sys.stderr)
    return 0
