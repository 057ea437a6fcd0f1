"""``dispose prepare``: turn videos into the training shards the DisPose trainer reads (paper sec. 4.1, 5.1,
App. A and D).  Layout of the output: :mod:`dispose.training.shard`.

Per clip (a video, or a folder of frames; :mod:`dispose.training.sources`):

1. Frames are decoded with the release's stride rule (``--sample-stride`` times ``int(fps / 24)``), at most
   ``--max-frames``, then resized and centre-cropped to ``--size W x H`` exactly as inference prepares
   its inputs (:func:`dispose.media.geometry.resize_and_crop`; default 768x1024, the paper's MimicMotion
   training size).  They are stored as JPEG (quality 95).
2. Poses: every person of every *source* frame (full resolution) is detected (``--detector``: DWPose from
   ``--dwpose-dir``, the default and the release's detector, or MediaPipe, weight-free but without hands and
   face; :func:`dispose.pose.detector_factory.load_detector`; each clip's record names it); the first person
   is kept and carried into the W x H crop.  Frames with nobody take the previous frame's pose
   (:func:`dispose.pose.extract.fill_missing`).  The people count of a frame is the detector's (MediaPipe
   finds at most one person).
3. Filters (a rejected clip is recorded as ``failed`` with the reason): fewer than ``--min-frames`` frames;
   nobody found; nobody in more than ``--max-missing`` of the frames; more than ``--max-people`` people in
   more than 5 % of the frames; mean keypoint score below ``--min-score``; visible body keypoints (inside
   the crop) below ``--min-visible`` on average.
4. Reference candidates: ``--references R`` frames spread evenly over the frames where the person was
   detected (default 4).  The training sampler picks the reference among them (any window, any candidate),
   so only these need the two expensive per-reference products below.
5. Optical flow of the real video (sec. 4.1, App. D: training pairs show the same person, so accurate
   flow-derived motion is available).  Like ``F_d`` (Eq. 4 / sec. 4.1) it is *reference-based*: the
   forward flow from the reference candidate
   to every frame of the clip, estimated directly on the pair (RAFT with ``--raft``, else OpenCV DIS;
   :mod:`dispose.training.flow_estimators`), not chained from consecutive flows (chaining 15+ flows drifts
   and breaks at occlusions).  It is stored at 1/``--flow-downscale`` of W x H (default 4: 192x256 for
   768x1024; area-averaged, in pixels of W x H, float16): the motion encoder reduces it to the latent size
   (1/8) in its first layers, and CMP's inference field has a similar resolution (its 384 x 384 grid).  It
   is ``F_d`` itself with ``data.dense_field=flow``.
6. ``P_d`` at training (App. A): watershed samples (:mod:`dispose.guidance.watershed`, NMS kernel
   ``K_f`` = ``--nms-kernel``, default 41 as CMP) of each full-size reference -> frame flow, stored as
   points and vectors, which the trainer feeds to CMP for ``F_d`` (``data.dense_field=cmp``, the default).
7. DIFT point embeddings (:mod:`dispose.guidance.dift`, the release's setting: t = 261, up block 1,
   ensemble 8, seed 0) of every reference candidate at its body keypoints
   (:func:`dispose.guidance.correspondence.point_embeddings`), from SD1.5 given with ``--sd15``.  With
   ``--no-dift`` they are not computed and the trainer cannot train the point encoder.

Bytes per clip at the defaults (768x1024, R = 4, N frames): about N x (100 KB of JPEG + 4 x 196 KB of flow).

Runs are resumable (finished clips are skipped; a clip whose source changed is redone; failed clips are kept
unless ``retry_failed``), parallel (``workers`` processes, one CUDA device each when several are visible; or
several launched processes, :func:`prepare_dataset`), and a clip that fails never stops the run.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from dispose.errors import UserError
from dispose.training import shard
from dispose.training.geometry import carry_pose, inside
from dispose.training.sources import FOLDER_FPS, ClipSource, list_clips, read_clip

#: A clip is rejected when more than ``max_people`` people are found in more than this share of its frames.
MULTI_PERSON_TOLERANCE = 0.05
#: How often (seconds) the manifest is rewritten while a run is going.
MANIFEST_INTERVAL = 30.0


@dataclass(frozen=True)
class PrepareSettings:
    """What a prepared shard depends on (a dataset must be prepared with one setting throughout)."""

    width: int = 768
    height: int = 1024
    sample_stride: int = 2
    max_frames: int | None = None
    references: int = 4
    flow_downscale: int = 4
    nms_kernel: int = 41
    jpeg_quality: int = 95
    folder_fps: float = FOLDER_FPS
    min_frames: int = 16
    min_score: float = 0.0
    min_visible: float = 0.3
    max_people: int = 1
    max_missing: float = 0.1
    dift: bool = True

    def check(self) -> None:
        if self.width % 8 or self.height % 8 or min(self.width, self.height) < 64:
            raise UserError(f"--size {self.width}x{self.height}: width and height must be multiples of 8 "
                            "and at least 64 (the VAE and DIFT work on 8-pixel blocks)")
        if self.flow_downscale not in (1, 2, 4, 8):
            raise UserError(f"--flow-downscale {self.flow_downscale}: use 1, 2, 4 or 8")
        if self.references < 1 or self.min_frames < 2 or self.sample_stride < 1:
            raise UserError("--references and --sample-stride must be at least 1, --min-frames at least 2")
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise UserError(f"--nms-kernel {self.nms_kernel}: use a positive odd number (CMP uses 41)")


#: ``--detector`` value -> the name a clip's record and ``ModelFiles.identity`` give it.
DETECTORS = {"dwpose": "DWPose", "mediapipe": "MediaPipe"}


@dataclass(frozen=True)
class ModelFiles:
    """Local weights of the per-clip models, the pose detector (``dwpose``: needs ``dwpose_dir``;
    ``mediapipe``) and the device they run on."""

    dwpose_dir: Path | None = None
    raft: Path | None = None
    sd15: Path | None = None
    device: str = "auto"
    detector: str = "dwpose"

    def identity(self) -> dict:
        """What the shards depend on (checked when a run resumes a dataset)."""
        return {"detector": DETECTORS[self.detector],
                "flow": f"RAFT {self.raft.name}" if self.raft else "DIS medium",
                "dift": str(self.sd15) if self.sd15 else None}

    def check(self) -> None:
        """The detector's weights are given (one line naming the weight-free choice when not)."""
        if self.detector not in DETECTORS:
            raise UserError(f"--detector {self.detector}: use dwpose or mediapipe")
        if self.detector == "dwpose" and self.dwpose_dir is None:
            raise UserError("DWPose weights not given: pass --dwpose-dir DIR (yolox_l.onnx, "
                            "dw-ll_ucoco_384.onnx), or --detector mediapipe (weight-free; costs the hand and "
                            "face keypoints the release's PoseNet was trained with)")


@dataclass
class ClipTools:
    """The loaded models of one worker."""

    detector: object
    detector_key: str  # dwpose | mediapipe
    flow: object
    flow_name: str
    dift: object | None
    dift_name: str | None

    @classmethod
    def load(cls, models: ModelFiles, settings: PrepareSettings, device: str) -> ClipTools:
        from dispose.devices import resolve_device
        from dispose.pose.detector_factory import load_detector
        from dispose.training.flow_estimators import load_flow_estimator

        models.check()
        torch_device = resolve_device(device)
        detector = load_detector(models.dwpose_dir if models.detector == "dwpose" else None, device=device)
        flow, flow_name = load_flow_estimator(models.raft, torch_device)
        dift = dift_name = None
        if settings.dift:
            import torch

            from dispose.guidance.dift import DiftFeaturizer

            dtype = torch.float16 if torch_device.type == "cuda" else torch.float32
            dift = DiftFeaturizer.from_pretrained(models.sd15, device=torch_device, dtype=dtype)
            dift_name = f"SD1.5 {models.sd15} ({dift.model_fingerprint()[:12]})"
        return cls(detector, models.detector, flow, flow_name, dift, dift_name)


class ClipRejected(Exception):
    """A clip that does not pass the filters (the message is the manifest's reason)."""


@dataclass
class _Poses:
    poses: list  # first person of every frame, filled, normalised to W x H
    people: list[int]
    detected: list[int]  # frames where somebody was found
    quality: dict = field(default_factory=dict)


def _detect(frames: np.ndarray, tools: ClipTools, settings: PrepareSettings, progress: bool) -> _Poses:
    from dispose.pose.extract import fill_missing

    n = len(frames)
    found = tools.detector.detect_people(frames, progress=progress)
    people = [len(p) for p in found]
    detected = [i for i, p in enumerate(found) if p]
    if not detected:
        raise ClipRejected(f"no person found in any of the {n} frames by {tools.detector.name}")
    missing = n - len(detected)
    if missing > settings.max_missing * n:
        raise ClipRejected(f"nobody found in {missing} of {n} frames "
                           f"(more than --max-missing {settings.max_missing})")
    crowded = sum(c > settings.max_people for c in people)
    if settings.max_people and crowded > MULTI_PERSON_TOLERANCE * n:
        raise ClipRejected(f"more than {settings.max_people} person(s) in {crowded} of {n} frames "
                           "(--max-people)")
    src_size = (int(frames.shape[2]), int(frames.shape[1]))
    size = (settings.width, settings.height)
    poses, _ = fill_missing([carry_pose(p[0], src_size, size) if p else None for p in found])
    shown = np.stack([inside(poses[i]) for i in detected])
    scores = np.stack([poses[i].body_score for i in detected])
    visible = float(shown.mean())
    score = float(scores[shown].mean()) if shown.any() else 0.0
    if visible < settings.min_visible:
        raise ClipRejected(f"only {visible:.0%} of the body keypoints are visible on average (--min-visible "
                           f"{settings.min_visible})")
    if score < settings.min_score:
        raise ClipRejected(f"mean keypoint score {score:.3f} is below --min-score {settings.min_score}")
    quality = {"detector": tools.detector.name, "mean_score": round(score, 4),
               "visible_fraction": round(visible, 4), "people": max(people), "multi_person_frames": crowded,
               "missing_frames": missing}
    return _Poses(poses, people, detected, quality)


def reference_candidates(detected: list[int], count: int) -> list[int]:
    """``count`` frame indices spread evenly over ``detected`` (fewer when there are fewer frames)."""
    picks = np.linspace(0, len(detected) - 1, min(count, len(detected))).round().astype(int)
    return sorted({detected[i] for i in picks})


def _flows(frames: np.ndarray, references: list[int], tools: ClipTools, settings: PrepareSettings,
           progress: bool) -> dict[str, np.ndarray]:
    import cv2
    from tqdm.auto import tqdm

    from dispose.guidance.optical_flow import check_flow
    from dispose.guidance.watershed import watershed_points

    n, h, w = (len(frames), settings.height // settings.flow_downscale,
               settings.width // settings.flow_downscale)
    flows = np.zeros((len(references), n, 2, h, w), np.float16)
    offsets, points, vectors = [0], [], []
    bar = tqdm(total=len(references) * (n - 1), desc="optical flow", unit="pair", disable=not progress,
               leave=False)
    for r, ref in enumerate(references):
        for t in range(n):
            if t != ref:
                flow = check_flow(tools.flow(frames[ref], frames[t]), f"flow {ref}->{t}", frames.shape[1:3])
                rows, cols = watershed_points(flow, settings.nms_kernel, seed=r * n + t)
                points.append(np.stack([cols, rows], 1))
                vectors.append(flow[rows, cols])
                small = (cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA) if settings.flow_downscale > 1
                         else flow)
                flows[r, t] = small.transpose(2, 0, 1)
                bar.update()
            offsets.append(offsets[-1] + (len(points[-1]) if t != ref else 0))
    bar.close()
    return {"references": np.asarray(references, np.int64), "flow": flows,
            "watershed_offsets": np.asarray(offsets, np.int64),
            "watershed_points": (np.concatenate(points).astype(np.int16) if points
                                 else np.zeros((0, 2), np.int16)),
            "watershed_vectors": (np.concatenate(vectors).astype(np.float16) if vectors
                                  else np.zeros((0, 2), np.float16))}


def _point_embeddings(frames: np.ndarray, poses: list, references: list[int], tools: ClipTools,
                      settings: PrepareSettings) -> np.ndarray:
    from dispose.guidance.correspondence import point_embeddings

    out = []
    for ref in references:
        features = tools.dift(frames[ref])
        embeddings = point_embeddings(features, poses[ref].body, inside(poses[ref]),
                                      (settings.width, settings.height))
        out.append(embeddings.float().cpu().numpy())
    return np.stack(out).astype(np.float16)


def source_fingerprint(clip: ClipSource) -> dict:
    """``{"size", "sha256"}`` of the clip's file, or of its folder's frames (one digest over their hashes)."""
    import hashlib

    from dispose.hashing import fingerprint
    from dispose.training.sources import FRAME_SUFFIXES

    if clip.kind == "video":
        return fingerprint(clip.path)
    files = fingerprint(clip.path, FRAME_SUFFIXES)
    files = {name: entry for name, entry in files.items() if "/" not in name}
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"size": sum(entry["size"] for entry in files.values()), "sha256": digest, "files": len(files)}


def prepare_clip(clip: ClipSource, root: Path, settings: PrepareSettings, tools: ClipTools, *,
                 identity: dict, progress: bool = False) -> dict:
    """Prepare one clip into ``root/clips/<id>/`` and return its manifest record (never raises for a bad
    clip).

    The clip's folder is built beside its final place and renamed into it when complete
    (:func:`dispose.media.files.atomic_folder`), replacing an earlier attempt.
    """
    from dispose.media.files import atomic_folder

    start = time.perf_counter()
    record = {"id": clip.id, "source": str(clip.path), "kind": clip.kind, "status": "failed", "reason": None,
              "detector": tools.detector_key}
    with atomic_folder(shard.clip_dir(root, clip.id), option=f"clip folder of {clip.id}") as folder:
        files, people = [], []
        try:
            files, people = _write_shard(clip, folder, settings, tools, record, progress)
            record["status"] = "ok"
        except (ClipRejected, UserError) as error:
            record["reason"] = str(error)
        except Exception as error:  # noqa: BLE001 - one broken clip must never stop a run of thousands
            record["reason"] = f"{type(error).__name__}: {error}"
        if record["status"] != "ok":
            for path in folder.iterdir():
                path.unlink()
        record["seconds"] = round(time.perf_counter() - start, 2)
        shard.write_record(folder, {"format": shard.FORMAT, "settings": asdict(settings), "models": identity,
                                    "record": record, "people_per_frame": people, "files": files})
    return record


def _write_shard(clip: ClipSource, folder: Path, settings: PrepareSettings, tools: ClipTools, record: dict,
                 progress: bool) -> tuple[list[str], list[int]]:
    """Compute and write the clip's files into ``folder``, filling ``record``; returns the file names and the
    people count of every frame.  Raises for a clip that cannot be prepared."""
    from dispose.media.geometry import resize_and_crop
    from dispose.pose.keypoints import PoseSequence

    record["fingerprint"] = source_fingerprint(clip)
    data = read_clip(clip, settings.sample_stride, settings.max_frames, settings.folder_fps)
    n = len(data.frames)
    record.update(frames=n, fps=round(data.fps, 4), source_fps=round(data.source_fps, 4),
                  source_frames=data.source_frames, stride=data.stride,
                  source_size=[int(data.frames.shape[2]), int(data.frames.shape[1])],
                  size=[settings.width, settings.height])
    if n < settings.min_frames:
        raise ClipRejected(f"{n} frames after sampling (stride {data.stride}), fewer than --min-frames "
                           f"{settings.min_frames}")
    poses = _detect(data.frames, tools, settings, progress)
    record["pose"] = poses.quality
    frames = np.stack([resize_and_crop(f, (settings.width, settings.height)) for f in data.frames])
    del data
    references = reference_candidates(poses.detected, settings.references)
    flows = _flows(frames, references, tools, settings, progress)
    meta = {"format": shard.FORMAT, "width": str(settings.width), "height": str(settings.height)}
    jpeg, offsets = shard.encode_jpegs(frames, settings.jpeg_quality)
    shard.write_tensors(folder / "frames.safetensors", {"jpeg": jpeg, "offsets": offsets}, meta)
    PoseSequence(poses.poses, settings.width, settings.height, record["fps"]).save(folder / "poses.json")
    shard.write_tensors(folder / "flows.safetensors", flows,
                        {**meta, "flow_model": tools.flow_name, "downscale": str(settings.flow_downscale),
                         "nms_kernel": str(settings.nms_kernel), "units": "pixels of width x height"})
    files = ["frames.safetensors", "poses.json", "flows.safetensors"]
    if tools.dift is not None:
        embeddings = _point_embeddings(frames, poses.poses, references, tools, settings)
        shard.write_tensors(folder / "dift.safetensors", {"point_embeddings": embeddings},
                            {**meta, "dift_model": tools.dift_name})
        files.append("dift.safetensors")
    record.update(references=references,
                  flow={"model": tools.flow_name, "downscale": settings.flow_downscale,
                        "pairs": len(references) * (n - 1), "nms_kernel": settings.nms_kernel},
                  dift=tools.dift_name, bytes=sum((folder / name).stat().st_size for name in files))
    return files, poses.people


# ---- the run: resume, workers, manifest ------------------------------------------------------------------

_WORKER: dict = {}


def _start_worker(models: ModelFiles, settings: PrepareSettings, devices) -> None:
    _WORKER["settings"], _WORKER["identity"] = settings, models.identity()
    try:
        _WORKER["tools"] = ClipTools.load(models, settings, devices.get())
    except Exception as error:  # noqa: BLE001 - reported by the first task, so the run stops with this message
        _WORKER["error"] = error


def _worker_prepare(clip: ClipSource, root: Path) -> dict:
    if "error" in _WORKER:
        raise _WORKER["error"]
    return prepare_clip(clip, root, _WORKER["settings"], _WORKER["tools"], identity=_WORKER["identity"])


def _worker_devices(device: str, workers: int) -> list[str]:
    """One device name per worker: CUDA devices in turn when several are visible and ``device`` allows it."""
    import torch

    count = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    if count > 1:
        return [f"cuda:{i % count}" for i in range(workers)]
    return [device] * workers


def _settings_json(settings: PrepareSettings) -> str:
    return json.dumps(asdict(settings), sort_keys=True, default=str)


def _todo(clips: list[ClipSource], root: Path, settings: PrepareSettings, identity: dict,
          retry_failed: bool) -> tuple[dict, list[ClipSource]]:
    done, todo = {}, []
    for clip in clips:
        stored = shard.read_record(shard.clip_dir(root, clip.id))
        if stored is None:
            todo.append(clip)
            continue
        if _settings_json(PrepareSettings(**stored["settings"])) != _settings_json(settings) \
                or stored["models"] != identity:
            raise UserError(f"{root} was prepared with other settings or models (clip {clip.id}: "
                            f"{stored['settings']}, {stored['models']}); use a new --out or the same options")
        record = stored["record"]
        if (record["status"] == "failed" and retry_failed) or \
                record.get("fingerprint", {}).get("sha256") != source_fingerprint(clip).get("sha256"):
            todo.append(clip)
        else:
            done[clip.id] = record
    return done, todo


def _results(todo: list[ClipSource], root: Path, settings: PrepareSettings, models: ModelFiles, workers: int,
             progress: bool) -> Iterator[dict]:
    """The record of every clip of ``todo`` as it finishes: in this process, or in ``workers`` processes."""
    if not todo:
        return
    identity = models.identity()
    if workers == 1 or len(todo) == 1:
        tools = ClipTools.load(models, settings, models.device)
        for clip in todo:
            yield prepare_clip(clip, root, settings, tools, identity=identity, progress=progress)
        return
    context = multiprocessing.get_context("spawn")
    devices = context.Queue()
    for name in _worker_devices(models.device, min(workers, len(todo))):
        devices.put(name)
    pool = ProcessPoolExecutor(min(workers, len(todo)), mp_context=context, initializer=_start_worker,
                               initargs=(models, settings, devices))
    try:
        for future in as_completed([pool.submit(_worker_prepare, clip, root) for clip in todo]):
            yield future.result()
    finally:  # on an error or Ctrl-C, the queued clips are dropped (finished ones are kept on disk)
        pool.shutdown(wait=True, cancel_futures=True)


def _ranks() -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` of a ``torchrun`` / ``accelerate launch`` process ((0, 1, 0)
    alone)."""
    import os

    return tuple(int(os.environ.get(name, default)) for name, default in
                 (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))


def _rank_device(device: str, local_rank: int, world: int) -> str:
    """The device of one launched process: its own CUDA device (``LOCAL_RANK``) when ``device`` allows it."""
    import torch

    if world > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return device


def _barrier(world: int) -> None:
    """Wait for every launched process (gloo: works beside any device; a no-op alone)."""
    import torch.distributed as dist

    if world == 1:
        return
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()


def prepare_dataset(source: str | Path, out: str | Path, settings: PrepareSettings, models: ModelFiles, *,
                    workers: int = 1, retry_failed: bool = False, progress: bool = True) -> list[dict]:
    """Prepare every clip of ``source`` into ``out`` (module docstring); returns the manifest records.

    Launched as several processes (``torchrun`` / ``accelerate launch``, any node count: ``RANK`` and
    ``WORLD_SIZE`` in the environment) each process prepares every ``WORLD_SIZE``-th clip of the input, from
    its ``RANK``, on its own device, into the same folder (clip folders are locked one by one, so no two
    processes write one clip); the manifest is written by rank 0 once every process has finished, from the
    clip records on disk.  A rerun completes whatever is missing.
    """
    from tqdm.auto import tqdm

    from dispose.media.files import ensure_folder

    settings.check()
    models.check()
    if settings.dift and models.sd15 is None:
        raise UserError("DIFT point embeddings need Stable Diffusion 1.5: pass --sd15 DIR (local "
                        "stable-diffusion-v1-5 folder), or --no-dift "
                        "(then the point encoder cannot be trained)")
    if workers < 1:
        raise UserError(f"--workers {workers}: use at least 1")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} exists and is not a folder")
    rank, world, local_rank = _ranks()
    if world > 1:
        models = replace(models, device=_rank_device(models.device, local_rank, world))
    clips = list_clips(source)
    identity = models.identity()
    records, todo = _todo(clips[rank::world], root, settings, identity, retry_failed)
    created = [folder for folder in (root, root / shard.CLIPS) if not folder.exists()]
    ensure_folder(root / shard.CLIPS, "--out", named=root)
    order = [clip.id for clip in clips]

    def manifest() -> None:
        shard.write_manifest(root, [records[i] for i in order if i in records])

    if todo:
        share = f" (process {rank} of {world})" if world > 1 else ""
        print(f"{len(clips)} clip(s){share}: {len(records)} already prepared, {len(todo)} to do")
    last = time.monotonic()
    try:
        for record in tqdm(_results(todo, root, settings, models, workers, progress), total=len(todo),
                           desc="prepare", unit="clip", disable=not progress):
            records[record["id"]] = record
            if world == 1 and time.monotonic() - last > MANIFEST_INTERVAL:
                manifest()
                last = time.monotonic()
    except BaseException:  # a refusal (e.g. a model that does not load) leaves no empty folder behind
        for folder in reversed(created):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    _barrier(world)
    if world > 1:  # every process's clips are on disk now
        stored = {clip.id: shard.read_record(shard.clip_dir(root, clip.id)) for clip in clips}
        records = {key: value["record"] for key, value in stored.items() if value is not None}
    if rank == 0:
        manifest()
    _barrier(world)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return [records[i] for i in order if i in records]
