"""Compare dispose's LPIPS with the ``lpips`` package (BSD-2) on the same backbone and head weights.

Usage: ``python bench/eval_lpips_vs_reference.py LPIPS_SRC [SHARED_DATA_DIR]`` where ``LPIPS_SRC`` is an
unpacked ``lpips`` wheel (``pip download lpips --no-deps`` then unzip).  lpips builds its backbones with
torchvision, which does not import beside this torch, so a stand-in ``torchvision.models`` module hands
it torchvision-layout ``features`` stacks (random weights); dispose's LPIPS then loads those backbone
weights and lpips's own shipped ``weights/v0.1/{alex,vgg}.pth`` heads through its strict loader.  Prints
the max abs difference of the distance on dancer frames against a degraded copy.
"""

from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch


def _stand_in_torchvision(features: dict[str, torch.nn.Sequential]) -> None:
    models = types.ModuleType("torchvision.models")
    for name, stack in features.items():
        setattr(models, name, lambda pretrained=False, stack=stack: types.SimpleNamespace(features=stack))
    package = types.ModuleType("torchvision")
    package.models = models
    sys.modules["torchvision"], sys.modules["torchvision.models"] = package, models


def main() -> None:
    source = Path(sys.argv[1])
    data = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[2] / "shared" / "data"
    from dispose.evaluation.lpips import LPIPS, load_lpips, lpips_distance
    from dispose.evaluation.videos import read_frames

    torch.manual_seed(0)
    backbones = {"alexnet": LPIPS("alex").features, "vgg16": LPIPS("vgg").features}
    saved = {name: {f"features.{k}": v.clone() for k, v in stack.state_dict().items()}
             for name, stack in backbones.items()}
    _stand_in_torchvision(backbones)
    sys.path.insert(0, str(source))
    import lpips

    frames = read_frames(data / "musepose_dance.mp4", (288, 512), 1, 2)
    rng = np.random.default_rng(0)
    degraded = np.clip(frames + rng.normal(0, 12, frames.shape), 0, 255).astype(np.uint8)
    folder = Path(tempfile.mkdtemp(prefix="lpips_ref_"))
    for net, backbone in (("alex", "alexnet"), ("vgg", "vgg16")):
        reference = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
        torch.save(saved[backbone], folder / f"{backbone}.pth")
        ours = load_lpips(folder / f"{backbone}.pth", source / "lpips" / "weights" / "v0.1" / f"{net}.pth",
                          net)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = torch.from_numpy(degraded).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            expected = reference(x, y).flatten()
        got = torch.tensor(lpips_distance(ours, frames, degraded))
        print(f"LPIPS-{net} on 288x512: distances {[round(float(v), 4) for v in expected]}, max|diff| "
              f"{float((got - expected).abs().max()):.3e}")


if __name__ == "__main__":
    main()
