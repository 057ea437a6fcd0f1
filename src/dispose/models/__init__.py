"""Networks: motion and point encoders, hybrid ControlNets, the base animation UNets and PoseNet.

* :mod:`.motion_encoder` (Eq. 5), :mod:`.point_encoder` (Eq. 7): DisPose's guidance encoders.
* :mod:`.hybrid_controlnet`: what every hybrid ControlNet shares (Eq. 8); :mod:`.controlnet_svd`: the one
  for Stable Video Diffusion / MimicMotion; :mod:`.controlnet_sd`: the one for SD1.5 / MusePose.
* :mod:`.unet_mimicmotion`, :mod:`.pose_net`: MimicMotion's UNet (pose latents + ControlNet residuals) and
  PoseNet; :mod:`.musepose`: MusePose's denoising UNet, motion modules, reference UNet and attention.
* :mod:`.release_compat`: the diffusers-0.27 temporal context order the release runs with.
"""
