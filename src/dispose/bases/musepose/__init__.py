"""MusePose (Stable Diffusion 1.5 + reference UNet + motion modules) as a DisPose base.

Everything lives in :mod:`dispose.bases.musepose.weights` (components, loader, sampling call, tiling in
context windows, defaults, tables) and :mod:`dispose.bases.musepose.pipeline` (the pipeline); this is its
registry entry.  Difference from MusePose's own script: frames are made at the generation size of every base
(``--resolution`` on the short side, 9:16, :mod:`dispose.media.geometry`), not resized to a 768x768 square and
back.
"""

from __future__ import annotations

from dispose.bases.musepose import random_weights, tiny, weights
from dispose.bases.musepose.training import MusePoseBase
from dispose.bases.registry import Base

MUSEPOSE = Base(
    name="musepose", title="MusePose (SD1.5, reference UNet, pose guider, motion modules)",
    components=weights.COMPONENTS, required_components=weights.required_components,
    load_pipeline=weights.load_pipeline, sample=weights.sample, tiles=weights.tiles,
    sampling_steps=weights.sampling_steps, steps_per_video=weights.steps_per_video,
    defaults=weights.DEFAULT_SETTINGS, parameter_counts=weights.parameter_counts,
    checkpoint_kinds={"dispose_musepose": "controlnet_cond_embedding."},
    verify_checkpoint=weights.verify_checkpoint, training=MusePoseBase,
    random_pipeline=random_weights.random_pipeline,
    tiny_weights=tiny.build_tiny_musepose_weights,
    unsupported={
        "match_release": "it reproduces DisPose's official release, which exists for MimicMotion only",
        "min_guidance_scale": "MusePose's guidance scale is the same for every frame (give --guidance-scale)",
        "noise_aug_strength": "MusePose adds no noise to the reference (an SVD conditioning)",
        "conditioning_fps": "MusePose has no fps conditioning (an SVD conditioning)",
        "motion_bucket_id": "MusePose has no motion bucket (an SVD conditioning)",
    },
)
