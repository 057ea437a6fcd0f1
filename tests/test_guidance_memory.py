"""Memory of the guidance stage does not grow with the driving video: its frames are decoded and posed as they
are read (only the poses are kept), with the same guidance and the same cut-short checks as before."""

from __future__ import annotations

import weakref

import numpy as np
import pytest

from dispose.errors import UserError
from dispose.guidance.stage import compute_guidance
from dispose.media.video import VideoFrames, read_video

pytest.importorskip("mediapipe", reason="MediaPipe is the optional 'pose' extra")

FAST = {"resolution": 128, "dense": "none"}


@pytest.fixture
def live_frames(monkeypatch):
    """Counts the decoded frames alive at once while a video is read: {"now", "most", "read"}."""
    count = {"now": 0, "most": 0, "read": 0}
    original = VideoFrames.__iter__

    def released():
        count["now"] -= 1

    def counting(self):
        for frame in original(self):
            count["now"] += 1
            count["read"] += 1
            count["most"] = max(count["most"], count["now"])
            weakref.finalize(frame, released)
            yield frame
            del frame

    monkeypatch.setattr(VideoFrames, "__iter__", counting)
    return count


def test_a_driving_video_is_posed_without_holding_its_frames(shared_data, live_frames):
    dancer = shared_data / "musepose_dance.mp4"
    guidance = compute_guidance(shared_data / "musepose_ref.png", dancer, max_frames=16, **FAST)
    assert live_frames["read"] >= 16 and len(guidance.driving) == 16
    assert live_frames["most"] <= 4  # a few frames at a time, not the 16 (1080x1920: 6 MB each)
    clip = read_video(dancer, sample_stride=2, max_frames=16)
    from_frames = compute_guidance(shared_data / "musepose_ref.png", clip.frames, fps=clip.fps, **FAST)
    assert guidance.driving.to_json() == from_frames.driving.to_json() and guidance.fps == from_frames.fps
    settings = guidance.settings
    assert (settings["stride"], settings["source_fps"], settings["source_frame_count"]) == (2, 24.0, 288)
    # stopped at --max-frames
    assert settings["decoded_frame_count"] is None and settings["truncated"] is False


def test_a_video_cut_short_is_still_reported(shared_data, tmp_path, capsys):
    data = (shared_data / "animatex_ubc_fashion.mp4").read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError,
                       match="half.mp4 is cut short or damaged: its container declares 380 frames"):
        compute_guidance(shared_data / "musepose_ref.png", half, sample_stride=8, strict=True, **FAST)
    guidance = compute_guidance(shared_data / "musepose_ref.png", half, sample_stride=8, **FAST)
    settings = guidance.settings
    assert settings["truncated"] is True and settings["source_frame_count"] == 380
    assert 0 < settings["decoded_frame_count"] < 200
    assert len(guidance.driving) == -(-settings["decoded_frame_count"] // 8)
    assert "cut short or damaged" in capsys.readouterr().err
    assert np.isfinite(guidance.driving.poses[-1].body).all()
