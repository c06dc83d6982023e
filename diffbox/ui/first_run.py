"""The first-run screen: shown above the tabs while the library holds no workflow model at all.

A fresh pod has an empty models/ folder and every Generate would fail with "no model in the library";
this says what to download instead, queues the recommended set in one click, or builds the tiny
demo models (seconds, offline) so the app can be tried before tens of GB arrive.
"""

from __future__ import annotations

import gradio as gr

from diffbox.markup import md
from diffbox.services import Services

# (source, model id, file; "" = the whole diffusers repo) — what the three workflows need, as published:
# Wan 2.2 I2V A14B -Diffusers (~126 GB: its two experts ship in float32, 57 GB each; loaded in bf16),
# the official SVI 2.0 Pro pair (2 × 1.23 GB), Qwen-Image-Edit-2509 (~57.7 GB, bf16).
RECOMMENDED = [
    ("hf", "Wan-AI/Wan2.2-I2V-A14B-Diffusers", ""),
    ("hf", "vita-video-gen/svi-model", "version-2.0/SVI_Wan2.2-I2V-A14B_high_noise_lora_v2.0_pro.safetensors"),
    ("hf", "vita-video-gen/svi-model", "version-2.0/SVI_Wan2.2-I2V-A14B_low_noise_lora_v2.0_pro.safetensors"),
    ("hf", "Qwen/Qwen-Image-Edit-2509", ""),
]
TEXT = """### Welcome: no models yet
diffbox found no model under `{models}`. The recommended set (about 186 GB; it resumes if interrupted):
- **Wan 2.2 I2V A14B** (Image → Video and SVI), **SVI 2.0 Pro LoRAs** (SVI), **Qwen-Image-Edit-2509** (Qwen Image Edit).

Or try the app first with **tiny demo models** (built in seconds, offline; their outputs are noise by design).
You can also pick single models in the **Models** tab."""


def needs_first_run(services: Services) -> bool:
    return not any(services.models(workflow) for workflow in ("i2v", "svi", "qwen_edit"))


def build_first_run(services: Services) -> None:
    with gr.Group(visible=needs_first_run(services), elem_id="first-run") as group:
        gr.Markdown(TEXT.format(models=services.settings.models_dir))
        with gr.Row():
            recommended = gr.Button("Download the recommended set", variant="primary", elem_id="first-run-download")
            demo = gr.Button("Try demo models", elem_id="first-run-demo")
    status = gr.Markdown(elem_id="first-run-status")  # outside the group: it stays when the group hides

    def download_recommended():
        if services.downloads is None:
            raise gr.Error("Downloads are not available in this mode.", title="Cannot download", print_exception=False)
        failed = []
        for source, model_id, file in RECOMMENDED:
            try:
                services.downloads.request(source, model_id, file)
            except Exception as exc:  # noqa: BLE001 - a token or network problem: say which model, go on
                failed.append(f"- `{model_id}`: {md(exc)}")
        done = len(RECOMMENDED) - len(failed)
        text = f"Queued {done} download(s): follow them in **Models → Downloads**; reload the page when they finish."
        return text + ("\n\nNot queued:\n" + "\n".join(failed) if failed else "")

    def build_demo():
        from diffbox.demo import ensure_demo_models  # builds tiny random-weight models; no download

        ensure_demo_models(services.settings.demo_models_dir)
        if services.hub is not None:
            services.library.refresh()
        return (gr.Group(visible=needs_first_run(services)),
                "Demo models are ready under `models/demo`. **Reload the page** to pick them in the forms.")

    private = {"api_visibility": "private"}
    recommended.click(download_recommended, None, status, api_name="ui_first_run_download", **private)
    demo.click(build_demo, None, [group, status], api_name="ui_first_run_demo", **private)
