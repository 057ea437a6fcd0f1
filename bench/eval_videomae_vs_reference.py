"""Compare dispose's VideoMAE-v2 encoder with cd-fvd's ``VisionTransformer`` on random weights.

Usage: ``python bench/eval_videomae_vs_reference.py CDFVD_SRC [SHARED_DATA_DIR] [--giant]`` where
``CDFVD_SRC`` is a source checkout of github.com/songweige/content-debiased-fvd (only
``cdfvd/third_party/VideoMAEv2/videomaev2_finetune.py`` is imported).  Both models get the same
random state dict (default init plus N(0, 0.02) noise on every tensor, so norm scales, q/v biases
and the head differ from their init); prints the max abs difference of ``forward_features`` on a
16-frame clip of the dancer video (cd-fvd preprocessing) and on a 32-frame clip (position table
resized along time).  ``--giant`` uses the real ViT-g/14 layout (1B parameters, ~10 GB of RAM,
minutes on a CPU); the default is a 4-block, 192-d model with the same code paths.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from functools import partial
from pathlib import Path

import torch


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    giant = "--giant" in sys.argv
    data = Path(args[1]) if len(args) > 1 else Path(__file__).resolve().parents[2] / "shared" / "data"
    spec = importlib.util.spec_from_file_location(
        "videomaev2_finetune",
        Path(args[0]) / "cdfvd" / "third_party" / "VideoMAEv2" / "videomaev2_finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    from dispose.evaluation.videomae import VideoMAEv2, videomae_input
    from dispose.evaluation.videos import read_frames

    torch.manual_seed(0)
    if giant:
        reference = module.vit_giant_patch14_224(img_size=224, num_classes=174, all_frames=16, tubelet_size=2,
                                                 use_mean_pooling=True)
        ours = VideoMAEv2()
    else:
        reference = module.VisionTransformer(patch_size=14, embed_dim=192, depth=4, num_heads=3, mlp_ratio=4,
                                             qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                             num_classes=10, all_frames=16, tubelet_size=2,
                                             use_mean_pooling=True)
        ours = VideoMAEv2(dim=192, depth=4, heads=3, hidden=768)
    reference.eval()
    with torch.no_grad():
        for param in reference.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("head.")}
    ours.load_state_dict(state, strict=True)
    ours.eval()
    frames = read_frames(data / "musepose_dance.mp4", (288, 512), 1, 32)
    for count in (16, 32):
        clip = videomae_input(frames[:count])
        with torch.no_grad():
            start = time.perf_counter()
            expected = reference.forward_features(clip)
            ref_time = time.perf_counter() - start
            start = time.perf_counter()
            got = ours(clip)
            our_time = time.perf_counter() - start
        print(f"VideoMAE-v2 {'ViT-g/14' if giant else 'tiny'}, {count} frames: max|diff| "
              f"{float((got - expected).abs().max()):.3e} (feature scale {float(expected.abs().max()):.2f}); "
              f"ours {our_time:.1f} s, reference {ref_time:.1f} s")


if __name__ == "__main__":
    main()
