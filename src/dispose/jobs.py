"""Animation jobs: settings with the release's test defaults, YAML job files, sharding, the JSON sidecar.

A job file lists one or more jobs; each may set any field of :class:`JobSettings`.  Both our names and
the release's ``configs/test.yaml`` names are accepted (``ref_image_path`` -> ``ref``,
``ref_video_path`` -> ``driving``), and its top-level weight paths (``base_model_path``,
``dift_model_path``, ``ckpt_path``, ``controlnet_path``) map to the weight overrides::

    defaults: {resolution: 576, seed: 42}     # optional, applied to every job
    jobs:                                     # or the release's key: test_case
      - {ref: a.png, driving: dance.mp4, out: a_dance.mp4}
      - {ref: b.png, driving: dance.mp4, seed: 7, baseline: true}

Relative paths in a job file are relative to the file's folder, except ``out``: with ``--out FOLDER`` a
relative ``out`` is relative to that folder (without ``--out``, to the file's folder).  Precedence: defaults
of :class:`JobSettings` < the base model's defaults (:mod:`dispose.bases`) < the file's ``defaults`` < the
job's own fields < options given on the command line.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispose.bases import get_base
from dispose.errors import UserError
from dispose.media.files import atomic_write_text
from dispose.settings import JobSettings
from dispose.validation import JOB_RULES, yaml_problem

#: Release key -> our key, for jobs written for the official ``inference_ctrl.py``.
RELEASE_JOB_KEYS = {"ref_image_path": "ref", "ref_video_path": "driving"}
RELEASE_WEIGHT_KEYS = {"base_model_path": "svd", "dift_model_path": "sd15", "ckpt_path": "mimicmotion",
                       "controlnet_path": "dispose"}
SIDECAR_FORMAT = "dispose-animate-v1"


_FIELDS = {f.name: f for f in dataclasses.fields(JobSettings)}
_PATH_FIELDS = {"ref", "driving", "out", "side_by_side", "guidance", "poses"}


def _normalised(values: Mapping[str, Any], base: Path | None, where: str, *,
                out_base: Path | None = None) -> dict:
    """Settings of one source with release key names mapped and relative paths made absolute to ``base``
    (``out`` to ``out_base`` when given)."""
    if not isinstance(values, Mapping):
        raise UserError(f"{where}: expected a mapping of settings, got {values!r}")
    updates = {}
    for raw_key, value in values.items():
        key = RELEASE_JOB_KEYS.get(raw_key, raw_key)
        if key not in _FIELDS:
            raise UserError(f"{where}: unknown setting {raw_key!r}; known: {', '.join(sorted(_FIELDS))}")
        value = JOB_RULES[key].check(value, f"{where}: {raw_key}")
        if key in _PATH_FIELDS and value is not None:
            value = Path(str(value)).expanduser()
            folder = out_base if key == "out" and out_base is not None else base
            if folder is not None and not value.is_absolute():
                value = folder / value
        updates[key] = value
    return updates


def settings_for(values: Mapping[str, Any]) -> JobSettings:
    """JobSettings from explicit ``values`` over the defaults of the base model they name; a UserError for a
    setting that base does not use."""
    base = get_base(values.get("base"))
    settings = base.job_settings(**values)
    base.check_settings(settings)
    return settings


def _read_job_file(path: Path) -> tuple[dict, list[dict], dict[str, str]]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"job file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise UserError(f"job file {path} is not valid YAML ({yaml_problem(error)})") from None
    if not isinstance(data, dict):
        raise UserError(f"job file {path}: expected a mapping with a 'jobs' list")
    base = path.parent
    weights = {RELEASE_WEIGHT_KEYS[key]: (str(base / value) if not Path(str(value)).is_absolute()
                                          else str(value))
               for key, value in data.items() if key in RELEASE_WEIGHT_KEYS and value is not None}
    entries = data.get("jobs", data.get("test_case"))
    if not isinstance(entries, list) or not entries:
        raise UserError(f"job file {path}: needs a non-empty list under 'jobs' (or 'test_case')")
    unknown = set(data) - {"jobs", "test_case", "defaults", *RELEASE_WEIGHT_KEYS}
    if unknown:
        raise UserError(f"job file {path}: unknown top-level keys {sorted(unknown)}")
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise UserError(f"job file {path}: job {number} is not a mapping")
    return data.get("defaults") or {}, entries, weights


def load_job_file(path: str | Path, out: Path | None = None) -> tuple[list[JobSettings], dict[str, str]]:
    """Jobs of a YAML file and the weight overrides it names (release keys); see module docstring."""
    path = Path(path)
    defaults, entries, weights = _read_job_file(path)
    common = _normalised(defaults, path.parent, f"job file {path}: defaults", out_base=out)
    jobs = [settings_for({**common, **_normalised(entry, path.parent, f"job file {path}: job {number}",
                                                  out_base=out)})
            for number, entry in enumerate(entries, 1)]
    return jobs, weights


def build_jobs(job_file: str | Path | None, overrides: Mapping[str, Any], out: Path | None) -> tuple[
        list[JobSettings], dict[str, str]]:
    """Jobs from the job file (or one job from the options alone) with command-line ``overrides`` applied
    (keys with value None are ignored).  ``out`` is the output file of a single job, or the folder of
    jobs (relative ``out`` entries of the file are relative to it)."""
    given = _normalised({key: value for key, value in overrides.items() if value is not None}, None,
                        "command line")
    if job_file is None:
        jobs, weights = [settings_for(given)], {}
    else:
        folder = out if out is not None and out.suffix.lower() != ".mp4" else None
        jobs, weights = load_job_file(job_file, folder)
        jobs = [settings_for({**explicit_settings(job), **given}) for job in jobs]
    for number, job in enumerate(jobs):
        if job.out is None:
            if out is None:
                raise UserError("no output: pass --out (a .mp4 file for one job, a folder for a job file)")
            if out.suffix.lower() == ".mp4":
                if len(jobs) > 1:
                    raise UserError(f"--out {out} is a file but the job file has {len(jobs)} jobs; "
                                    "pass a folder")
                jobs[number] = dataclasses.replace(job, out=out)
            elif job_file is not None or out.is_dir():
                name = (f"{Path(job.ref).stem}_to_{Path(job.driving).stem}.mp4" if job.ref and job.driving
                        else f"{Path(job.guidance).name}.mp4" if job.guidance else "")
                jobs[number] = dataclasses.replace(job, out=out / name)
            else:
                raise UserError(f"--out {out}: give an .mp4 file (or a folder)")
        jobs[number].validate("" if job_file is None else f"job file {job_file}: job {number + 1}: ")
    outs = [job.out for job in jobs]
    duplicates = sorted({str(o) for o in outs if outs.count(o) > 1})
    if duplicates:
        raise UserError(f"several jobs write the same output: {', '.join(duplicates)}; "
                        "give each job its own 'out'")
    return jobs, weights


def explicit_settings(job: JobSettings) -> dict:
    """The fields of ``job`` that differ from its base's defaults (so that command-line values and a base
    change apply on top)."""
    reference = settings_for({"base": job.base})
    return {f.name: getattr(job, f.name) for f in dataclasses.fields(job)
            if getattr(job, f.name) != getattr(reference, f.name)}


def shard(jobs: Sequence[JobSettings], index: int, count: int) -> list[JobSettings]:
    """Jobs of process ``index`` of ``count`` (round robin), for one-job-per-process multi-GPU runs."""
    if not 0 <= index < count:
        raise ValueError(f"process index {index} outside [0, {count})")
    return list(jobs[index::count])


def sidecar_path(out: Path) -> Path:
    return out.with_suffix(".json")


@dataclass
class Sidecar:
    """Everything needed to reproduce an output: settings, runtime, seed, inputs, weights, timings."""

    job: JobSettings
    runtime: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        from dispose import __version__

        return {
            "format": SIDECAR_FORMAT,
            "dispose_version": __version__,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "seed": self.job.seed,
            "job": self.job.to_dict(),
            "runtime": self.runtime,
            "inputs": self.inputs,
            "weights": self.weights,
            "result": self.result,
            "timings": self.timings,
        }

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, default=str, allow_nan=False) + "\n")


def unit_paths(job: JobSettings) -> list[Path]:
    """The files one job writes, as one unit: the video, the side-by-side (when asked for), the sidecar."""
    out = Path(job.out)
    return [out, *([Path(job.side_by_side)] if job.side_by_side is not None else []), sidecar_path(out)]


def finished_unit(job: JobSettings) -> str | None:
    """Why the files of ``job`` are a finished result of these settings (for --resume), as text naming them;
    None when any is missing or the sidecar describes another result (then the job runs again)."""
    paths = unit_paths(job)
    if not all(path.is_file() for path in paths):
        return None
    try:
        sidecar = json.loads(paths[-1].read_text())
        recorded, result = sidecar["job"], sidecar["result"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    wanted = {key: value for key, value in job.to_dict().items() if key not in ("ref", "driving", "poses")}
    if result.get("out") != str(job.out) or any(recorded.get(key) != value for key, value in wanted.items()):
        return None
    return ", ".join(map(str, paths))


def write_result(job: JobSettings, result) -> Path:
    """Write an engine result (:class:`dispose.engine.AnimationResult`) as ``job.out`` (+
    ``job.side_by_side``) and its sidecar as one unit (:func:`dispose.media.files.atomic_paths`: all written
    under temporary names, then renamed together), creating their folders first (removed again when the write
    fails); the sidecar format is the same for every front door. Returns the sidecar's path."""
    from dispose.media.files import atomic_paths, folders_for
    from dispose.media.video import write_video

    paths = unit_paths(job)
    meta = result.metadata
    outputs = {"fps": job.fps, "out": str(job.out),
               "side_by_side": None if job.side_by_side is None else str(job.side_by_side)}
    sidecar = Sidecar(job=job, runtime={**meta["runtime"], "base": meta["base"]}, inputs=meta["inputs"],
                      weights=meta["weights"], result={**meta["result"], **outputs}, timings=meta["timings"])
    with folders_for(zip(("--out", "--side-by-side"), paths[:-1])), atomic_paths(paths) as tmps:
        write_video(tmps[0], result.frames, job.fps)
        if job.side_by_side is not None:
            write_video(tmps[1], result.side_by_side(), job.fps)
        sidecar.write(tmps[-1])
    return paths[-1]
