"""The Wan 2.2 image-to-video tab."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from diffbox.engine.runner import FinishedEvent, OutputEvent, ProgressEvent
from diffbox.services import Services
from diffbox.ui.form import (build_form, component_for, fill_components, fill_updates, settings_file_loader,
                             size_preset_picker, values_to_params)
from diffbox.ui.image_checks import check_image_uploads
from diffbox.ui.jobs import (GPU_EVENT, failed, follow, job_status, not_started, raise_if_failed, status_line,
                             stop_running, submit_or_explain)
from diffbox.ui.lora_rows import LoraRows
from diffbox.ui.presets_bar import build_presets_bar
from diffbox.ui.uploads import UploadGuard
from diffbox.workflows import i2v

CUSTOM_SIZE = "custom"


@dataclass
class I2VTab:
    """What other tabs need: the form (to refill it from a history entry) and the model refresh."""
    names: list[str]
    fields: dict
    loras: LoraRows
    model: gr.Dropdown
    services: Services

    @property
    def fill_outputs(self) -> list:
        return fill_components(self.fields, self.loras)

    def fill(self, params: dict | None) -> list:
        """Updates that put saved params into the form; unknown or missing keys keep the form's value."""
        return fill_updates(self.fields, self.loras, params)

    def refresh_choices(self) -> list:
        return [gr.Dropdown(choices=[m.name for m in self.services.models("i2v")]), *self.loras.refresh()]

    @property
    def refresh_outputs(self) -> list:
        return [self.model, *(row[0] for row in self.loras.rows)]


def build_i2v_tab(services: Services) -> I2VTab:
    spec = services.specs["i2v"]
    model_names = [m.name for m in services.models("i2v")]
    presets = {label: size for label, size in i2v.RESOLUTION_PRESETS.items()}
    holder: dict = {}

    def model_dropdown(param):
        value = param.default if param.default in model_names else (model_names[0] if model_names else None)
        return gr.Dropdown(choices=model_names, value=value, label="Model", info=param.help, elem_id="param-model")

    def width_with_presets(param):
        current = (param.default, spec["height"].default)
        label = next((k for k, v in presets.items() if v == current), CUSTOM_SIZE)
        holder["preset"] = gr.Dropdown([*presets, CUSTOM_SIZE], value=label, label="Size",
                                       info="Wan 2.2's trained sizes, or custom.", elem_id="i2v-size-preset")
        return component_for(param)

    def lora_rows(param):
        holder["loras"] = LoraRows(lambda: [l.name for l in services.loras(i2v.BASE_MODEL)], elem_prefix="i2v-lora")
        return holder["loras"].state

    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            presets_slot = gr.Column()  # the presets bar goes here, above the form, once the form exists
            image = gr.Image(label="Start image", type="filepath", sources=["upload", "clipboard"],
                             elem_id="i2v-image", height=300)
            with gr.Accordion("Last frame (optional)", open=False):
                end_image = gr.Image(label="End image", type="filepath", sources=["upload", "clipboard"],
                                     elem_id="i2v-end-image", height=220)
            fields = build_form(spec, custom={"model": model_dropdown, "width": width_with_presets,
                                              "loras": lora_rows})
        with gr.Column(scale=1):
            video = gr.Video(label="Video", autoplay=True, loop=True, elem_id="i2v-video", height=400,
                             buttons=["download"])
            preview = gr.Image(label="Live preview (latents, no decode)", interactive=False, height=140,
                               elem_id="i2v-preview", format="png")
            status = gr.Markdown(elem_id="i2v-status")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="i2v-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="i2v-stop")
            with gr.Accordion("Metadata", open=False):
                metadata = gr.JSON(label="Saved with the video", elem_id="i2v-metadata")
            settings_file = gr.File(label="Drop a diffbox video or meta.json to reuse its settings",
                                    file_types=[".mp4", ".json"], type="filepath", elem_id="i2v-settings-file",
                                    height=100)

    names = list(fields)
    tab = I2VTab(names, fields, holder["loras"], fields["model"], services)
    with presets_slot:
        build_presets_bar(services, "i2v", fields, tab.fill, tab.fill_outputs)

    guard = UploadGuard(services.settings.outputs_dir)

    async def ui_i2v(image_path, end_image_path, *values, progress=gr.Progress()):
        params = values_to_params(names, values)
        skip = gr.skip()
        try:
            job = await submit_or_explain(lambda: services.submit_i2v(params, guard.file(image_path, "image"),
                                                                      guard.file(end_image_path, "end_image")))
        except gr.Error as refusal:  # the video on screen stays; the status says why nothing started
            yield skip, skip, not_started(refusal), skip, skip
            raise
        notes: list[str] = []
        yield skip, None, f"Job `{job.id}` waiting for the GPU…", skip, job.id
        async for event in follow(job, progress):
            if isinstance(event, OutputEvent) and event.kind == "preview":
                yield skip, event.data, skip, skip, skip
            elif isinstance(event, OutputEvent) and event.kind == "note":
                notes.append(event.data)
                yield skip, skip, job_status(job.id, "", notes), skip, skip
            elif isinstance(event, ProgressEvent) and event.step is None:
                yield skip, skip, job_status(job.id, event.text, notes), skip, skip
            elif isinstance(event, FinishedEvent):
                status_text = job_status(job.id, status_line(event), notes)
                if failed(event):  # the last video stays on screen; the status line and a toast say why
                    yield skip, skip, status_text, skip, None
                    raise_if_failed(event)
                result = event.result
                path = result.outputs[0] if result and result.outputs else None
                yield path, skip, status_text, (result.metadata if result else None), None

    size_preset = size_preset_picker(presets)
    from_file = settings_file_loader("i2v", "image-to-video", tab.fill, len(tab.fill_outputs))

    def settings_from_file(path):
        return from_file(guard.file(path, "file"))

    running_job = gr.State(None)  # the job this page started, for Stop
    generate.click(
        ui_i2v, [image, end_image, *fields.values()], [video, preview, status, metadata, running_job],
        api_name="ui_i2v", api_visibility="private", **GPU_EVENT,
        # Progress and errors are drawn on the status line only: an error badge on the video would hide
        # the last result, which a refused or failed job must leave on screen.
        show_progress_on=[status],
    )
    # Queued, as every event that may answer with gr.Info/gr.Warning: Gradio drops them from unqueued ones.
    stop.click(stop_running(services.runner.cancel), running_job, None, api_name="ui_i2v_stop",
               api_visibility="private", queue=True, show_progress="hidden")
    holder["preset"].change(size_preset, holder["preset"], [fields["width"], fields["height"]],
                            api_name="ui_i2v_size", api_visibility="private", queue=False)
    settings_file.upload(settings_from_file, settings_file, tab.fill_outputs, api_name="ui_i2v_settings_file",
                         api_visibility="private", queue=True)
    check_image_uploads(image, guard, "Start image", "ui_i2v_image_check")
    check_image_uploads(end_image, guard, "End image", "ui_i2v_end_image_check")
    return tab
