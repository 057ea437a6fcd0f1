"""Training samples from a dataset made by ``dispose prepare`` (layout: :mod:`dispose.training.shard`).

A sample looks like an inference tile ``[reference, f1 .. f(T-1)]``: position 0 is a reference frame of the
clip (one of the candidates ``prepare`` computed DIFT embeddings and flows for) and positions 1..T-1 are
``T - 1`` consecutive prepared frames (already thinned by the release's stride rule), starting anywhere in
the clip; the reference may lie inside or outside that window.  Every sample is a dict of CPU tensors, the
images as uint8 and the fields as float16 so that worker processes pass little shared memory; the training
models normalise them on the device (:func:`dispose.bases.training.model_inputs`):

=====================  ==========================  =====================================================
key                    shape, dtype                meaning
=====================  ==========================  =====================================================
``pixels``             (T, 3, H, W) uint8          RGB; ``[0]`` is the reference image
``pose_images``        (T, 3, H, W) uint8          skeletons (:func:`dispose.pose.drawing.draw_pose`);
                                                   ``[0]`` is the reference pose
``trajectories``       (T, K, 2) float32           body keypoints in pixels of W x H (K = 18); (0, 0)
                                                   where not visible
``visible``            (T, K) bool                 visible and inside the frame
``dense_flow``         (T - 1, 2, H, W) float16    ``dense_field="flow"``: the stored optical flow from the
                                                   reference to frames 1..T-1, pixels of W x H, channel
                                                   0 = x (used as ``F_d`` itself)
``watershed_flow``     (T - 1, 2, S, S) float16    ``dense_field="cmp"``: ``P_d`` at training (App. A), the
``watershed_mask``     (T - 1, 2, S, S) bool       stored watershed samples of the same flows on CMP's
                                                   S x S grid (S = 384) in the release's layout
                                                   (:func:`dispose.guidance.cmp.rasterize_sparse_flow`,
                                                   as inference builds ``P_d`` from keypoints), for CMP
                                                   to turn into ``F_d`` on the training device
``point_embeddings``   (K, C) float16              DIFT embeddings of the reference keypoints (zero where
                                                   not visible); (K, 0) for a dataset prepared --no-dift
                                                   opened with ``require_dift=False``
``points``             (T, K, 2) float32           keypoints normalised to [0, 1] (``trajectories / (W, H)``)
=====================  ==========================  =====================================================

Geometry: the stored frames (the ``--size`` of ``prepare``) are resized and centre-cropped to ``size`` as
inference does (:func:`dispose.media.geometry.resize_and_crop`), the flow is upsampled bilinearly from its
stored grid to the same frame (values scaled with the frame), poses are carried by the same map; keypoints
that leave the crop become invisible.  A watershed sample at stored pixel ``(c, r)`` sits at the pixel
centre ``(c + 0.5, r + 0.5)``, carried by the same map, and is written on CMP's grid as inference writes a
keypoint there (``x * S / W`` truncated); samples that leave the crop are dropped.

Random horizontal flip (``flip_probability``): pixels, skeletons and flows are mirrored together, the flow's
x component changes sign, and left/right keypoint labels are exchanged (:func:`dispose.training.geometry.
mirror_pose`), so keypoint k of the flipped sample is the anatomical keypoint k and the flow at every
reference keypoint still points to where that keypoint goes.  The point embeddings follow the relabelling
(the flipped "right shoulder" takes the stored embedding of the keypoint that was the left shoulder): DIFT of
a mirrored image is approximated by the mirrored DIFT of the image.

Randomness (reference, window start, flip) comes from ``numpy.random.default_rng([seed, epoch, index])``:
a sample is a pure function of its index, the seed and the epoch set by :meth:`TrainingDataset.set_epoch`
(the trainer calls it on the dataset itself at every epoch, on every process), never of the worker or the
process that loads it, so runs, resumed runs and any process count see the same data.
``samples_per_clip`` draws of every clip per epoch: index ``i`` belongs to clip ``i // samples_per_clip``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open

from dispose.bases.training import DENSE_FIELDS
from dispose.errors import UserError
from dispose.guidance.cmp.release_input import CMP_SIZE, rasterize_sparse_flow
from dispose.media.geometry import center_crop_box, resize_and_crop, resize_size
from dispose.pose.drawing import draw_pose
from dispose.pose.keypoints import NUM_BODY, PoseSequence
from dispose.training import shard
from dispose.training.geometry import BODY_MIRROR, carry_pose, inside, mirror_pose

#: ``data.dense_field`` values: CMP on the watershed samples (the paper's App. A), or the stored flow itself.
#: Clips whose parsed poses a dataset keeps in memory.
POSE_CACHE = 64


class TrainingDataset(torch.utils.data.Dataset):
    """Samples of the prepared clips in ``root`` (module docstring).

    Args:
        root: folder written by ``dispose prepare``.
        size: ``(W, H)`` of the samples; default: the prepared size.
        num_frames: ``T``, frames per sample including the reference (16).
        flip_probability: chance of a horizontal flip per sample.
        seed: seed of the per-sample random choices.
        samples_per_clip: samples per clip and epoch (the dataset's length is clips x this).
        require_dift: refuse a dataset without DIFT embeddings (prepared ``--no-dift``); with ``False``
            ``point_embeddings`` is a (K, 0) tensor for such clips.
        dense_field: ``"flow"`` (``dense_flow``) or ``"cmp"`` (``watershed_flow`` / ``watershed_mask``).
    """

    def __init__(self, root: str | Path, *, size: tuple[int, int] | None = None, num_frames: int = 16,
                 flip_probability: float = 0.5, seed: int = 0, samples_per_clip: int = 1,
                 require_dift: bool = True, dense_field: str = "flow") -> None:
        self.root = Path(root)
        if not (self.root / shard.MANIFEST).is_file():
            raise UserError(f"{self.root} holds no {shard.MANIFEST}: prepare it with "
                            f"'dispose prepare VIDEOS --out {self.root}'")
        if num_frames < 2 or samples_per_clip < 1 or not 0 <= flip_probability <= 1:
            raise ValueError("num_frames must be >= 2, samples_per_clip >= 1 and flip_probability in [0, 1]")
        if dense_field not in DENSE_FIELDS:
            raise ValueError(f"dense_field must be one of {DENSE_FIELDS}, got {dense_field!r}")
        self.num_frames, self.flip_probability, self.seed = num_frames, flip_probability, seed
        self.samples_per_clip, self.dense_field, self.epoch = samples_per_clip, dense_field, 0
        self.clips = []
        for record in shard.read_manifest(self.root):
            stored = (shard.read_record(shard.clip_dir(self.root, record["id"])) if record["status"] == "ok"
                      else None)
            if stored is not None and stored["record"]["frames"] >= num_frames - 1:
                self.clips.append(stored)
        if not self.clips:
            raise UserError(f"{self.root} has no finished clip with at least {num_frames - 1} frames")
        stored_sizes = {tuple(c["record"]["size"]) for c in self.clips}
        if len(stored_sizes) > 1:
            raise UserError(f"{self.root} mixes prepared sizes {sorted(stored_sizes)}; "
                            "prepare it with one --size")
        self.stored_size = stored_sizes.pop()
        self.size = tuple(size) if size is not None else self.stored_size
        without = [c["record"]["id"] for c in self.clips if "dift.safetensors" not in c["files"]]
        if without and require_dift:
            raise UserError(f"{self.root}: {len(without)} clip(s) (e.g. {without[0]}) have no DIFT "
                            "embeddings (prepared with --no-dift), which the point encoder trains on: "
                            "prepare again with --sd15 SD15_FOLDER")
        self._pose_cache: dict[int, PoseSequence] = {}

    def __len__(self) -> int:
        return len(self.clips) * self.samples_per_clip

    def set_epoch(self, epoch: int) -> None:
        """Choose the random draws of another epoch (call before iterating it)."""
        self.epoch = int(epoch)

    def _folder(self, clip: int) -> Path:
        return shard.clip_dir(self.root, self.clips[clip]["record"]["id"])

    def _poses(self, clip: int) -> PoseSequence:
        """The clip's poses, parsed once per process for the last :data:`POSE_CACHE` clips used."""
        if clip not in self._pose_cache:
            while len(self._pose_cache) >= POSE_CACHE:
                self._pose_cache.pop(next(iter(self._pose_cache)))
            text = (self._folder(clip) / "poses.json").read_text()
            self._pose_cache[clip] = PoseSequence.from_json(json.loads(text))
        return self._pose_cache[clip]

    def choose(self, index: int) -> dict:
        """The random draws of sample ``index``: clip, reference candidate, window start, flip."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        clip = index // self.samples_per_clip
        record = self.clips[clip]["record"]
        candidate = int(rng.integers(len(record["references"])))
        start = int(rng.integers(record["frames"] - (self.num_frames - 1) + 1))
        flip = bool(rng.random() < self.flip_probability)
        return {"clip": clip, "candidate": candidate, "reference": record["references"][candidate],
                "window": list(range(start, start + self.num_frames - 1)), "flip": flip}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        draw = self.choose(index)
        return self.sample(draw["clip"], draw["candidate"], draw["window"], draw["flip"])

    def sample(self, clip: int, candidate: int, window: list[int], flip: bool) -> dict[str, torch.Tensor]:
        """The sample of reference candidate ``candidate`` and frames ``window`` of clip ``clip``."""
        folder = self._folder(clip)
        reference = self.clips[clip]["record"]["references"][candidate]
        indices = [reference, *window]
        width, height = self.size
        out = {"pixels": self._pixels(folder, indices, flip)}

        poses = [carry_pose(self._poses(clip)[i], self.stored_size, self.size) for i in indices]
        poses = [mirror_pose(p) for p in poses] if flip else poses
        visible = np.stack([inside(p) for p in poses])
        points = np.where(visible[..., None], np.stack([p.body for p in poses]), 0.0).astype(np.float32)
        skeletons = np.stack([draw_pose(p, width, height) for p in poses])
        out["pose_images"] = _channels_first(skeletons)
        out["trajectories"] = torch.from_numpy(points * np.array([width, height], np.float32))
        out["visible"] = torch.from_numpy(visible)
        out["points"] = torch.from_numpy(points)

        with safe_open(str(folder / "flows.safetensors"), "pt") as handle:
            if self.dense_field == "flow":
                flows = handle.get_slice("flow")[candidate:candidate + 1, window[0]:window[-1] + 1][0]
                out["dense_flow"] = self._flows(flows.float(), flip).half()
            else:
                out["watershed_flow"], out["watershed_mask"] = self._watershed(
                    handle, clip, candidate, window, flip)
        out["point_embeddings"] = self._embeddings(folder, candidate, visible[0], flip)
        return out

    def _pixels(self, folder: Path, indices: list[int], flip: bool) -> torch.Tensor:
        with safe_open(str(folder / "frames.safetensors"), "np") as handle:
            offsets = handle.get_tensor("offsets")
            jpeg = handle.get_slice("jpeg")
            images = [shard.decode_jpeg(jpeg[int(offsets[i]):int(offsets[i + 1])]) for i in indices]
        images = np.stack([resize_and_crop(image, self.size) for image in images])
        pixels = _channels_first(images)
        return pixels.flip(-1).contiguous() if flip else pixels

    def _crop_geometry(self) -> tuple[tuple[int, int], tuple[int, int], torch.Tensor]:
        """Resized size (w, h), crop corner (left, top) and the per-channel scale of stored pixels."""
        resized = resize_size(*self.stored_size, self.size)
        corner = center_crop_box(*resized, self.size)
        scale = torch.tensor([resized[0] / self.stored_size[0], resized[1] / self.stored_size[1]])
        return resized, corner, scale

    def _flows(self, flows: torch.Tensor, flip: bool) -> torch.Tensor:
        (resized_w, resized_h), (left, top), scale = self._crop_geometry()
        flows = F.interpolate(flows, size=(resized_h, resized_w), mode="bilinear", align_corners=False)
        flows = flows[..., top:top + self.size[1], left:left + self.size[0]] * scale.view(1, 2, 1, 1)
        return _mirror_flow(flows) if flip else flows.contiguous()

    def _watershed(self, handle, clip: int, candidate: int, window: list[int],
                   flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored watershed samples of ``window``'s pairs on CMP's grid (module docstring)."""
        frames_in_clip = self.clips[clip]["record"]["frames"]
        offsets = handle.get_tensor("watershed_offsets")
        _, (left, top), scale = self._crop_geometry()
        width, height = self.size
        to_grid = np.array([CMP_SIZE / width, CMP_SIZE / height])
        flows = np.zeros((len(window), 2, CMP_SIZE, CMP_SIZE), np.float32)
        masks = np.zeros_like(flows)
        for slot, frame in enumerate(window):
            pair = candidate * frames_in_clip + frame
            start, stop = int(offsets[pair]), int(offsets[pair + 1])
            if start == stop:
                continue
            positions = handle.get_slice("watershed_points")[start:stop].double().numpy() + 0.5
            positions = positions * scale.numpy() - np.array([left, top])
            vectors = handle.get_slice("watershed_vectors")[start:stop].double().numpy() * scale.numpy()
            keep = (positions >= 0).all(1) & (positions[:, 0] < width) & (positions[:, 1] < height)
            positions, vectors = positions[keep], vectors[keep]
            if flip:
                positions[:, 0] = width - positions[:, 0]
                vectors[:, 0] = -vectors[:, 0]
            flows[slot], masks[slot] = rasterize_sparse_flow(positions * to_grid, vectors * to_grid)
        return torch.from_numpy(flows).half(), torch.from_numpy(masks).bool()

    def _embeddings(self, folder: Path, candidate: int, visible: np.ndarray, flip: bool) -> torch.Tensor:
        if not (folder / "dift.safetensors").is_file():
            return torch.zeros(NUM_BODY, 0, dtype=torch.float16)
        with safe_open(str(folder / "dift.safetensors"), "pt") as handle:
            embeddings = handle.get_slice("point_embeddings")[candidate:candidate + 1][0].float()
        if flip:
            embeddings = embeddings[list(BODY_MIRROR)]
        return (embeddings * torch.from_numpy(visible).unsqueeze(1)).half()


def _channels_first(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> uint8 (N, 3, H, W)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def _mirror_flow(flows: torch.Tensor) -> torch.Tensor:
    """Flows (N, 2, H, W) of the horizontally flipped frames: mirrored, x component negated."""
    mirrored = flows.flip(-1)
    mirrored[:, 0].neg_()
    return mirrored


def check_prepared(root: str | Path, detector: str) -> None:
    """Check the dataset ``root`` against the run's ``data.detector`` before any model loads: one line when
    its clips were posed by another detector, or mix detectors or flow models."""
    from dispose.training.prepare import DETECTORS

    records = shard.read_manifest(root) if (Path(root) / shard.MANIFEST).is_file() else []
    ok = [r for r in records if r["status"] == "ok"]
    found = {r.get("detector") or _legacy_detector(r) for r in ok}
    flows = {r["flow"]["model"] for r in ok}
    if len(found) > 1 or len(flows) > 1:
        mixed = sorted(found) if len(found) > 1 else sorted(flows)
        raise UserError(f"data.root {root} mixes clips prepared with {' and '.join(mixed)}; prepare the "
                        "dataset with one --detector and one flow model")
    if found and found != {detector}:
        (used,) = found
        raise UserError(f"data.root {root} was prepared with --detector {used} ({DETECTORS.get(used, used)} "
                        f"poses) but data.detector is {detector}: pass --set data.detector={used} to train "
                        f"on it, or prepare it again with --detector {detector}")


def _legacy_detector(record: dict) -> str:
    """The detector of a record written before records named it (from its pose quality's detector name)."""
    name = record.get("pose", {}).get("detector", "").lower()
    return "dwpose" if name.startswith("dwpose") else "mediapipe" if name.startswith("mediapipe") else name


def open_dataset(config) -> TrainingDataset:
    """The training dataset of a :class:`dispose.training.config.TrainConfig`, after the cheap checks
    (:func:`check_prepared`, :func:`dispose.bases.training.cmp_checkpoint`) that must pass before any model
    loads."""
    from dispose.bases.training import cmp_checkpoint

    data = config.data
    if data.root is None:
        raise UserError("data.root is not set: pass --data DATASET (a folder written by dispose prepare)")
    if not (Path(data.root) / shard.MANIFEST).is_file():
        raise UserError(f"--data {data.root} holds no {shard.MANIFEST}: prepare it with 'dispose prepare "
                        f"VIDEOS --out {data.root}'")
    check_prepared(data.root, data.detector)
    cmp_checkpoint(config)  # the CMP weights of data.dense_field=cmp are there
    return TrainingDataset(data.root, num_frames=data.num_frames, size=(data.width, data.height),
                           flip_probability=data.flip_probability, seed=config.train.seed,
                           samples_per_clip=data.samples_per_clip, dense_field=data.dense_field)
