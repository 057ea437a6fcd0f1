"""Compare dispose's DisCo FID-VID feature (3D ResNet-50, preprocessing) with DisCo's code, random weights.

Usage: ``python bench/eval_resnet3d_vs_reference.py DISCO_SRC [SHARED_DATA_DIR]`` where ``DISCO_SRC`` is a
source checkout of github.com/Wangt-CN/DisCo (Apache-2.0; ``tool/metrics/resnet3d.py`` and
``tool/metrics/resize.py`` are imported).  Both networks get the same random state dict (DisCo's init,
batch-norm statistics randomised); the reference input is built as DisCo's ``DatasetFVDVideoResize``
does (its ``make_resizer("PIL", False, "bicubic", (112, 112))``, last-frame padding, mean subtraction).
Prints the max abs difference of the input tensor and of the per-video 2048-d feature on 20 dancer frames.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    source = Path(sys.argv[1]) / "tool" / "metrics"
    data = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[2] / "shared" / "data"
    from dispose.evaluation.resnet3d import ResNet3D, disco_segments, video_feature
    from dispose.evaluation.videos import read_frames

    resnet3d, resize = (_load(source / "resnet3d.py", "disco_resnet3d"),
                        _load(source / "resize.py", "disco_resize"))
    torch.manual_seed(0)
    reference = resnet3d.resnet50(num_classes=400, shortcut_type="B", sample_size=112, sample_duration=16,
                                  last_fc=False).eval()
    with torch.no_grad():
        for name, tensor in reference.state_dict().items():
            if name.endswith("running_mean"):
                tensor.normal_(0.0, 5.0)
            elif name.endswith("running_var"):
                tensor.uniform_(20.0, 200.0)
    ours = ResNet3D().eval()
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")},
                         strict=True)
    frames = read_frames(data / "musepose_dance.mp4", (288, 512), 1, 20)

    resizer = resize.make_resizer("PIL", False, "bicubic", (112, 112))
    video = torch.as_tensor(np.stack([resizer(f) for f in frames])).float()
    video = torch.cat([video, video[[-1]].repeat(16 - len(video) % 16, 1, 1, 1)])
    video = video - torch.as_tensor(np.array([114.7748, 107.7354, 99.4750]))
    expected_input = video.view(-1, 16, 112, 112, 3).permute(0, 4, 1, 2, 3).float()
    got_input = disco_segments(frames)
    with torch.no_grad():
        start = time.perf_counter()
        expected = reference(expected_input).mean(0).numpy()
        ref_time = time.perf_counter() - start
    start = time.perf_counter()
    got = video_feature(ours, frames)
    our_time = time.perf_counter() - start
    print(f"DisCo FID-VID input: max|diff| {float((got_input - expected_input).abs().max()):.3e}; "
          f"3D ResNet-50 feature (2 segments of 20 frames): max|diff| {np.abs(got - expected).max():.3e} "
          f"(feature scale {np.abs(expected).max():.2f}); ours {our_time:.1f} s, reference {ref_time:.1f} s")


if __name__ == "__main__":
    main()
