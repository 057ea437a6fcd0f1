"""``dispose app`` served on a loopback port inside the test and driven through ``gradio_client``, as a
script or the page would: the guidance preview on the dancer, the weights panel, an animation with tiny random
weights (progress, Cancel, the files to download, models loaded once), and bad uploads, which show the
command line's message."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import gradio_client
import numpy as np
import pytest
from PIL import Image

from dispose.app.state import FormSettings
from dispose.cli import main
from dispose.media.video import read_video


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: The page's settings in order: resolution, max frames, stride, steps, guidance scale, seed, align, detector,
#: dense, dtype, base, baseline, weights, frames per tile, tile overlap, ControlNet interval.
def settings(weights: str = "", *, resolution=128, max_frames=3, steps=2, baseline=False) -> list:
    tiles = FormSettings.for_base("mimicmotion")
    return [resolution, max_frames, 2, steps, 2.0, 42, "global", "mediapipe", "propagate", "fp32",
            "mimicmotion", baseline, weights, tiles.num_frames, tiles.frames_overlap,
            tiles.controlnet_interval]


@pytest.fixture(scope="module")
def weights(tiny_weights) -> Path:
    return tiny_weights


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_data):
    """(app state, url) of a running page with the shared examples, offline; closed after the module."""
    from dispose.app.state import AppState
    from dispose.app.ui import launch

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        state = AppState(device="cpu", output_dir=tmp_path_factory.mktemp("app-out"),
                         examples_dir=shared_data)
        port = free_port()
        page = launch(state, port=port, block=False, extra_paths=[shared_data])
        yield state, f"http://127.0.0.1:{port}/"
        page.close()


@pytest.fixture(autouse=True)
def empty_hf_cache(tmp_path, monkeypatch):
    """The weights panel and the loader must not find a developer's Hugging Face cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def client(served):
    return gradio_client.Client(served[1], verbose=False, analytics_enabled=False, download_files=False)


def dancer(shared_data: Path) -> list:
    handle = gradio_client.handle_file
    return [handle(str(shared_data / "musepose_ref.png")), handle(str(shared_data / "musepose_dance.mp4")),
            ""]


def served_file(output) -> str:
    """The server-side path of a file output (the client does not download: same machine)."""
    if isinstance(output, dict):
        return served_file(output.get("video") or output["path"])
    return output


def picture(output) -> np.ndarray:
    """An image output of the page as an array."""
    return np.asarray(Image.open(served_file(output)).convert("RGB"))


def test_guidance_preview_of_the_dancer_is_scrubbable(served, client, shared_data):
    status, alignment, guidance, slider = client.predict(*dancer(shared_data), *settings(max_frames=4),
                                                         api_name="/preview")
    assert status.startswith("musepose_ref.png + musepose_dance.mp4: 4 driving frames"), status
    assert "128x" in status and "dense field propagate" in status
    assert slider["maximum"] == 3
    first = picture(guidance)
    assert first.shape[1] == 3 * 128  # skeleton | F_s | F_d at the generation width
    assert picture(alignment).shape[1] == 2 * 128  # reference pose | driving pose on the reference
    alignment_3, guidance_3 = client.predict(3, api_name="/frame")
    assert picture(guidance_3).shape == first.shape and not np.array_equal(picture(guidance_3), first)
    assert not np.array_equal(picture(alignment_3), picture(alignment))


def test_examples_come_from_the_shared_data_folder(client, shared_data):
    assert Path(served_file(client.predict("musepose_ref.png",
                                           api_name="/example_image"))).name == "musepose_ref.png"
    video = served_file(client.predict("musepose_dance.mp4", api_name="/example_video"))
    assert Path(video).name == "musepose_dance.mp4"


def test_preview_of_a_saved_guidance_folder(client, shared_data, tmp_path):
    from dispose.guidance.stage import compute_guidance

    saved = compute_guidance(shared_data / "musepose_ref.png", shared_data / "musepose_dance.mp4",
                             resolution=128, max_frames=3, dense="none")
    folder = tmp_path / "guidance"
    folder.mkdir()
    saved.save(folder)
    status, _, guidance, slider = client.predict(None, None, str(folder), *settings(), api_name="/preview")
    assert status.startswith(f"guidance folder {folder}: 3 driving frames"), status
    assert "dense field none" in status and slider["maximum"] == 2
    assert picture(guidance).shape[1] == 2 * 128  # skeleton | F_s: no dense field in this folder


def test_weights_panel_lists_what_animate_still_needs(client, weights, tmp_path):
    ready = client.predict(*settings(str(weights)), api_name="/weights")
    assert "everything `animate` needs was found" in ready
    missing = client.predict(*settings(str(tmp_path)), api_name="/weights")
    assert "DisPose.pth" in missing and "https://huggingface.co/lihxxx/DisPose" in missing
    assert "MimicMotion_1-1.pth" in missing
    baseline = client.predict(*settings(str(tmp_path), baseline=True), api_name="/weights")
    assert "DisPose.pth" not in baseline and "MimicMotion_1-1.pth" in baseline


def test_animation_writes_result_side_by_side_and_sidecar_and_keeps_models(served, client, shared_data,
                                                                           weights):
    state, _ = served
    loads = state.models.loads
    job = client.submit(*dancer(shared_data), *settings(str(weights)), api_name="/animate")
    status, video, side_by_side, files = job.result(timeout=600)
    assert status.startswith("animated 3 frames"), status
    result = read_video(served_file(video), sample_stride=1).frames
    assert result.shape == (3, 192, 128, 3)
    assert read_video(served_file(side_by_side), sample_stride=1).frames.shape == (3, 192, 3 * 128, 3)
    sidecar = json.loads(Path(next(f for f in map(served_file, files) if f.endswith(".json"))).read_text())
    assert sidecar["format"] == "dispose-animate-v1"  # the sidecar `dispose animate` writes
    assert sidecar["seed"] == 42 and sidecar["job"]["num_inference_steps"] == 2
    assert sidecar["runtime"]["dense"] == "propagate" and sidecar["result"]["frames"] == 3
    assert all(entry["fingerprint"] for entry in sidecar["weights"].values())
    again = client.predict(*dancer(shared_data), *settings(str(weights)), api_name="/animate")
    assert again[0].startswith("animated 3 frames")
    assert client.predict(api_name="/cancel") == "nothing to cancel"  # no job runs now
    # same seed, same frames
    assert np.array_equal(read_video(served_file(again[1]), sample_stride=1).frames, result)
    assert state.models.loads == loads + 1  # loaded once, reused by the second job


def test_cancel_stops_a_running_animation(served, client, shared_data, weights):
    job = client.submit(*dancer(shared_data), *settings(str(weights), steps=400), api_name="/animate")
    deadline = time.monotonic() + 300
    stages = set()
    while time.monotonic() < deadline and "sampling" not in stages:
        update = job.status()
        stages |= {unit.desc for unit in (update.progress_data or []) if unit.desc}
        time.sleep(0.2)
    assert "sampling" in stages, f"no sampling progress reported (saw {stages})"
    assert client.predict(api_name="/cancel").startswith("cancelling")
    status, video, _, files = job.result(timeout=300)
    assert status.startswith("cancelled"), status
    assert video is None and files is None
    assert client.predict(api_name="/cancel") == "nothing to cancel"


def _cli_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err.strip().split(": error: ", 1)[1]


def test_bad_uploads_show_the_command_lines_message(client, shared_data, tmp_path, capsys):
    small = tmp_path / "small.png"
    Image.new("RGB", (32, 32), "white").save(small)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    handle = gradio_client.handle_file
    dance, ref = str(shared_data / "musepose_dance.mp4"), str(shared_data / "musepose_ref.png")
    cases = [
        ([handle(str(small)), handle(dance), ""], ["--ref", str(small), "--driving", dance], small),
        ([handle(ref), handle(str(not_video)), ""], ["--ref", ref, "--driving", str(not_video)], not_video),
        ([handle(str(not_image)), handle(dance), ""], ["--ref", str(not_image), "--driving", dance],
         not_image),
    ]
    for inputs, cli_inputs, bad in cases:
        status = client.predict(*inputs, *settings(max_frames=2), api_name="/preview")[0]
        expected = _cli_error(["guidance", *cli_inputs, "--resolution", "128", "--max-frames", "2", "--out",
                               str(tmp_path / "out")], capsys)
        uploaded = re.search(r"\S*" + re.escape(bad.name), status).group(0)
        assert status == "error: " + expected.replace(str(bad), uploaded), (status, expected)
        assert "\n" not in status
    missing = client.predict(None, None, str(tmp_path / "nowhere"), *settings(), api_name="/preview")[0]
    assert missing.startswith("error: --guidance ") and "guidance.json" in missing


def test_the_command_module_does_not_import_gradio():
    """`dispose --help` imports every command module: Gradio loads only when the app runs."""
    code = "import sys, dispose.commands.app; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
