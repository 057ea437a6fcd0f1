"""The choice of pose detector: DWPose (the paper's) when given its ONNX folder, else MediaPipe.

Kept apart from :mod:`dispose.pose.detectors` (the interface) so that the interface does not import its
implementations.
"""

from __future__ import annotations

from pathlib import Path

from dispose.pose.detectors import PoseDetector

#: The ``--detector`` values: DWPose (the paper's; needs its ONNX weights) and MediaPipe (weight-free).
DETECTORS = ("dwpose", "mediapipe")


def load_detector(dwpose_dir: Path | None, device: str = "cpu") -> PoseDetector:
    """DWPose from a folder holding ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx``; MediaPipe when ``None``.

    ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``...) selects ONNX Runtime's CUDA provider for
    DWPose when it is installed (onnxruntime-gpu; ``"auto"``: whenever it is); MediaPipe always runs on the
    CPU.
    """
    if dwpose_dir is None:
        from dispose.pose.mediapipe_pose import MediaPipePose

        return MediaPipePose()
    from dispose.pose.dwpose import DWPose

    return DWPose.from_folder(Path(dwpose_dir), device=device)
