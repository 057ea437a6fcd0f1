"""Compare dispose's MUSIQ port with pyiqa's ``MUSIQ`` class on random weights.

Usage: ``python bench/eval_musiq_vs_reference.py PYIQA_SRC [SHARED_DATA_DIR]`` where ``PYIQA_SRC`` is a
source checkout of github.com/chaofengc/IQA-PyTorch (only ``pyiqa/archs/musiq_arch.py``,
``pyiqa/matlab_utils/padding.py`` and ``pyiqa/data/multiscale_trans_util.py`` are used: the rest of
pyiqa imports torchvision, so the script assembles those three files into a temporary package with
small stand-ins for pyiqa's registry and weight helpers).  Both models get the same random state
dict (default init plus N(0, 0.05) noise on every tensor); prints the max abs difference of the score on
frames of the dancer video at several sizes.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

_STUBS = {
    "pyiqa/__init__.py": "",
    "pyiqa/archs/__init__.py": "",
    "pyiqa/data/__init__.py": "",
    "pyiqa/utils/__init__.py": "",
    "pyiqa/utils/registry.py": "class _Registry:\n    def register(self):\n"
                               "        return lambda cls: cls\n\n\n"
                               "ARCH_REGISTRY = _Registry()\n",
    "pyiqa/matlab_utils/__init__.py": "from .padding import ExactPadding2d, exact_padding_2d\n",
    "pyiqa/archs/arch_util.py": "import torch\n\n\ndef dist_to_mos(d):\n"
                                "    return (d * torch.arange(1, d.shape[-1] + 1).to(d))"
                                ".sum(dim=-1, keepdim=True)\n\n\n"
                                "def load_pretrained_network(*args, **kwargs):\n"
                                "    raise RuntimeError('not used')\n\n\n"
                                "def get_url_from_name(name):\n    return name\n",
}


def _reference_package(source: Path) -> Path:
    root = Path(tempfile.mkdtemp(prefix="pyiqa_ref_"))
    for name in ("archs/musiq_arch.py", "matlab_utils/padding.py", "data/multiscale_trans_util.py"):
        (root / "pyiqa" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / "pyiqa" / name, root / "pyiqa" / name)
    for name, text in _STUBS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def main() -> None:
    source = Path(sys.argv[1])
    data = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[2] / "shared" / "data"
    sys.path.insert(0, str(_reference_package(source)))
    from pyiqa.archs.musiq_arch import MUSIQ as ReferenceMUSIQ

    from dispose.evaluation.musiq import MUSIQ, checkpoint_names
    from dispose.evaluation.videos import read_frames

    torch.manual_seed(0)
    reference = ReferenceMUSIQ(pretrained=False).eval()  # AVA layout (10 bins) when not pretrained
    reference.head = torch.nn.Linear(384, 1)  # SPAQ layout, as VBench builds it from the SPAQ file
    with torch.no_grad():  # move every tensor (norm scales, CLS token, embeddings) off its init value
        for param in reference.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    ours = MUSIQ().eval()
    ours.load_state_dict(checkpoint_names(reference.state_dict()), strict=True)
    for size in ((512, 288), (288, 512), (200, 130)):
        frame = read_frames(data / "musepose_dance.mp4", size, 1, 1)[0]
        x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            start = time.perf_counter()
            expected = reference(x).reshape(-1)
            ref_time = time.perf_counter() - start
            start = time.perf_counter()
            got = ours(x)
            our_time = time.perf_counter() - start
        print(f"MUSIQ on {size[0]}x{size[1]}: score {float(expected[0]):.5f}, max|diff| "
              f"{float((got - expected).abs().max()):.3e}; ours {our_time:.2f} s, reference {ref_time:.2f} s")


if __name__ == "__main__":
    main()
