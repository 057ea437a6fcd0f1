"""Reading driving videos (the release's stride rule) and writing results atomically."""

from __future__ import annotations

import av
import numpy as np
import pytest

from dispose.errors import UserError
from dispose.media.video import VideoFrames, effective_stride, read_video, write_video


def _numbered_video(path, count: int, fps: float, size=(48, 32)) -> None:
    """Flat frames whose grey level is 8 x their index."""
    frames = np.zeros((count, size[1], size[0], 3), np.uint8) + (np.arange(count) * 8)[:, None, None, None]
    write_video(path, frames.astype(np.uint8), fps)


def _indices(clip) -> list[int]:
    return [round(frame.mean() / 8) for frame in clip.frames]


def test_dancer_first_frames(shared_data):
    clip = read_video(shared_data / "musepose_dance.mp4", sample_stride=2, max_frames=3)
    assert clip.frames.shape == (3, 1920, 1080, 3) and clip.frames.dtype == np.uint8
    assert clip.source_fps == 24 and clip.stride == 2 and clip.fps == 12
    assert clip.source_frame_count == 288 and len(clip) == 3 and (clip.width, clip.height) == (1080, 1920)
    assert clip.frames.std() > 20  # real content, not a blank decode


@pytest.mark.parametrize(("fps", "stride"),
                         [(24, 2), (23.976, 2), (30, 2), (47.9, 2), (48, 4), (60, 4), (72, 6)])
def test_effective_stride_is_the_release_rule(fps, stride):
    assert effective_stride(2, fps) == stride
    assert effective_stride(1, fps) == stride // 2


def test_fast_video_is_thinned(tmp_path):
    _numbered_video(tmp_path / "fast.mp4", 24, 60)
    clip = read_video(tmp_path / "fast.mp4", sample_stride=2)
    assert clip.stride == 4 and clip.fps == pytest.approx(15)
    assert _indices(clip) == [0, 4, 8, 12, 16, 20]
    limited = read_video(tmp_path / "fast.mp4", sample_stride=1, max_frames=4)
    assert _indices(limited) == [0, 2, 4, 6] and limited.fps == pytest.approx(30)


def test_rotation_tag_is_applied(tmp_path):
    with av.open(str(tmp_path / "phone.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(90)  # display = stored frame turned 90 degrees counterclockwise
        image = np.zeros((32, 64, 3), np.uint8)
        image[:8, :8] = 255  # top-left marker
        for _ in range(2):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    clip = read_video(tmp_path / "phone.mp4", sample_stride=1)
    assert clip.frames.shape == (2, 64, 32, 3)
    rows, cols = np.nonzero(clip.frames[0, ..., 0] > 200)
    assert rows.mean() > 48 and cols.mean() < 8  # counterclockwise: the top-left corner went bottom-left
    streamed = list(VideoFrames(tmp_path / "phone.mp4"))
    assert len(streamed) == 2 and np.array_equal(streamed[0], clip.frames[0])


def test_streaming_uses_the_plain_stride_and_matches_read_video(tmp_path, shared_data):
    _numbered_video(tmp_path / "fast.mp4", 24, 60)
    video = VideoFrames(tmp_path / "fast.mp4", stride=3)  # no release rule: exactly every 3rd frame
    assert (video.stride, video.expected_count, video.fps) == (3, 8, pytest.approx(20))
    assert [round(frame.mean() / 8) for frame in video] == list(range(0, 24, 3))
    assert video.decoded_frame_count == 24 and video.source_frame_count == 24
    dancer = VideoFrames(shared_data / "musepose_dance.mp4", stride=4, max_frames=3)
    frames = iter(dancer)
    first = next(frames)  # one frame at a time
    assert first.shape == (1920, 1080, 3) and dancer.expected_count == 3
    clip = read_video(shared_data / "musepose_dance.mp4", sample_stride=4, max_frames=3)
    assert np.array_equal(np.stack([first, *frames]), clip.frames)
    assert dancer.decoded_frame_count is None  # stopped at max_frames: the rest of the file was not read


def test_missing_video(tmp_path):
    with pytest.raises(UserError, match="does not exist") as error:
        read_video(tmp_path / "gone.mp4")
    assert "gone.mp4" in str(error.value)


def test_not_a_video(tmp_path, shared_data):
    (tmp_path / "notes.mp4").write_text("not a video at all")
    with pytest.raises(UserError, match="could not be opened as a video") as error:
        read_video(tmp_path / "notes.mp4")
    assert "notes.mp4" in str(error.value)
    # An image is a one-frame "video" to FFmpeg; a sound-only file has no video stream.
    with av.open(str(tmp_path / "sound.m4a"), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(UserError, match="no video stream"):
        read_video(tmp_path / "sound.m4a")


def test_zero_frame_video(tmp_path):
    with av.open(str(tmp_path / "empty.avi"), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
        container.mux(stream.encode(None))
    with pytest.raises(UserError, match="holds no decodable frame") as error:
        read_video(tmp_path / "empty.avi")
    assert "empty.avi" in str(error.value)


def test_truncated_and_garbled_videos(tmp_path, shared_data):
    data = (shared_data / "musepose_dance.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # moov atom at the end: unreadable
    with pytest.raises(UserError, match="cut.mp4"):
        read_video(tmp_path / "cut.mp4")
    garbled = bytearray(data)
    for index in range(200_000, len(garbled) - 100_000, 997):
        garbled[index] = (garbled[index] * 7 + 13) % 256
    (tmp_path / "garbled.mp4").write_bytes(bytes(garbled))
    with pytest.raises(UserError, match="garbled.mp4 is corrupt"):
        read_video(tmp_path / "garbled.mp4", sample_stride=4)


def _cut_in_half(shared_data, tmp_path):
    """A fast-start mp4 (index first) cut in half: FFmpeg decodes the frames that are there and stops."""
    data = (shared_data / "animatex_ubc_fashion.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    return tmp_path / "half.mp4"


def test_video_cut_short_is_reported_with_both_counts(shared_data, tmp_path, capsys):
    path = _cut_in_half(shared_data, tmp_path)
    clip = read_video(path, sample_stride=4)
    assert clip.source_frame_count == 380 and 0 < clip.decoded_frame_count < 200 and clip.truncated
    assert len(clip) == -(-clip.decoded_frame_count // 4)
    warning = capsys.readouterr().err.strip()
    assert warning == (f"dispose: warning: video {path} is cut short or damaged: its container declares 380 "
                       f"frames but only {clip.decoded_frame_count} could be decoded; using those (--strict "
                       "refuses such files)")
    with pytest.raises(UserError, match=rf"{path} is cut short or damaged: its container declares 380 frames "
                                        rf"but only {clip.decoded_frame_count} could be decoded; repair or "
                                        r"re-export it"):
        read_video(path, sample_stride=4, strict=True)
    whole = read_video(shared_data / "animatex_dance2_generated.mp4", sample_stride=1, strict=True)
    assert whole.decoded_frame_count == whole.source_frame_count == 32 and not whole.truncated
    assert capsys.readouterr().err == ""


def test_bad_options(shared_data):
    with pytest.raises(UserError, match="sample stride"):
        read_video(shared_data / "musepose_dance.mp4", sample_stride=0)
    with pytest.raises(UserError, match="max frames"):
        read_video(shared_data / "musepose_dance.mp4", max_frames=0)


def test_write_round_trip_and_odd_sizes(tmp_path):
    ys, xs = np.mgrid[0:71, 0:87]  # odd height and width; smooth content (yuv420p halves the chroma)
    frames = np.stack([np.stack([xs * 2 + t * 10, ys * 3, 255 - xs - ys], -1)
                       for t in range(5)]).astype(np.uint8)
    write_video(tmp_path / "odd.mp4", frames, 12.5)
    clip = read_video(tmp_path / "odd.mp4", sample_stride=1)
    assert clip.frames.shape == (5, 72, 88, 3) and clip.source_fps == pytest.approx(12.5)
    assert np.abs(clip.frames[:, :71, :87].astype(int) - frames).mean() < 4
    # The padded row / column repeats its neighbour.
    assert np.abs(clip.frames[:, 71].astype(int) - clip.frames[:, 70]).mean() < 4
    assert np.abs(clip.frames[:, :, 87].astype(int) - clip.frames[:, :, 86]).mean() < 4
    with av.open(str(tmp_path / "odd.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"


def test_write_is_atomic(tmp_path):
    def frames():
        yield np.zeros((32, 32, 3), np.uint8)
        yield np.zeros((32, 32, 3), np.uint8)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError):
        write_video(tmp_path / "out.mp4", frames(), 10)
    bad_size = [np.zeros((32, 32, 3), np.uint8), np.zeros((16, 32, 3), np.uint8)]
    with pytest.raises(ValueError, match="frames must all be"):
        write_video(tmp_path / "out.mp4", bad_size, 10)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out.mp4").write_bytes(b"previous result")
    with pytest.raises(ValueError):
        write_video(tmp_path / "out.mp4", bad_size, 10)
    assert (tmp_path / "out.mp4").read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_write_rejects_bad_requests(tmp_path):
    frame = np.zeros((1, 32, 32, 3), np.uint8)
    with pytest.raises(UserError, match="unsupported suffix"):
        write_video(tmp_path / "out.gif", frame, 10)
    with pytest.raises(UserError, match="frame rate"):
        write_video(tmp_path / "out.mp4", frame, 0)
    with pytest.raises(UserError, match="no frame"):
        write_video(tmp_path / "out.mp4", [], 10)
    with pytest.raises(UserError, match="does not exist"):
        write_video(tmp_path / "missing" / "out.mp4", frame, 10)
