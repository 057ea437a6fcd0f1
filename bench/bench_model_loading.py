"""Peak memory of loading the full-size hybrid ControlNet: meta-device build + checkpoint tensors as
parameters (ours, ``dispose.bases.mimicmotion.weights.load_controlnet``) vs the conventional way (random init
on the CPU, then ``torch.load`` + ``load_state_dict`` copying into it).

Run by hand: ``python bench/bench_model_loading.py [folder]`` (default: a temporary folder under /tmp, removed
afterwards).  Writes a random full-size DisPose-shaped checkpoint (2.74 GB fp32 .pth, and its .safetensors),
then measures each way in a fresh subprocess (peak RSS from ``getrusage``) and prints the ratios.  The
UNet the ControlNet is shaped after stays on the meta device in both ways (it is not what is measured).
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _meta_unet():
    from accelerate import init_empty_weights

    from dispose.models.unet_mimicmotion import SVD_XT_UNET_CONFIG, MimicMotionUNet

    with init_empty_weights():
        return MimicMotionUNet.from_config(SVD_XT_UNET_CONFIG)


def write_checkpoint(folder: Path) -> Path:
    import torch
    from accelerate import init_empty_weights
    from safetensors.torch import save_file

    from dispose.models.controlnet_svd import HybridControlNetSVD

    with init_empty_weights():
        control = HybridControlNetSVD.from_unet(_meta_unet(), load_weights_from_unet=False)
    generator = torch.Generator().manual_seed(0)
    state = {key: torch.randn(tensor.shape, generator=generator) * 0.02
             for key, tensor in control.state_dict().items()}
    path = folder / "DisPose.pth"
    torch.save(state, path)
    save_file(state, str(folder / "DisPose.safetensors"))
    return path


def measure(way: str, path: Path) -> dict:
    """Run in a child process: load the ControlNet ``way`` and report time and peak RSS."""
    import torch

    start = time.perf_counter()
    unet = _meta_unet()
    if way == "conventional":
        from dispose.models.controlnet_svd import HybridControlNetSVD

        control = HybridControlNetSVD.from_unet(unet, load_weights_from_unet=False)
        control.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    else:
        from dispose.bases.mimicmotion.weights import load_controlnet

        control = load_controlnet(path, unet)
    total = sum(float(p.double().sum()) for p in control.parameters())  # touch every weight
    return {"seconds": time.perf_counter() - start,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "checksum": total}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(measure(sys.argv[2], Path(sys.argv[3]))))
        return
    given = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    folder = given or Path(tempfile.mkdtemp(prefix="dispose-bench-", dir="/tmp"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        pth = folder / "DisPose.pth"
        if not pth.is_file():
            write_checkpoint(folder)
        results = {}
        for way, path in (("conventional", pth), ("meta + mmap .pth", pth),
                          ("meta + .safetensors", folder / "DisPose.safetensors")):
            out = subprocess.run([sys.executable, __file__, "--child", way, str(path)], check=True,
                                 capture_output=True, text=True).stdout
            results[way] = json.loads(out.strip().splitlines()[-1])
            print(f"{way:>22}: peak RSS {results[way]['peak_rss_gib']:.2f} GiB, "
                  f"{results[way]['seconds']:.1f} s")
        checksums = {round(r["checksum"], 3) for r in results.values()}
        base = results["conventional"]["peak_rss_gib"]
        for way in list(results)[1:]:
            print(f"{way}: peak RSS x{results[way]['peak_rss_gib'] / base:.2f} of conventional")
        print(f"same weights in every way: {len(checksums) == 1}")
    finally:
        if given is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
