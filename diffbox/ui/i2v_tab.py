"""The Wan 2.2 image-to-video tab."""

from __future__ import annotations

import gradio as gr

from diffbox.engine.runner import FinishedEvent, ProgressEvent
from diffbox.services import Services
from diffbox.ui.form import build_form, values_to_params
from diffbox.ui.jobs import follow, raise_if_failed, status_line, submit_or_explain


def build_i2v_tab(services: Services):
    """Returns the model dropdown and a function giving its fresh choices (models appear on disk)."""
    spec = services.specs["i2v"]
    model_names = [m.name for m in services.models("i2v")]

    def model_dropdown(param):
        return gr.Dropdown(choices=model_names, value=param.default if param.default in model_names
                           else (model_names[0] if model_names else None),
                           label="Model", info=param.help, allow_custom_value=False, elem_id="param-model")

    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            image = gr.Image(label="Start image", type="filepath", sources=["upload", "clipboard"],
                             elem_id="i2v-image", height=320)
            with gr.Accordion("Last frame (optional)", open=False):
                end_image = gr.Image(label="End image", type="filepath", sources=["upload", "clipboard"],
                                     elem_id="i2v-end-image", height=240)
            fields = build_form(spec, custom={"model": model_dropdown})
        with gr.Column(scale=1):
            video = gr.Video(label="Video", autoplay=True, loop=True, elem_id="i2v-video", height=420)
            status = gr.Markdown(elem_id="i2v-status")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="i2v-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="i2v-stop")
            with gr.Accordion("Metadata", open=False):
                metadata = gr.JSON(label="Saved with the video", elem_id="i2v-metadata")

    names = list(fields)

    async def ui_i2v(image_path, end_image_path, *values, progress=gr.Progress()):
        params = values_to_params(names, values)
        job = submit_or_explain(lambda: services.submit_i2v(params, image_path, end_image_path))
        yield gr.skip(), f"Job `{job.id}` waiting for the GPU…", gr.skip()
        async for event in follow(job, progress):
            if isinstance(event, ProgressEvent) and event.step is None:
                yield gr.skip(), f"Job `{job.id}`: {event.text}", gr.skip()
            elif isinstance(event, FinishedEvent):
                raise_if_failed(event)
                result = event.result
                path = result.outputs[0] if result and result.outputs else None
                yield path, f"Job `{job.id}`: {status_line(event)}", (result.metadata if result else None)

    run_event = generate.click(
        ui_i2v, [image, end_image, *fields.values()], [video, status, metadata],
        api_name="ui_i2v", api_visibility="private", concurrency_id="gpu", concurrency_limit=1,
        show_progress_on=[video],
    )
    stop.click(None, None, None, cancels=[run_event], api_name="ui_i2v_stop", api_visibility="private")
    return fields["model"], lambda: gr.Dropdown(choices=[m.name for m in services.models("i2v")])
