"""The page of ``dispose app`` (Gradio Blocks) over :class:`dispose.app.state.AppState`.

Inputs: a reference image and a driving video (uploaded, or picked from the examples of
``DISPOSE_SHARED_DATA``), or a saved guidance folder; the settings users change.  Buttons: preview (poses and
guidance, no animation weights needed; a slider scrubs the driving frames), animate (progress from the
engine's ``on_progress``, a Cancel button that stops at the next step), and a panel listing the weights an
animation would still need.  Every bad input shows the command line's one-line message in the status line.

Privacy: Gradio's analytics and version check are switched off (``GRADIO_ANALYTICS_ENABLED=False``, set
before Gradio is imported), no share link, no server-side rendering (which would start a Node server), no MCP
server, no monitoring route; the theme uses the system's fonts, so the page loads nothing from a font CDN
(Gradio's default themes name Google or bundled fonts).  The browser test checks that the page requests
nothing outside the loopback address.

Concurrency: the queue runs one preview or animation at a time (they share ``concurrency_id="device"``);
scrubbing, Cancel and the weights panel are not queued behind them.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # after the environment above: Gradio reads it on import

from dispose.app.state import AppState, FormSettings
from dispose.errors import error_line

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial",
                "sans-serif"]
SYSTEM_MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
DEVICE_QUEUE = "device"


def theme() -> gr.themes.Base:
    """Gradio's base theme with system fonts only (nothing fetched for fonts)."""
    return gr.themes.Base(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO)


def _failure(error: BaseException) -> str:
    """The status line for an exception: the command line's line, or re-raise a bug."""
    line = error_line(error)
    if line is None:
        raise error
    return f"error: {line}"


def _lenient(upload: gr.Image) -> gr.Image:
    """``upload`` whose preprocessing hands over the uploaded file's path when Gradio cannot open it (a text
    file named .png): our loader then reports it as the command line does, in the status line, instead of
    Gradio's generic error and a server traceback."""
    preprocess = upload.preprocess

    def lenient(payload):
        try:
            return preprocess(payload)
        except Exception:  # noqa: BLE001 - whatever Pillow raises, dispose.media.image names the file
            return getattr(payload, "path", None)

    upload.preprocess = lenient
    return upload


def _weights_panel(missing: list[str]) -> str:
    if not missing:
        return "**Weights:** everything `animate` needs was found."
    lines = "\n".join(f"- {line.strip().removeprefix('- ')}" for line in missing)
    return ("**Weights `animate` still needs** (previews need none; nothing is downloaded: "
            "put the files under "
            f"the weights folder):\n\n{lines}")


def base_defaults(name: str) -> list:
    """The values of the page's base-owned inputs for base ``name``: resolution, max frames, sample stride,
    steps, guidance scale, seed, frames per tile, tile overlap."""
    form = FormSettings.for_base(name)
    return [form.resolution, form.max_frames, form.sample_stride, form.steps, form.guidance_scale, form.seed,
            form.num_frames, form.frames_overlap]


def build(state: AppState) -> gr.Blocks:
    """The page (not launched); see the module docstring."""
    from dispose.bases import BASES
    from dispose.pose.alignment import ALIGN_MODES

    defaults = FormSettings.for_base(None, weights=state.default_weights)

    with gr.Blocks(title="DisPose", analytics_enabled=False) as page:
        gr.Markdown("# DisPose\nA reference image + a driving video. *Preview* needs no weights; *Animate* "
                    "needs the weights listed below.")
        with gr.Row():
            reference = _lenient(gr.Image(label="Reference image", type="filepath", image_mode=None,
                                          sources=["upload"], elem_id="reference", height=320))
            driving = gr.Video(label="Driving video", format=None, include_audio=True, sources=["upload"],
                               elem_id="driving", height=320)
            with gr.Column():
                example_image = gr.Dropdown(label="Example reference",
                                            choices=[p.name for p in state.examples["images"]], value=None,
                                            visible=bool(state.examples["images"]))
                example_video = gr.Dropdown(label="Example driving video",
                                            choices=[p.name for p in state.examples["videos"]], value=None,
                                            visible=bool(state.examples["videos"]))
                guidance_folder = gr.Textbox(label="Or a saved guidance folder (path on this machine)",
                                             placeholder="out/guidance", elem_id="guidance-folder")
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                resolution = gr.Slider(64, 1024, value=defaults.resolution, step=64,
                                       label="Resolution (short side)", elem_id="resolution")
                max_frames = gr.Number(value=defaults.max_frames, precision=0, minimum=0,
                                       label="Max driving frames (0 = all)", elem_id="max-frames")
                sample_stride = gr.Number(value=defaults.sample_stride, precision=0, minimum=1,
                                          label="Sample stride")
            with gr.Row():
                steps = gr.Number(value=defaults.steps, precision=0, minimum=1, label="Steps")
                guidance_scale = gr.Number(value=defaults.guidance_scale, label="Guidance scale")
                seed = gr.Number(value=defaults.seed, precision=0, label="Seed")
            with gr.Row():
                align = gr.Dropdown(list(ALIGN_MODES), value=defaults.align, label="Pose alignment")
                detector = gr.Dropdown(["mediapipe", "dwpose"], value=defaults.detector,
                                       label="Pose detector")
                dense = gr.Dropdown(["propagate", "cmp", "none"], value=defaults.dense,
                                    label="Dense field F_d")
            with gr.Row():
                dtype = gr.Dropdown(["auto", "fp16", "bf16", "fp32"], value=defaults.dtype, label="Precision")
                base = gr.Dropdown(sorted(BASES), value=defaults.base, label="Base model")
                baseline = gr.Checkbox(value=defaults.baseline, label="Baseline (no DisPose guidance)")
            with gr.Row():
                num_frames = gr.Number(value=defaults.num_frames, precision=0, minimum=2,
                                       label="Frames per tile (window)", elem_id="num-frames")
                frames_overlap = gr.Number(value=defaults.frames_overlap, precision=0, minimum=1,
                                           label="Overlap of consecutive tiles", elem_id="frames-overlap")
                controlnet_interval = gr.Number(
                    value=defaults.controlnet_interval, precision=0, minimum=1, elem_id="controlnet-interval",
                    label="ControlNet every K steps (1 = every step, the release)")
            weights = gr.Textbox(value=defaults.weights, label="Weights folder (pretrained_weights/ layout)")
        settings = [resolution, max_frames, sample_stride, steps, guidance_scale, seed, align, detector,
                    dense, dtype, base, baseline, weights, num_frames, frames_overlap, controlnet_interval]
        #: The inputs a base owns, switched to the picked base's defaults (in base_defaults' order).
        base_owned = [resolution, max_frames, sample_stride, steps, guidance_scale, seed, num_frames,
                      frames_overlap]
        weights_panel = gr.Markdown(elem_id="weights-panel")
        with gr.Row():
            preview_button = gr.Button("Preview poses and guidance", variant="secondary",
                                       elem_id="preview-button")
            animate_button = gr.Button("Animate", variant="primary", elem_id="animate-button")
            cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
        status = gr.Markdown(elem_id="status")
        preview_state = gr.State(None)
        with gr.Tab("Preview"):
            frame = gr.Slider(0, 1, value=0, step=1, label="Driving frame", elem_id="frame")
            with gr.Row():
                alignment_picture = gr.Image(label="Pose alignment: reference pose | "
                                                   "driving pose on the reference",
                                             type="numpy", interactive=False, elem_id="alignment", scale=2,
                                             height=480)
                guidance_picture = gr.Image(label="Guidance: skeleton | F_s sparse | F_d dense", type="numpy",
                                            interactive=False, elem_id="guidance", scale=3, height=480)
        with gr.Tab("Animation"):
            result_video = gr.Video(label="Result", interactive=False, elem_id="result")
            side_by_side = gr.Video(label="Reference | skeleton | result", interactive=False,
                                    elem_id="side-by-side")
            downloads = gr.File(label="Downloads (videos and the JSON sidecar)", file_count="multiple",
                                interactive=False, elem_id="downloads")

        def form(values) -> FormSettings:
            names = [f.name for f in FormSettings.__dataclass_fields__.values()]
            return FormSettings(**dict(zip(names, values, strict=True)))

        def refresh_weights(*values):
            try:
                return _weights_panel(state.missing_weights(form(values)))
            except Exception as error:  # noqa: BLE001 - shown as the CLI shows it; bugs are re-raised
                return _failure(error)

        def progress_reporter(progress: gr.Progress):
            return lambda stage, done, total: progress((done, max(total, 1)), desc=stage)

        def run_preview(ref, video, folder, *values, progress=gr.Progress()):  # noqa: B008 - Gradio's way
            try:
                result = state.preview(form(values), ref, video, folder,
                                       on_progress=progress_reporter(progress))
            except Exception as error:  # noqa: BLE001
                return _failure(error), None, None, None, gr.Slider(maximum=1, value=0)
            return (result.summary(), result, result.alignment_picture(0), result.guidance_picture(0),
                    gr.Slider(minimum=0, maximum=max(result.frames - 1, 1), value=0, step=1))

        def scrub(result, index):
            if result is None:
                return None, None
            return result.alignment_picture(int(index)), result.guidance_picture(int(index))

        def run_animation(request: gr.Request, ref, video, folder, *values, progress=gr.Progress()):  # noqa: B008 - Gradio's way
            from dispose.engine import Cancelled

            try:
                with state.cancellable(request.session_hash or "") as cancel:
                    files = state.animate(form(values), ref, video, folder,
                                          on_progress=progress_reporter(progress), cancel=cancel)
            except Cancelled:
                return "cancelled: nothing was written", None, None, None
            except Exception as error:  # noqa: BLE001
                return _failure(error), None, None, None
            paths = [str(files.video), str(files.side_by_side), str(files.sidecar)]
            return ((f"animated {files.frames} frames in {files.seconds:.1f} s; "
                     f"wrote {Path(files.video).parent}"),
                    paths[0], paths[1], paths)

        def cancel_job(request: gr.Request):
            if state.cancel(request.session_hash or ""):
                return "cancelling: the animation stops at the next step"
            return "nothing to cancel"

        def pick_image(name):
            return next((str(p) for p in state.examples["images"] if p.name == name), None)

        def pick_video(name):
            return next((str(p) for p in state.examples["videos"] if p.name == name), None)

        base.change(base_defaults, base, base_owned, api_name="base_defaults", concurrency_limit=None)
        example_image.change(pick_image, example_image, reference, api_name="example_image",
                             concurrency_limit=None)
        example_video.change(pick_video, example_video, driving, api_name="example_video",
                             concurrency_limit=None)
        for control in (weights, base, detector, dense, baseline, dtype):
            control.change(refresh_weights, settings, weights_panel, api_visibility="private",
                           concurrency_limit=None)
        page.load(refresh_weights, settings, weights_panel, api_name="weights", concurrency_limit=None)
        preview_button.click(run_preview, [reference, driving, guidance_folder, *settings],
                             [status, preview_state, alignment_picture, guidance_picture, frame],
                             api_name="preview", concurrency_id=DEVICE_QUEUE, concurrency_limit=1)
        frame.change(scrub, [preview_state, frame], [alignment_picture, guidance_picture], api_name="frame",
                     concurrency_limit=None, show_progress="hidden")
        animate_button.click(run_animation, [reference, driving, guidance_folder, *settings],
                             [status, result_video, side_by_side, downloads], api_name="animate",
                             concurrency_id=DEVICE_QUEUE, concurrency_limit=1)
        cancel_button.click(cancel_job, None, status, api_name="cancel", concurrency_limit=None)
    return page


def launch(state: AppState, *, host: str = "127.0.0.1", port: int | None = None, block: bool = True,
           extra_paths: list[str | Path] = ()) -> gr.Blocks:
    """Serve the page on ``host``:``port`` (queue: one device job at a time); returns the running Blocks."""
    page = build(state)
    page.queue(default_concurrency_limit=1)
    allowed = [str(state.output_dir), *map(str, extra_paths)]
    page.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                show_error=True, ssr_mode=False, mcp_server=False, enable_monitoring=False, pwa=False,
                theme=theme(), allowed_paths=allowed, footer_links=[], quiet=not block, inbrowser=False)
    return page
