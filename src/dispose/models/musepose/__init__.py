"""MusePose's networks (TMElyralab/MusePose, an optimised Moore-AnimateAnyone), on diffusers' building blocks.

* :mod:`.denoising_unet`: the SD1.5 UNet inflated to video with AnimateDiff-v2 motion modules
  (:mod:`.motion_module`), pose features after ``conv_in``, ControlNet residuals on its skips and mid block.
* :mod:`.reference`: the reference UNet and the reference attention (attention processors sharing a bank).
* :mod:`.release_files`: the pose guider, what each published file holds and the key mapping.

Checked against the release's code on identical tiny random weights: one classifier-free-guided noise
prediction with reference attention, the pose guider, and whole sampling runs
(:mod:`dispose.bases.musepose.pipeline`); ``bench/bench_musepose_vs_release.py`` prints the differences and
the README quotes them.
"""
