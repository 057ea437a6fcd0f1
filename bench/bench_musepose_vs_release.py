"""Our MusePose networks against the release's code on identical tiny random weights (run by hand).

Needs a checkout of github.com/TMElyralab/MusePose (``--release DIR``; its ``musepose/`` package is imported,
never copied) and einops.  Builds our tiny models (:mod:`dispose.bases.musepose.tiny`), writes them in the
release's file layout, loads those files into the release's ``UNet3DConditionModel`` (with
``configs/inference_v2.yaml``'s motion-module settings), ``UNet2DConditionModel`` and ``PoseGuider`` with
``strict=True``, then compares one classifier-free-guided noise prediction with reference attention
(``ReferenceAttentionControl`` write/read, ``fusion_blocks="full"``) and the pose guider's output with ours;
then whole sampling runs of the release's ``Pose2VideoPipeline`` (long-video version, the one
``test_stage_2.py`` uses; fed the pose list padded as ``test_stage_2.py`` pads it) and of ours on the same
reference, poses and seed (shared tiny VAE and CLIP encoder), and compares the frames.

    python bench/bench_musepose_vs_release.py --release /path/to/MusePose [--frames 6]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch


def _import_release(root: Path):
    import diffusers.models.transformers.dual_transformer_2d as dual

    sys.modules.setdefault("diffusers.models.dual_transformer_2d", dual)  # moved in diffusers >= 0.26
    sys.path.insert(0, str(root))
    from musepose.models.mutual_self_attention import ReferenceAttentionControl
    from musepose.models.pose_guider import PoseGuider
    from musepose.models.unet_2d_condition import UNet2DConditionModel
    from musepose.models.unet_3d import UNet3DConditionModel

    return UNet3DConditionModel, UNet2DConditionModel, PoseGuider, ReferenceAttentionControl


MOTION_KWARGS = {"use_inflated_groupnorm": True, "unet_use_cross_frame_attention": False,
                 "unet_use_temporal_attention": False, "use_motion_module": True,
                 "motion_module_resolutions": [1, 2, 4, 8], "motion_module_mid_block": True,
                 "motion_module_decoder_only": False, "motion_module_type": "Vanilla",
                 "motion_module_kwargs": {"num_attention_heads": 8, "num_transformer_block": 1,
                                          "attention_block_types": ["Temporal_Self", "Temporal_Self"],
                                          "temporal_position_encoding": True,
                                          "temporal_position_encoding_max_len": 128,
                                          "temporal_attention_dim_div": 1}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", type=Path, required=True, help="a MusePose checkout")
    parser.add_argument("--frames", type=int, default=6)
    args = parser.parse_args()
    unet3d_cls, unet2d_cls, guider_cls, control_cls = _import_release(args.release)

    from dispose.bases.musepose.tiny import tiny_musepose_models, tiny_unet_config
    from dispose.models.musepose.reference import connect_reference_attention
    from dispose.models.musepose.release_files import release_states

    torch.manual_seed(0)
    denoising, reference, pose_guider, _ = tiny_musepose_models(seed=0)
    states = release_states(denoising, reference, pose_guider)
    config = {key: value for key, value in tiny_unet_config().items() if key != "_class_name"}
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "unet").mkdir()
        unet2d_cls(**config).save_config(Path(folder) / "unet")
        torch.save(states["denoising_unet.pth"], Path(folder) / "unet" / "diffusion_pytorch_model.bin")
        their_denoising = unet3d_cls.from_pretrained_2d(folder, "", subfolder="unet",
                                                        unet_additional_kwargs=MOTION_KWARGS)
    their_denoising.load_state_dict({**states["denoising_unet.pth"], **states["motion_module.pth"]},
                                    strict=True)
    their_reference = unet2d_cls(**config)
    their_reference.load_state_dict(states["reference_unet.pth"], strict=True)
    their_guider = guider_cls(32, block_out_channels=(16, 32, 96, 256))
    their_guider.load_state_dict(states["pose_guider.pth"], strict=True)

    frames = args.frames
    latents = torch.randn(1, 4, frames, 8, 8)
    ref_latent = torch.randn(1, 4, 8, 8)
    embeds = torch.randn(1, 1, 16)
    context = torch.cat([torch.zeros_like(embeds), embeds])
    poses = torch.rand(1, 3, frames, 64, 64)
    t = torch.tensor(501)
    with torch.no_grad():
        their_pose = their_guider(poses)
        our_pose = pose_guider(poses[0].transpose(0, 1)).transpose(0, 1)[None]
        print(f"pose guider: max |diff| {(their_pose - our_pose).abs().max():.3e}")

        writer = control_cls(their_reference, do_classifier_free_guidance=True, mode="write",
                             fusion_blocks="full")
        reader = control_cls(their_denoising, do_classifier_free_guidance=True, mode="read",
                             fusion_blocks="full")
        their_reference(ref_latent.repeat(2, 1, 1, 1), torch.zeros_like(t), encoder_hidden_states=context,
                        return_dict=False)
        reader.update(writer, dtype=torch.float32)
        theirs = their_denoising(latents.repeat(2, 1, 1, 1, 1), t, encoder_hidden_states=context,
                                 pose_cond_fea=their_pose.repeat(2, 1, 1, 1, 1), return_dict=False)[0]
        reader.clear()
        writer.clear()

        bank = connect_reference_attention(reference, denoising)
        reference(ref_latent, torch.zeros(()), encoder_hidden_states=embeds, return_dict=False)
        bank.reads = [None, 0]
        ours = denoising(latents.expand(2, -1, -1, -1, -1), t, context,
                         pose_features=our_pose.expand(2, -1, -1, -1, -1), return_dict=False)[0]
    for name, index in (("unconditional", 0), ("conditional", 1)):
        diff = (theirs[index] - ours[index]).abs().max().item()
        scale = theirs[index].abs().max().item()
        print(f"{name} half, {frames} frames: max |diff| {diff:.3e} (max |pred| {scale:.3f})")
    compare_pipelines(args.release, (their_denoising, their_reference, their_guider),
                      (denoising, reference, pose_guider))


def compare_pipelines(release: Path, theirs: tuple, ours: tuple, driving: int = 7, steps: int = 3) -> None:
    import numpy as np
    import PIL.Image
    import transformers
    from diffusers import DDIMScheduler

    from dispose.bases.musepose.pipeline import MUSEPOSE_SCHEDULER, DisPoseMusePosePipeline, padded_length
    from dispose.bases.musepose.tiny import _clip_and_vae

    transformers.CLIPImageProcessor = transformers.CLIPImageProcessorPil  # the release's, without torchvision
    from musepose.pipelines.pipeline_pose2vid_long import Pose2VideoPipeline

    with tempfile.TemporaryDirectory() as folder:
        _clip_and_vae(Path(folder))
        from diffusers import AutoencoderKL
        from transformers import CLIPVisionModelWithProjection

        vae = AutoencoderKL.from_pretrained(Path(folder) / "sd-vae-ft-mse")
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(Path(folder) / "image_encoder")
    size, context, overlap = 64, 4, 1
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    poses = rng.integers(0, 256, (driving + 1, size, size, 3), dtype=np.uint8)  # [reference pose, driving...]
    padded = padded_length(driving, context, overlap)
    pose_list = ([PIL.Image.fromarray(p) for p in poses[1:]]
                 + [PIL.Image.fromarray(poses[-1])] * (padded - driving))
    their_pipe = Pose2VideoPipeline(vae=vae, image_encoder=image_encoder, reference_unet=theirs[1],
                                    denoising_unet=theirs[0], pose_guider=theirs[2],
                                    scheduler=DDIMScheduler(**MUSEPOSE_SCHEDULER))
    their_pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        their_video = their_pipe(PIL.Image.fromarray(ref), pose_list, size, size, padded, steps, 3.5,
                                 generator=torch.manual_seed(99), context_frames=context, context_stride=1,
                                 context_overlap=overlap).videos[:, :, :driving]
    our_pipe = DisPoseMusePosePipeline(vae=vae, image_encoder=image_encoder, reference_unet=ours[1],
                                       denoising_unet=ours[0], pose_guider=ours[2],
                                       scheduler=DDIMScheduler(**MUSEPOSE_SCHEDULER))
    our_pipe.set_progress_bar_config(disable=True)
    pose_tensor = torch.from_numpy(poses).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    ours_video = our_pipe(ref, pose_tensor, num_inference_steps=steps, guidance_scale=3.5,
                          context_frames=context, context_overlap=overlap, generator=torch.manual_seed(99),
                          output_type="pt").frames
    diff = (their_video.permute(0, 2, 1, 3, 4) - ours_video).abs()
    peak = 10 * torch.log10(1 / diff.pow(2).mean()).item()
    print(f"whole sampling ({driving} frames padded to {padded}, windows of {context}/{overlap}, "
          f"{steps} steps, cfg 3.5): max |diff| {diff.max():.3e} on [0, 1], PSNR {peak:.1f} dB")


if __name__ == "__main__":
    main()
