"""The settings of one animation (:class:`JobSettings`), as the engine and the bases read them.

Job files, command-line overrides and the sidecar are the front doors' business (:mod:`dispose.jobs`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from dispose.errors import UserError


@dataclass
class JobSettings:
    """One animation; the defaults are the release's ``configs/test.yaml`` settings."""

    ref: Path | None = None
    driving: Path | None = None
    out: Path | None = None
    resolution: int = 576
    num_frames: int = 16  # tile size (release name)
    frames_overlap: int = 6
    num_inference_steps: int = 25
    guidance_scale: float = 2.0  # max guidance; the release uses it as min and max
    min_guidance_scale: float | None = None  # None = guidance_scale (constant, release)
    noise_aug_strength: float = 0.0
    sample_stride: int = 2
    fps: int = 15  # output video fps; the UNet is conditioned on fps 7 regardless (conditioning_fps)
    conditioning_fps: int = 7
    motion_bucket_id: int = 127
    decode_chunk_size: int = 8
    seed: int = 42
    max_frames: int | None = None  # driving frames after the stride; None = all
    controlnet_scale: float = 1.0
    # ControlNet residuals made every k-th step, reused between (changes the output)
    controlnet_interval: int = 1
    baseline: bool = False  # True = plain MimicMotion (no DisPose guidance)
    # undetected keypoints in F_s / P_d as the release (default: ignored)
    release_missing_points: bool = False
    # pose alignment to the reference (dispose.pose.alignment; global = the release's fit)
    align: str = "global"
    match_release: bool = False  # reproduce the release as it ships (dispose.models.release_compat, README)
    strict: bool = False  # refuse a driving video shorter than its container declares (default: warn)
    base: str | None = None  # base model (dispose.bases); None = the default
    side_by_side: Path | None = None
    guidance: Path | None = None  # a folder written by `dispose guidance`, reused instead of recomputing
    poses: Path | None = None  # driving poses from a file (our JSON or OpenPose JSON) instead of the detector

    def validate(self, where: str = "") -> None:
        """Type and bound every field by its rule (:data:`dispose.validation.JOB_RULES`; values are converted
        in place, e.g. "1e-3" to 0.001), then the rules between fields; a UserError names ``where`` (a job
        file and job) and the field."""
        from dispose.validation import JOB_RULES

        for name, rule in JOB_RULES.items():
            setattr(self, name, rule.check(getattr(self, name), f"{where}{name}"))
        problems = []
        if self.guidance is None and (self.ref is None or self.driving is None):
            problems.append("each job needs a reference image (--ref / ref) and a driving video (--driving / "
                            "driving), or a saved guidance (--guidance / guidance)")
        if not self.frames_overlap < self.num_frames:
            problems.append(f"frames_overlap must be less than num_frames, got {self.frames_overlap} / "
                            f"{self.num_frames}")
        if problems:
            raise UserError(where + "; ".join(problems))

    @property
    def guidance_range(self) -> tuple[float, float]:
        low = self.guidance_scale if self.min_guidance_scale is None else self.min_guidance_scale
        return low, self.guidance_scale

    def to_dict(self) -> dict:
        return {key: (str(value) if isinstance(value, Path) else value)
                for key, value in dataclasses.asdict(self).items()}
