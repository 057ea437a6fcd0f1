"""From files to pipeline inputs: reference image, driving poses, skeleton images and DisPose guidance.

Follows the release's ``inference_ctrl.py::preprocess``: the reference is resized and centre-cropped
to the generation size (576 wide for portraits, 9:16); poses are detected on the driving frames
(every ``sample_stride``-th), aligned to the reference and drawn at the generation size; frame 0 of
the pose sequence is the reference's own pose.  DisPose's guidance is computed once per job from the
reference and the poses, and its models (SD1.5 for DIFT, CMP) are released before sampling.

The DIFT ensemble is seeded with the job's seed (the release draws it from the unseeded global RNG).

Pixel arithmetic of the release's script, reproduced (:meth:`JobInputs.sampling_inputs`): it runs with
torch's default dtype set to fp16 (float32 with ``--no_use_float16``), so the skeleton images become
``uint8 / 127.5 - 1`` computed in that dtype, and the reference reaches the pipeline after a round trip
``((uint8 / 127.5 - 1) + 1) * 127.5`` truncated back to uint8, which lowers some dark grey levels by
one (in fp16: 1-8, 18-21 and 36-43; in float32: 63 of the 256 levels).  Both the CLIP embedding and
the VAE latent see that reference; DIFT, the pose detector and the side-by-side video see the original.
We do this arithmetic in fp16 when the models run in fp16, else in float32.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dispose.pipelines.guidance_inputs import DisPoseGuidance


@dataclass
class JobInputs:
    """Everything sampling needs, at the generation size (W, H)."""

    reference: np.ndarray  # (H, W, 3) uint8
    pose_images: np.ndarray  # (N + 1, H, W, 3) uint8, frame 0 = reference pose
    reference_pose: object  # Pose of the reference
    driving: object  # PoseSequence of the N driving frames, aligned to the reference
    fps: float  # driving fps after the stride
    filled: int  # driving frames without a person that reuse the last pose

    @property
    def poses(self) -> list:
        """N + 1 poses, frame 0 = the reference."""
        return [self.reference_pose, *list(self.driving.poses)]

    @property
    def size(self) -> tuple[int, int]:
        return self.reference.shape[1], self.reference.shape[0]

    def sampling_inputs(self, dtype: torch.dtype = torch.float32) -> tuple[np.ndarray, torch.Tensor]:
        """The reference (H, W, 3) uint8 and the skeleton images (N + 1, 3, H, W) in [-1, 1] as the release's
        script hands them to its pipeline, for models running in ``dtype`` (see the module docstring)."""
        arithmetic = torch.float16 if dtype == torch.float16 else torch.float32
        reference = torch.from_numpy(self.reference).to(arithmetic) / 127.5 - 1.0
        reference = ((reference + 1.0) * 127.5).to(torch.uint8).numpy()
        poses = torch.from_numpy(self.pose_images).permute(0, 3, 1, 2).to(arithmetic) / 127.5 - 1.0
        return reference, poses


def load_inputs(ref: Path, driving: Path, *, resolution: int, sample_stride: int, max_frames: int | None,
                detector, align: str | None = None) -> JobInputs:
    """Read, resize and pose-annotate the reference and the driving video (contracts of dispose.media/pose)."""
    from dispose.media.video import read_video
    from dispose.pose.drawing import draw_pose
    from dispose.pose.extract import extract_poses, load_reference

    reference, reference_pose = load_reference(ref, resolution, detector)
    clip = read_video(driving, sample_stride=sample_stride, max_frames=max_frames)
    options = {} if align is None else {"align": align}
    extraction = extract_poses(reference, clip.frames, detector, progress=False, reference_pose=reference_pose,
                               **options)
    height, width = reference.shape[:2]
    poses = [extraction.reference, *list(extraction.driving.poses)]
    pose_images = np.stack([draw_pose(pose, width, height) for pose in poses])
    return JobInputs(reference=reference, pose_images=pose_images, reference_pose=extraction.reference,
                     driving=extraction.driving, fps=clip.fps, filled=int(extraction.filled))


def compute_guidance(inputs: JobInputs, *, sd15: Path, cmp_path: Path | None, dense: str, seed: int,
                     device: torch.device, dtype: torch.dtype,
                     release_missing_points: bool = False) -> tuple[DisPoseGuidance, dict[str, float]]:
    """DisPose guidance of a job (DIFT point embeddings, motion fields); returns it and stage timings (s).

    Each model is loaded, used once and freed before the next, so peak memory is one model at a time.
    ``release_missing_points`` treats undetected keypoints in F_s and P_d as the release does
    (:mod:`dispose.guidance.sparse_field`); by default they contribute nothing.
    """
    from dispose.errors import UserError

    if dense == "cmp" and cmp_path is None:
        raise UserError("the CMP dense motion field needs the CMP checkpoint (--cmp ckpt_iter_42000.pth.tar); "
                        "pass --dense propagate to use the weight-free field instead")
    import time

    from dispose.guidance.correspondence import body_keypoints, point_embeddings
    from dispose.guidance.dift import REFERENCE_SETTING, DiftFeaturizer
    from dispose.guidance.motion_fields import compute_motion_fields
    from dispose.guidance.trajectories import body_trajectories

    timings = {}
    width, height = inputs.size
    start = time.perf_counter()
    featurizer = DiftFeaturizer.from_pretrained(sd15, device=device, dtype=dtype)
    features = featurizer(inputs.reference, REFERENCE_SETTING, seed=seed)
    reference = inputs.reference_pose
    embeddings = point_embeddings(features, reference.body, reference.body_visible, (width, height))
    del featurizer, features
    _free(device)
    timings["dift"] = time.perf_counter() - start

    start = time.perf_counter()
    cmp = None
    if dense == "cmp":
        from dispose.guidance.cmp import load_cmp

        cmp = load_cmp(cmp_path, device=device)
    trajectories = body_trajectories(reference, inputs.driving, width, height)
    fields = compute_motion_fields(inputs.reference, trajectories, dense=dense, cmp=cmp,
                                   release_missing_points=release_missing_points)
    del cmp
    _free(device)
    timings["motion_fields"] = time.perf_counter() - start

    points, visible = body_keypoints(inputs.poses)
    dense_flow = None if fields.dense is None else torch.as_tensor(fields.dense).float().cpu()
    guidance = DisPoseGuidance(sparse_flow=torch.as_tensor(fields.sparse).float().cpu(), dense_flow=dense_flow,
                               point_embeddings=embeddings.float().cpu(), points=points, visible=visible)
    return guidance, timings


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
