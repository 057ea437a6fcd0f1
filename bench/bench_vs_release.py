"""Our MimicMotion + DisPose sampling against the official release's pipeline on identical tiny random weights
(run by hand).

Needs a checkout of github.com/lihxxx/DisPose (``--release DIR``; its ``mimicmotion/`` package is imported
at run time, never copied) and einops.  Builds our tiny random weights
(:func:`dispose.bases.mimicmotion.tiny.build_tiny_weights`), loads them into our engine and, strictly, into
the release's ``UNetSpatioTemporalConditionModel``, ``PoseNet`` and ``ControlNetSVDModel`` (``from_unet``, as
its ``loader.py``), and samples the shared dancer with the release's ``Ctrl_Pipeline`` and with ours: same
seed, steps, tiles (16 frames overlapping by 6), guidance 2.0, fps 7, noise augmentation 0, VAE decode chunks
of 8, fp32 on the CPU (the release's ``--no_use_float16``), frames converted to uint8 by truncation as its
``run_pipeline``, the reference frame dropped.

Where the comparison starts: the release's pre-processing (``inference_ctrl.preprocess``) needs DWPose's
weights, decord and torchvision, so it does not run here.  Both pipelines receive the same guidance, computed
once by our guidance stage in release mode (MediaPipe poses; ``F_d`` from the weight-free propagation, the
default, or with ``--dense cmp`` from our CMP port with the tiny random CMP weights; DIFT with the tiny SD1.5;
missing keypoints as the release), in the form ``preprocess`` returns it: the resized reference and the
skeleton images (reference pose first) as ``uint8 / 127.5 - 1`` in float32, ``F_s`` (Eq. 3), ``F_d`` in
float32, the normalised body keypoints of every frame (the release's ``candidate`` / ``subset`` dicts) and
the DIFT feature map of the reference, which each pipeline samples at the reference keypoints itself.  The
bench then does what ``run_pipeline`` does (the reference back to uint8 by truncation, the call, the frames
to uint8).  From there on (CLIP and VAE encodings, PoseNet, the point embeddings, point adapter, ControlNet,
UNet, tiling, scheduler, decoding) each side runs its own code.  Our default run recomputes its guidance
with its own rules (missing keypoints ignored, ``F_d`` stored in float16); ``--match-release`` uses the
release-mode guidance above.

Two adaptations on the release's side, changing no value beyond float rounding: its pipeline fixes the
width of the reference point embeddings at SD1.5's 1280 DIFT channels and its ControlNet builds the point
adapter at SD widths, so the tiny 32-channel DIFT map is padded with zero channels to 1280 and the point MLPs
are built at the tiny widths with zero input columns for the padding; and ``torch.cuda.device``, which the
release enters only to empty the CUDA cache, is skipped on a CPU-only torch.

The release pins diffusers 0.27, whose temporal blocks read the CFG halves' CLIP context in another order
(:mod:`dispose.models.release_compat`); the release's code here runs on our diffusers, which has the fixed
order.  "as shipped" puts 0.27's order back on its UNet and ControlNet with the same forward pre-hooks
``--match-release`` uses (``release_temporal_context``), so it measures the release's code with our
reproduction of 0.27's order, not diffusers 0.27 itself; "order corrected" runs it without them.

    python bench/bench_vs_release.py --release /path/to/DisPose [--frames 16] [--resolution 128] [--steps 3] \
        [--dense propagate|cmp]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from timing import SHARED, psnr_uint8

RELEASE_DIFT_WIDTH = 1280  # fixed in the release's pipeline


def _import_release(root: Path) -> dict:
    import diffusers.loaders

    if not hasattr(diffusers.loaders, "FromOriginalControlNetMixin"):  # renamed after diffusers 0.27
        diffusers.loaders.FromOriginalControlNetMixin = diffusers.loaders.FromOriginalModelMixin
    sys.path.insert(0, str(root))
    from mimicmotion.modules.controlnet import ControlNetSVDModel
    from mimicmotion.modules.point_adapter import PointAdapter
    from mimicmotion.modules.pose_net import PoseNet
    from mimicmotion.modules.unet import UNetSpatioTemporalConditionModel
    from mimicmotion.pipelines.pipeline_ctrl import Ctrl_Pipeline

    return {"unet": UNetSpatioTemporalConditionModel, "pose_net": PoseNet, "controlnet": ControlNetSVDModel,
            "point_adapter": PointAdapter, "pipeline": Ctrl_Pipeline}


def _padded_point_mlps(state: dict) -> dict:
    """Our ControlNet state with each point MLP's first layer given zero input columns up to 1280."""
    out = dict(state)
    for key, value in state.items():
        if key.startswith("point_adapter.model_list.") and key.endswith(".mlp.0.weight"):
            out[key] = torch.nn.functional.pad(value, (0, RELEASE_DIFT_WIDTH - value.shape[1]))
    return out


def release_pipeline(release: dict, ours):
    """The release's ``Ctrl_Pipeline`` holding our weights (strict loads), sharing our VAE and CLIP."""
    from diffusers import EulerDiscreteScheduler

    unet = release["unet"].from_config(ours.unet.config)
    unet.load_state_dict(ours.unet.state_dict(), strict=True)
    pose_net = release["pose_net"](noise_latent_channels=unet.config.block_out_channels[0])
    pose_net.load_state_dict(ours.pose_net.state_dict(), strict=True)
    controlnet = release["controlnet"].from_unet(unet)
    widths = [module.mlp[2].out_features for module in ours.controlnet.point_adapter.model_list]
    controlnet.point_adapter = release["point_adapter"](channels=widths)
    controlnet.load_state_dict(_padded_point_mlps(ours.controlnet.state_dict()), strict=True)
    scheduler = EulerDiscreteScheduler.from_config(ours.scheduler.config)
    pipe = release["pipeline"](vae=ours.vae, image_encoder=ours.image_encoder, unet=unet,
                               controlnet=controlnet, scheduler=scheduler,
                               feature_extractor=ours.feature_extractor, pose_net=pose_net)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def release_inputs(guidance, features: torch.Tensor) -> dict:
    """Our guidance as the release pipeline's call arguments (module docstring)."""
    import PIL.Image

    from dispose.guidance.correspondence import body_keypoints

    frames = guidance.num_frames
    points, visible = body_keypoints(guidance.poses)
    point_list = [{"candidate": np.where(seen[:, None], pts, -1.0),
                   "subset": np.where(seen, np.arange(len(seen)), -1)[None].astype(np.float64)}
                  for pts, seen in zip(points.numpy(), visible.numpy())]
    skeletons = torch.from_numpy(guidance.skeleton_images()).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    dense = torch.as_tensor(guidance.dense_flow[list(range(frames - 1))]).float()
    padding = (0, 0, 0, 0, 0, RELEASE_DIFT_WIDTH - features.shape[0])
    dift = torch.nn.functional.pad(features.float()[None], padding)
    reference = torch.from_numpy(guidance.reference).permute(2, 0, 1)[None].float() / 255.0
    signed = torch.from_numpy(guidance.reference).float() / 127.5 - 1.0  # as preprocess returns it, fp32
    image = PIL.Image.fromarray(((signed + 1.0) * 127.5).to(torch.uint8).numpy())  # as run_pipeline
    height, width = guidance.reference.shape[:2]
    return {"image": [image], "image_pose": skeletons, "num_frames": frames,
            "height": height, "width": width, "controlnet_flow": dense[None], "controlnet_image": reference,
            "traj_flow": guidance.sparse_flow()[None], "point_list": point_list, "dift_feats": [dift, dift]}


@contextlib.contextmanager
def _cpu_cuda_device():
    """``torch.cuda.device("cpu")`` raises on a CPU-only torch; the release enters it to empty the cache."""
    original = torch.cuda.device
    if not torch.cuda.is_available():
        torch.cuda.device = lambda device: contextlib.nullcontext()
    try:
        yield
    finally:
        torch.cuda.device = original


def run_release(pipe, inputs: dict, settings, *, context_027: bool) -> np.ndarray:
    from dispose.models.release_compat import release_temporal_context

    with torch.no_grad(), _cpu_cuda_device(), release_temporal_context([pipe.unet, pipe.controlnet],
                                                                        enabled=context_027):
        frames = pipe(**inputs, tile_size=settings.num_frames, tile_overlap=settings.frames_overlap,
                      fps=settings.conditioning_fps, motion_bucket_id=settings.motion_bucket_id,
                      controlnet_cond_scale=settings.controlnet_scale,
                      noise_aug_strength=settings.noise_aug_strength,
                      num_inference_steps=settings.num_inference_steps,
                      generator=torch.Generator().manual_seed(settings.seed),
                      min_guidance_scale=settings.guidance_scale, max_guidance_scale=settings.guidance_scale,
                      decode_chunk_size=settings.decode_chunk_size, output_type="pt",
                      device=torch.device("cpu")).frames
    return (frames * 255.0).to(torch.uint8)[0, 1:].permute(0, 2, 3, 1).numpy()



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", type=Path, required=True, help="a checkout of lihxxx/DisPose")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dense", choices=("propagate", "cmp"), default="propagate",
                        help="F_d given to both: the weight-free field (displacements of tens of pixels, as "
                             "release_mode.py) or CMP with the tiny random weights (under 1 px)")
    args = parser.parse_args()
    release = _import_release(args.release)

    from dispose.bases.mimicmotion.tiny import build_tiny_weights
    from dispose.engine import Animator, Runtime
    from dispose.guidance.correspondence import point_embeddings
    from dispose.guidance.dift import REFERENCE_SETTING, DiftFeaturizer

    inputs = (SHARED / "musepose_ref.png", SHARED / "musepose_dance.mp4")
    with tempfile.TemporaryDirectory() as folder:
        weights = build_tiny_weights(Path(folder) / "w")
        runtime = Runtime(device="cpu", dtype="fp32", detector="mediapipe", dense=args.dense, progress=False)
        engine = Animator.load(weights=weights, runtime=runtime)
        settings = engine.settings(resolution=args.resolution, max_frames=args.frames,
                                   num_inference_steps=args.steps)
        matched = dataclasses.replace(settings, match_release=True)
        guidance = engine.compute_guidance(*inputs, settings=matched)
        features = DiftFeaturizer.from_pretrained(weights / "stable-diffusion-v1-5")(
            guidance.reference, REFERENCE_SETTING, seed=settings.seed)
        pose = guidance.reference_pose
        check = point_embeddings(features, pose.body, pose.body_visible, guidance.size)
        print(f"DIFT map given to the release vs our stored point embeddings: max |diff| "
              f"{(check - guidance.point_embeddings).abs().max():.1e}")
        ours = {"our default": np.asarray(engine.animate(*inputs, settings=settings).frames),
                "our --match-release": np.asarray(engine.animate(guidance=guidance, settings=matched).frames)}
        pipe = release_pipeline(release, engine.pipeline)
        given = release_inputs(guidance, features)
        theirs = {name: run_release(pipe, given, settings, context_027=order)
                  for name, order in (("release as shipped (0.27 context order)", True),
                                      ("release, context order corrected", False))}
    width, height = guidance.size
    dense_max = given["controlnet_flow"].abs().max().item()
    print(f"{args.frames} frames at {width}x{height}, {args.steps} steps, tiny random weights, seed "
          f"{settings.seed}, fp32 CPU, F_d {args.dense} (largest {dense_max:.1f} px); guidance given to the "
          "release: ours in release mode (see docstring)")
    for our_name, our_frames in ours.items():
        for their_name, their_frames in theirs.items():
            diff = np.abs(our_frames.astype(int) - their_frames.astype(int))
            print(f"{our_name:<20} vs {their_name:<40} PSNR {psnr_uint8(our_frames, their_frames):6.1f} dB, "
                  f"uint8 diff mean {diff.mean():.2e} max {diff.max()}, {np.count_nonzero(diff)} of "
                  f"{diff.size} values differ")


if __name__ == "__main__":
    main()
