"""build_app(): the one Blocks app, a tab per workflow, plus history and the API endpoints."""

from __future__ import annotations

import gradio as gr

from diffbox import __version__
from diffbox.services import Services
from diffbox.ui.api import register_api
from diffbox.ui.history_tab import build_history_tab
from diffbox.ui.hub_api import register_hub_api
from diffbox.ui.i2v_tab import build_i2v_tab
from diffbox.ui.models_tab import build_models_tab

CSS = """
#diffbox-header {margin-bottom: 0.25rem}
@media (max-width: 720px) { .gradio-container {padding: 0.25rem !important} }
"""

COMING = {
    "SVI 2.0 Pro": "Endless video as a chain of clips, streamed as each one finishes — not yet: it arrives "
                   "with the SVI issue.",
    "Qwen Image Edit": "Generate, edit and inpaint with a sketched mask — not yet: it arrives with the "
                       "Qwen-Image-Edit issue.",
    "Config": "Export and import your defaults, presets and pinned models — not yet.",
}


def header(services: Services) -> str:
    health = services.health()
    mode = " · **demo mode**: tiny random-weight models, outputs are noise by design" if services.settings.demo else ""
    return (f"## diffbox {__version__}\n"
            f"Device: `{health['device']}` · home: `{services.settings.home}`{mode}")


def build_app(services: Services) -> gr.Blocks:
    with gr.Blocks(title="diffbox") as app:
        gr.Markdown(header(services), elem_id="diffbox-header")
        with gr.Tabs() as tabs:
            with gr.Tab("Image → Video", id="i2v"):
                i2v_tab = build_i2v_tab(services)
            for title, text in COMING.items():
                with gr.Tab(title):
                    gr.Markdown(text)
            with gr.Tab("Models", id="models"):
                build_models_tab(services)
            with gr.Tab("History", id="history"):
                use_settings, selected_job = build_history_tab(services)
        register_api(services)
        register_hub_api(services)
        # Model lists are re-read on every page load, so models copied in while running show up.
        app.load(i2v_tab.refresh_choices, None, i2v_tab.refresh_outputs, api_name="ui_refresh_models",
                 api_visibility="private", queue=False)

        def use_job_settings(record):
            if not record or record.get("workflow") != "i2v":
                gr.Warning("Only image-to-video jobs can refill a form so far.")
                return [gr.skip()] * (len(i2v_tab.fill_outputs) + 1)
            return [*i2v_tab.fill(record["params"]), gr.Tabs(selected="i2v")]

        use_settings.click(use_job_settings, selected_job, [*i2v_tab.fill_outputs, tabs],
                           api_name="ui_use_settings", api_visibility="private", queue=False)
    app.queue(default_concurrency_limit=1)
    return app
