"""`dispose pose` and `dispose guidance` add their options without importing the heavy libraries.

Every `dispose` call (even `dispose --help`) builds every command's parser, so these modules must stay light.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "cv2", "scipy", "mediapipe", "onnxruntime", "safetensors", "av")


def test_building_the_parsers_imports_nothing_heavy() -> None:
    script = (
        "import argparse, sys\n"
        "import dispose.commands.guidance as guidance, dispose.commands.pose as pose\n"
        "for command in (pose, guidance):\n"
        "    command.add_arguments(argparse.ArgumentParser())\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_dense_choices_are_the_library_methods() -> None:
    from dispose.commands.guidance import DENSE_CHOICES
    from dispose.guidance.motion_fields import DENSE_METHODS

    assert DENSE_CHOICES == DENSE_METHODS
