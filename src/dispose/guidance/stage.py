"""DisPose's guidance as one stage: from a reference image and driving frames (or poses) to everything the
hybrid ControlNet needs, computed once, reusable in memory and from a folder.

:func:`compute_guidance` runs, in order: the reference resized and centre-cropped to the generation size
(:mod:`dispose.media.geometry`); poses of the reference and of every sampled driving frame, aligned to the
reference (:mod:`dispose.pose.extract`; a video is decoded and posed as it is read, only its poses are held;
or poses read from a file); the keypoint trajectories
(:mod:`.trajectories`); the dense motion field ``F_d`` (CMP as the release, the weight-free propagation, or
none: :mod:`.motion_fields`); the DIFT point embeddings of the reference keypoints (:mod:`.dift`,
:mod:`.correspondence`).  Each model (detector aside) is loaded when given as a path, used once and freed.

:class:`Guidance` holds the result.  What is cheap to recompute is kept as its inputs: the sparse field
``F_s`` (Eq. 3) is generated from the trajectories where it is used (:meth:`Guidance.window`, on the
sampling device, per tile), ``P_d`` (Eq. 4) from the trajectories too; the skeleton images are drawn from
the poses.  Stored as data: the poses, the reference image, ``F_d`` and the point embeddings.

``F_d`` and the skeleton images live on disk while a job runs (:class:`~dispose.media.frame_store.FrameStore`:
an anonymous temporary file, or the saved folder's ``fields.safetensors`` read lazily), a tile at a time
in memory, so memory does not grow with the video's length.  ``F_d`` is kept in float16 by default
(:data:`DENSE_DTYPE`; the models run in fp16 on GPUs): the rounding
error is at most ``|F_d| * 2**-11`` per component (0.07 px for a 150 px displacement).  Both a one-shot
animation and one from a saved folder use the same rounded field, so they give identical frames.
``match_release=True`` keeps it in float32, as the release computes it.

A saved folder (:meth:`Guidance.save`, format :data:`FORMAT`) holds ``guidance.json`` (format, sizes,
settings, input fingerprints), ``reference.png``, ``reference.json`` / ``poses.json`` (aligned poses,
``dispose-poses/1``) and ``fields.safetensors`` (``dense_flow`` (N, 2, H, W), ``point_embeddings`` (18, C)).
Its ``fingerprint`` is a hash of the input files and of the settings that shape the guidance;
:meth:`Guidance.check_matches` names any difference from a new request.
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from dispose.errors import UserError
from dispose.media.frame_store import FrameStore, open_safetensors_tensor, write_safetensors
from dispose.pose.keypoints import Pose, PoseSequence

FORMAT = "dispose-guidance/2"
DENSE_DTYPE = torch.float16
#: Settings that shape a guidance: a saved one is reused only when a request agrees on all of them.
SHAPING_SETTINGS = ("resolution", "sample_stride", "max_frames", "align", "detector", "dense",
                    "release_missing_points", "dift", "seed")

Progress = Callable[[str, int, int], None]


@dataclass
class GuidanceModels:
    """Models of the guidance stage.  ``detector``: a :class:`~dispose.pose.detectors.PoseDetector` (None:
    MediaPipe); ``cmp``: a loaded CMP or its checkpoint path (needed for ``dense="cmp"``); ``sd15``: an SD1.5
    folder or a :class:`~dispose.guidance.dift.DiftFeaturizer` (None: no point embeddings)."""

    detector: object = None
    cmp: object = None
    sd15: object = None


@dataclass
class GuidanceTensors:
    """The per-video tensors the hybrid ControlNet reads, and their per-tile view.

    Attributes:
        trajectories: (N + 1, K, 2) body keypoints in pixels of ``width`` x ``height`` (frame 0 = the
            reference; (0, 0) where not visible), as :mod:`.trajectories`; ``visible``: (N + 1, K) bool.
        points: (N + 1, K, 2) the same keypoints normalised to [0, 1] (not clipped), for the correspondence.
        dense_flow: ``F_d`` (N, 2, H, W), a tensor or a :class:`~dispose.media.frame_store.FrameStore` (read a
            tile at a time), or None (zeros are given to the ControlNet).
        point_embeddings: (K, C) DIFT embeddings of the reference keypoints, or None.
        release_missing_points: undetected keypoints in ``F_s`` as the release (:mod:`.sparse_field`).
    """

    trajectories: torch.Tensor
    visible: torch.Tensor
    points: torch.Tensor
    dense_flow: torch.Tensor | FrameStore | None
    point_embeddings: torch.Tensor | None
    width: int
    height: int
    release_missing_points: bool = False

    def __post_init__(self) -> None:
        frames = self.trajectories.shape[0]
        if self.visible.shape != self.trajectories.shape[:2] or self.points.shape != self.trajectories.shape:
            raise ValueError(f"trajectories {tuple(self.trajectories.shape)}, "
                             f"visible {tuple(self.visible.shape)} "
                             f"and points {tuple(self.points.shape)} must agree")
        if (self.dense_flow is not None
                and tuple(self.dense_flow.shape) != (frames - 1, 2, self.height, self.width)):
            raise ValueError(f"dense_flow {tuple(self.dense_flow.shape)} does not fit "
                             f"{frames - 1} driving frames "
                             f"of {self.width}x{self.height}")

    @property
    def num_frames(self) -> int:
        """Frames of the video including the reference frame 0."""
        return self.trajectories.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def sparse_flow(self, frames: Sequence[int] | None = None, *, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None) -> torch.Tensor:
        """``F_s`` (Eq. 3) of driving frames ``frames`` (default all): (n, 2, H, W) on ``device``, written
        into ``out`` when given (a contiguous float32/float64 tensor: no new allocation)."""
        from dispose.guidance.sparse_field import sparse_field_torch

        frames = range(self.num_frames - 1) if frames is None else frames
        return sparse_field_torch(self.trajectories, self.visible, frames, self.height, self.width,
                                  release_missing_points=self.release_missing_points, device=device,
                                  dtype=dtype, out=out)

    def window(self, indices: Sequence[int], *, device: torch.device | str, dtype: torch.dtype) -> dict:
        """ControlNet guidance of one tile ``[0, i, i + 1, ...]`` (the arguments of
        ``controlnet.encode_guidance``): ``sparse_flow`` / ``dense_flow`` (T, 2, H, W) with zeros at the
        reference position (as the release prepends), ``point_features`` (T, C, H/16, W/16) and ``point_mask``
        (T, H/16, W/16) from the tile's keypoints, the reference pose at position 0.  ``F_s`` is generated
        here, on ``device`` (it is never stored)."""
        from dispose.guidance.correspondence import correspondence_map

        if self.point_embeddings is None:
            raise UserError("this guidance has no point embeddings (it was computed without SD1.5): "
                            "compute it with the SD1.5 weights (--sd15 or --weights)")
        indices = list(indices)
        if indices[0] != 0 or any(i <= 0 for i in indices[1:]):
            raise ValueError(f"a tile must start with the reference frame 0, got {indices[:3]}...")
        driving = [i - 1 for i in indices[1:]]
        sparse = torch.zeros(len(indices), 2, self.height, self.width, device=device, dtype=dtype)
        dense = torch.zeros_like(sparse)
        if driving and dtype in (torch.float32, torch.float64):  # written in place, into the tile's buffer
            self.sparse_flow(driving, device=device, dtype=dtype, out=sparse[1:])
        elif driving:
            sparse[1:] = self.sparse_flow(driving, device=device).to(dtype)
        if driving and self.dense_flow is not None:
            dense[1:] = torch.as_tensor(self.dense_flow[driving]).to(device, dtype)
        frames = torch.as_tensor(indices, dtype=torch.long)
        features, mask = correspondence_map(self.point_embeddings.to(device, dtype),
                                            self.points[frames].to(device),
                                            self.visible[frames].to(device), self.size)
        return {"sparse_flow": sparse, "dense_flow": dense, "point_features": features, "point_mask": mask}


@dataclass
class Guidance:
    """Guidance of one reference and N driving frames at the generation size W x H (see module docstring).

    Attributes:
        reference: (H, W, 3) uint8 reference image at the generation size.
        reference_pose: its pose; ``driving``: the N driving poses aligned to it.
        dense_flow: ``F_d`` (N, 2, H, W) in pixels (a tensor or a
            :class:`~dispose.media.frame_store.FrameStore`), or None.
        point_embeddings: (18, C) float32 DIFT embeddings of the reference keypoints, or None.
        fps: driving frame rate after sampling; ``filled``: driving frames without a person (filled).
        settings: the settings that made it (:data:`SHAPING_SETTINGS` and more); ``inputs``: fingerprints.
    """

    reference: np.ndarray
    reference_pose: Pose
    driving: PoseSequence
    dense_flow: torch.Tensor | FrameStore | None = None
    point_embeddings: torch.Tensor | None = None
    fps: float = 30.0
    filled: int = 0
    settings: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        height, width = self.reference.shape[:2]
        if (self.dense_flow is not None
                and tuple(self.dense_flow.shape) != (len(self.driving), 2, height, width)):
            raise ValueError(f"dense_flow {tuple(self.dense_flow.shape)} does not fit "
                             f"{len(self.driving)} frames "
                             f"of {width}x{height}")

    # ------------------------------------------------------------------ what it holds
    @property
    def size(self) -> tuple[int, int]:
        """(W, H), the generation size."""
        return self.reference.shape[1], self.reference.shape[0]

    @property
    def num_frames(self) -> int:
        """Frames of the video including the reference frame 0."""
        return len(self.driving) + 1

    @property
    def poses(self) -> list[Pose]:
        """N + 1 poses, frame 0 = the reference."""
        return [self.reference_pose, *self.driving.poses]

    @property
    def release_missing_points(self) -> bool:
        return bool(self.settings.get("release_missing_points", False))

    @cached_property
    def trajectories(self):
        """Body keypoint trajectories in pixels (:class:`~dispose.guidance.trajectories.Trajectories`)."""
        from dispose.guidance.trajectories import body_trajectories

        return body_trajectories(self.reference_pose, self.driving, *self.size)

    @property
    def tensors(self) -> GuidanceTensors:
        """The per-video tensors the ControlNet reads (:class:`GuidanceTensors`)."""
        from dispose.guidance.correspondence import body_keypoints

        traj = self.trajectories
        points, _ = body_keypoints(self.poses)
        return GuidanceTensors(trajectories=torch.from_numpy(traj.points),
                               visible=torch.from_numpy(traj.visible), points=points,
                               dense_flow=self.dense_flow, point_embeddings=self.point_embeddings,
                               width=traj.width, height=traj.height,
                               release_missing_points=self.release_missing_points)

    def sparse_flow(self, frames: Sequence[int] | None = None, *, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``F_s`` (Eq. 3) of driving frames ``frames`` (default all): (n, 2, H, W)."""
        return self.tensors.sparse_flow(frames, device=device, dtype=dtype)

    def reference_flow(self) -> tuple[np.ndarray, np.ndarray]:
        """``P_d`` (Eq. 4) on CMP's 384 x 384 grid and its mask, (N, 2, 384, 384) float32 each."""
        from dispose.guidance.reference_flow import reference_sparse_flow

        return reference_sparse_flow(self.trajectories, release_missing_points=self.release_missing_points)

    def skeleton_images(self, frames: Sequence[int] | None = None) -> np.ndarray:
        """Skeletons as the pose network sees them, (n, H, W, 3) uint8; frame 0 = the reference pose."""
        from dispose.pose.drawing import draw_pose

        poses = self.poses
        frames = range(len(poses)) if frames is None else frames
        return np.stack([draw_pose(poses[i], *self.size) for i in frames])

    def skeleton_store(self, chunk: int = 16) -> FrameStore:
        """All N + 1 skeleton images (:meth:`skeleton_images`) drawn into a :class:`FrameStore`, ``chunk``
        frames at a time."""
        width, height = self.size
        store = FrameStore((height, width, 3), np.uint8)
        for start in range(0, self.num_frames, chunk):
            store.append(self.skeleton_images(range(start, min(start + chunk, self.num_frames))))
        return store

    def window(self, indices: Sequence[int], *, device: torch.device | str, dtype: torch.dtype) -> dict:
        """ControlNet inputs of one tile: :meth:`GuidanceTensors.window`."""
        return self.tensors.window(indices, device=device, dtype=dtype)

    # ------------------------------------------------------------------ pictures
    def preview(self, frame: int, *, scales: tuple[float, float] | None = None,
                width: int | None = None) -> np.ndarray:
        """skeleton | F_s | F_d of driving frame ``frame`` as one uint8 picture (see
        :func:`dispose.guidance.pictures.guidance_picture`)."""
        from dispose.guidance.pictures import guidance_picture

        return guidance_picture(self, frame, scales=scales, width=width)

    # ------------------------------------------------------------------ identity
    @property
    def fingerprint(self) -> str:
        """Hash of the input fingerprints and the shaping settings."""
        shaping = {key: self.settings.get(key) for key in SHAPING_SETTINGS}
        text = json.dumps({"inputs": {k: v.get("sha256") for k, v in self.inputs.items()},
                           "settings": shaping},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def check_matches(self, where: str, *, inputs: dict | None = None, settings: dict | None = None) -> None:
        """Raise a UserError naming every difference between this guidance and a request's input fingerprints
        (``{"reference": {"sha256": ...}, ...}``) and shaping settings (only those given are compared)."""
        problems = []
        for key, value in (inputs or {}).items():
            mine = self.inputs.get(key, {}).get("sha256")
            if value is not None and mine is not None and value.get("sha256") != mine:
                problems.append(f"it was made from another {key} ({self.inputs[key].get('path')})")
        for key, value in (settings or {}).items():
            if key in SHAPING_SETTINGS and value is not None and self.settings.get(key) != value:
                problems.append(f"it was made with {key} {self.settings.get(key)!r}, not {value!r}")
        if problems:
            raise UserError(f"guidance {where} does not fit this request: {'; '.join(problems)}; "
                            "run `dispose guidance` again with these inputs and settings, "
                            "or drop the differing options")

    # ------------------------------------------------------------------ folder
    def save(self, folder: str | Path) -> None:
        """Write the guidance files into ``folder`` (an existing, empty folder: the caller writes the folder
        as a unit, see :func:`dispose.media.files.atomic_folder`)."""
        from dispose.media.files import atomic_path
        from dispose.media.image import save_image

        folder = Path(folder)
        save_image(folder / "reference.png", self.reference)
        PoseSequence([self.reference_pose], *self.size).save(folder / "reference.json")
        self.driving.save(folder / "poses.json")
        tensors = {}
        if self.dense_flow is not None:
            tensors["dense_flow"] = self.dense_flow
        if self.point_embeddings is not None:
            tensors["point_embeddings"] = self.point_embeddings.float()
        with atomic_path(folder / "fields.safetensors") as tmp:
            write_safetensors(tmp, tensors)
        info = {"format": FORMAT, "width": self.size[0], "height": self.size[1], "frames": len(self.driving),
                "fps": self.fps, "filled": self.filled, "settings": self.settings, "inputs": self.inputs,
                "fingerprint": self.fingerprint,
                "tensors": {"dense_flow": "F_d (N, 2, H, W): reference -> driving frame n, pixels of W x H, "
                                          "channel 0 = x",
                            "point_embeddings": "(18, C) DIFT features at the reference body keypoints"}}
        (folder / "guidance.json").write_text(json.dumps(info, indent=2, default=str) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> Guidance:
        """Read a folder written by :meth:`save`; a UserError names what is missing or of another format."""
        from safetensors import SafetensorError, safe_open

        from dispose.media.image import load_image
        from dispose.pose.json_poses import checked_finite
        from dispose.validation import finite

        folder = Path(folder)
        info_path = folder / "guidance.json"
        if not info_path.is_file():
            raise UserError(f"--guidance {folder} holds no guidance.json: "
                            "pass a folder written by `dispose guidance`")
        try:
            info = json.loads(info_path.read_text())
        except ValueError as error:
            raise UserError(f"{info_path} is not valid JSON ({error}); write the folder again with `dispose "
                            "guidance`") from None
        if info.get("format") != FORMAT:
            raise UserError(f"{folder} holds guidance of format {info.get('format')!r}, this version reads "
                            f"{FORMAT!r}; write it again with `dispose guidance`")
        missing = [name for name in ("reference.png", "reference.json", "poses.json", "fields.safetensors")
                   if not (folder / name).is_file()]
        if missing:
            raise UserError(f"guidance folder {folder} lacks {', '.join(missing)}; "
                            "write it again with `dispose guidance`")
        reference = load_image(folder / "reference.png")
        fields = folder / "fields.safetensors"
        damaged = f"guidance folder {folder}: {{}} is damaged ({{}}); write it again with `dispose guidance`"
        poses = {}
        for name in ("reference.json", "poses.json"):
            try:
                poses[name] = PoseSequence.from_json(json.loads((folder / name).read_text()))
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                raise UserError(damaged.format(name, error)) from None
            for number, pose in enumerate(poses[name]):
                checked_finite(pose, folder / name, number)
        try:
            with safe_open(str(fields), framework="pt") as handle:
                names = set(handle.keys())
                embeddings = handle.get_tensor("point_embeddings") if "point_embeddings" in names else None
            dense_flow = open_safetensors_tensor(fields, "dense_flow")
        except (ValueError, SafetensorError) as error:
            raise UserError(damaged.format(fields.name, " ".join(str(error).split()))) from None
        for name, tensor in (("dense_flow", dense_flow), ("point_embeddings", embeddings)):
            if tensor is not None and not _all_finite(tensor):
                raise UserError(damaged.format(fields.name, f"{name} holds NaN or infinite values"))
        fps = finite(info.get("fps"), f"{info_path}: fps")
        reference_pose, driving = poses["reference.json"][0], poses["poses.json"]
        try:
            guidance = cls(reference=reference, reference_pose=reference_pose, driving=driving,
                           dense_flow=dense_flow, point_embeddings=embeddings,
                           fps=fps, filled=int(info.get("filled", 0)), settings=info.get("settings", {}),
                           inputs=info.get("inputs", {}))
        except (ValueError, TypeError) as error:  # files that do not fit together (poses vs fields)
            raise UserError(damaged.format("poses.json or fields.safetensors", error)) from None
        if guidance.fingerprint != info.get("fingerprint"):
            raise UserError(f"guidance folder {folder} was changed after it was written "
                            "(fingerprint mismatch); write it again with `dispose guidance`")
        return guidance


def _all_finite(tensor) -> bool:
    """True when every value of a tensor or of a :class:`FrameStore` (read a chunk at a time) is finite."""
    if isinstance(tensor, torch.Tensor):
        return bool(torch.isfinite(tensor).all())
    return all(np.isfinite(chunk).all() for chunk in tensor.chunks())


# ---------------------------------------------------------------------------------------------- computing
def input_fingerprint(source) -> dict:
    """``{"path", "sha256", "size"}`` of a file, or ``{"sha256"}`` of an in-memory image / frames."""
    from dispose.hashing import fingerprint

    if isinstance(source, (str, Path)):
        return {"path": str(source), **fingerprint(source)}
    array = np.ascontiguousarray(np.asarray(source))
    digest = hashlib.sha256(array.tobytes())
    digest.update(str(array.shape).encode())
    return {"path": None, "sha256": digest.hexdigest(), "size": int(array.nbytes)}


def _reference_array(reference) -> np.ndarray:
    from PIL import Image

    from dispose.media.image import load_image

    if isinstance(reference, (str, Path)):
        return load_image(reference)
    if isinstance(reference, Image.Image):
        return np.asarray(reference.convert("RGB"))
    array = np.asarray(reference)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise UserError(f"reference image: expected (H, W, 3) uint8 RGB, got {array.dtype} {array.shape}")
    return array


def _driving_poses(driving, detector, frame: np.ndarray, reference_pose: Pose, *, sample_stride: int,
                   max_frames: int | None, fps: float | None, align: str, strict: bool):
    """(extraction, fps, source info) of a video path or of given frames (used as they are), aligned to the
    reference.  A video is decoded and posed a frame (or a detector's chunk) at a time: only its poses are
    held, so memory does not grow with its length."""
    from dispose.media.video import VideoFrames
    from dispose.pose.extract import extract_poses, stream_poses

    if isinstance(driving, (str, Path)):
        video = VideoFrames(driving, sample_stride, max_frames, release_stride=True, strict=strict)
        extraction = stream_poses(reference_pose, video, detector, (frame.shape[1], frame.shape[0]),
                                  align=align, fps=video.fps, total=video.expected_count)
        return extraction, video.fps, {"stride": video.stride, "source_fps": video.source_fps,
                                       "source_frame_count": video.source_frame_count,
                                       "decoded_frame_count": video.decoded_frame_count,
                                       "truncated": video.truncated}
    frames = driving if isinstance(driving, np.ndarray) else np.stack([np.asarray(f) for f in driving])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise UserError(f"driving frames: expected (N, H, W, 3) uint8 RGB, got {frames.dtype} {frames.shape}")
    clip_fps = float(fps or 30.0)
    extraction = extract_poses(frame, frames[:max_frames], detector, align=align, progress=False,
                               fps=clip_fps, reference_pose=reference_pose)
    return extraction, clip_fps, {"stride": 1}


def _poses_from_file(poses, driving, reference: np.ndarray, reference_pose: Pose, *, sample_stride: int,
                     max_frames: int | None, fps: float | None, align: str):
    """Driving poses read from a file, sampled like the video's frames (``driving`` a video path: its
    stride rule, frame size and rate; frames: their size; None: every ``sample_stride``-th pose of the file at
    its own rate), aligned to the reference.  Returns (extraction, fps, source info)."""
    from dispose.media.video import VideoFrames
    from dispose.pose.extract import align_sequence
    from dispose.pose.json_poses import load_pose_file

    frame_size, stride, rate = None, sample_stride, fps
    if isinstance(driving, (str, Path)):
        video = VideoFrames(driving, sample_stride, 1, release_stride=True)
        first = next(iter(video))
        frame_size, stride, rate = (first.shape[1], first.shape[0]), video.stride, video.fps
    elif driving is not None:
        first = np.asarray(driving[0])
        frame_size, stride = (first.shape[1], first.shape[0]), 1
    sequence = poses if isinstance(poses, PoseSequence) else load_pose_file(poses, frame_size)
    kept = sequence.poses[::stride][:max_frames]
    rate = float(rate or (sequence.fps / stride if sequence.fps else 30.0))
    extraction = align_sequence(reference_pose, PoseSequence(kept, sequence.width, sequence.height, rate),
                                (reference.shape[1], reference.shape[0]), align=align)
    return extraction, rate, {"stride": stride, "pose_frames_in_file": len(sequence)}


def reference_frame(reference, resolution: int, detector) -> tuple[np.ndarray, Pose]:
    """The reference resized and centre-cropped to the generation size (:mod:`dispose.media.geometry`) and its
    first person's pose; a UserError (naming the file) when it cannot be read or shows nobody."""
    from dispose.media.geometry import resize_and_crop, target_size

    image = _reference_array(reference)
    frame = resize_and_crop(image, target_size(image.shape[1], image.shape[0], resolution))
    people = detector.detect_people([frame], progress=False)[0]
    if not people:
        where = f" {reference}" if isinstance(reference, (str, Path)) else ""
        raise UserError(f"no person found in the reference image{where} by {detector.name}; use an image "
                        "showing one person, with the body visible")
    return frame, people[0]


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def compute_guidance(reference, driving=None, *, poses=None, resolution: int = 576, sample_stride: int = 2,
                     max_frames: int | None = None, fps: float | None = None, align: str = "global",
                     dense: str = "propagate", models: GuidanceModels | None = None,
                     release_missing_points: bool = False, match_release: bool = False, seed: int = 42,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                     strict: bool = False, on_progress: Progress | None = None,
                     timings: dict | None = None) -> Guidance:
    """The guidance of a reference and driving frames (module docstring).

    ``reference``: a path, PIL image or (H, W, 3) uint8 array of any size.  ``driving``: a video path
    (every ``sample_stride``-th frame, times int(fps / 24) as the release, at most ``max_frames``) or
    (N, H, W, 3) uint8 frames used as given (at most ``max_frames``; ``fps`` their rate).  ``poses``: a
    poses file (our JSON or OpenPose JSON) or a :class:`~dispose.pose.keypoints.PoseSequence` replacing the
    detector on the driving frames.  ``dense`` and
    ``models`` select ``F_d`` and the point embeddings; ``timings`` (a dict) receives seconds per stage.
    A video shorter than its container declares is a warning (both counts land in ``settings``), or with
    ``strict`` a UserError.
    """
    from dispose.devices import resolve_device
    from dispose.media.geometry import check_resolution

    check_resolution(resolution)
    models = models or GuidanceModels()
    device = resolve_device(device) if isinstance(device, str) else device
    timings = {} if timings is None else timings
    report = on_progress or (lambda stage, done, total: None)
    if dense not in ("cmp", "propagate", "none"):
        raise UserError(f"dense field must be one of cmp, propagate, none; got {dense!r}")
    if dense == "cmp" and models.cmp is None:
        raise UserError("the CMP dense motion field needs the CMP checkpoint "
                        "(--cmp ckpt_iter_42000.pth.tar); pass --dense propagate for the weight-free field, "
                        "or --dense none")
    detector = models.detector
    if detector is None:
        from dispose.pose.mediapipe_pose import MediaPipePose

        detector = MediaPipePose()

    start = time.perf_counter()
    report("poses", 0, 1)
    frame, reference_pose = reference_frame(reference, resolution, detector)
    if poses is not None:
        extraction, clip_fps, clip_info = _poses_from_file(poses, driving, frame, reference_pose,
                                                           sample_stride=sample_stride, max_frames=max_frames,
                                                           fps=fps, align=align)
    else:
        if driving is None:
            raise UserError("no driving video or frames given (--driving), and no poses file (--poses)")
        extraction, clip_fps, clip_info = _driving_poses(driving, detector, frame, reference_pose,
                                                         sample_stride=sample_stride, max_frames=max_frames,
                                                         fps=fps, align=align, strict=strict)
    timings["poses"] = time.perf_counter() - start
    report("poses", 1, 1)

    inputs = {"reference": input_fingerprint(reference)}
    if driving is not None:
        inputs["driving"] = input_fingerprint(driving)
    if isinstance(poses, (str, Path)):
        inputs["poses"] = input_fingerprint(poses)
    elif poses is not None:
        text = json.dumps(poses.to_json(), sort_keys=True).encode()
        inputs["poses"] = {"path": None, "sha256": hashlib.sha256(text).hexdigest(), "size": len(text)}
    settings = {"resolution": resolution, "sample_stride": sample_stride, "max_frames": max_frames,
                "align": align, "detector": getattr(detector, "name", type(detector).__name__),
                "dense": dense,
                "release_missing_points": bool(release_missing_points or match_release),
                "dift": models.sd15 is not None, "seed": seed, "dense_dtype": "float32" if match_release else
                str(DENSE_DTYPE).replace("torch.", ""), **clip_info}
    guidance = Guidance(reference=frame, reference_pose=extraction.reference, driving=extraction.driving,
                        fps=clip_fps, filled=int(extraction.filled), settings=settings, inputs=inputs)

    if dense != "none":
        start = time.perf_counter()
        report("dense motion field", 0, 1)
        guidance.dense_flow = dense_field(guidance, dense, models.cmp, device=device,
                                          dtype=torch.float32 if match_release else DENSE_DTYPE)
        timings["motion_fields"] = time.perf_counter() - start
        report("dense motion field", 1, 1)
    if models.sd15 is not None:
        start = time.perf_counter()
        report("point embeddings", 0, 1)
        guidance.point_embeddings = reference_point_embeddings(guidance, models.sd15, seed=seed,
                                                               device=device, dtype=dtype)
        timings["dift"] = time.perf_counter() - start
        report("point embeddings", 1, 1)
    return guidance


def dense_field(guidance: Guidance, method: str, cmp=None, *, device: torch.device,
                dtype: torch.dtype = DENSE_DTYPE) -> FrameStore:
    """``F_d`` of a guidance's trajectories by CMP (a model or its checkpoint path, loaded and freed here) or
    the weight-free propagation, (N, 2, H, W) in ``dtype`` (float16 or float32), written to a
    :class:`FrameStore` a chunk of frames at a time."""
    from dispose.guidance.motion_fields import dense_motion_field_chunks

    loaded = cmp
    if method == "cmp" and isinstance(cmp, (str, Path)):
        from dispose.guidance.cmp import load_cmp

        loaded = load_cmp(cmp, device=device)
    width, height = guidance.size
    field_ = FrameStore((2, height, width), torch.empty(0, dtype=dtype).numpy().dtype)
    # CMP decodes one frame per call on the CPU (there the fastest and smallest: bench/bench_cmp.py),
    # 8 elsewhere.
    chunk_size = 1 if device.type == "cpu" else 8
    for chunk in dense_motion_field_chunks(guidance.reference, guidance.trajectories, method, cmp=loaded,
                                           cmp_chunk_size=chunk_size,
                                           release_missing_points=guidance.release_missing_points):
        field_.append(torch.from_numpy(chunk).to(dtype))
    if loaded is not cmp:
        del loaded
        _free(device)
    return field_


def reference_point_embeddings(guidance: Guidance, sd15, *, seed: int, device: torch.device,
                               dtype: torch.dtype) -> torch.Tensor:
    """DIFT embeddings (18, C) float32 of the reference keypoints; ``sd15`` is a folder (loaded and freed
    here) or a :class:`~dispose.guidance.dift.DiftFeaturizer`.  The DIFT ensemble is seeded with ``seed``
    (the release draws it from the unseeded global RNG)."""
    from dispose.guidance.correspondence import point_embeddings
    from dispose.guidance.dift import REFERENCE_SETTING, DiftFeaturizer

    featurizer = sd15
    if not isinstance(sd15, DiftFeaturizer):
        featurizer = DiftFeaturizer.from_pretrained(sd15, device=device, dtype=dtype)
    features = featurizer(guidance.reference, REFERENCE_SETTING, seed=seed)
    pose = guidance.reference_pose
    embeddings = point_embeddings(features, pose.body, pose.body_visible, guidance.size).float().cpu()
    del features
    if featurizer is not sd15:
        del featurizer
        _free(device)
    return embeddings
