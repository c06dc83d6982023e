"""The SVI 2.0 Pro tab: each finished clip streams into the player and the gallery as it is decoded."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from diffbox.engine.runner import FinishedEvent, OutputEvent, ProgressEvent
from diffbox.services import Services
from diffbox.ui.form import build_form, fill_components, fill_updates, values_to_params
from diffbox.ui.jobs import GPU_EVENT, follow, raise_if_failed, status_line, stop_running, submit_or_explain
from diffbox.ui.lora_rows import LoraRows
from diffbox.ui.presets_bar import build_presets_bar
from diffbox.ui.uploads import UploadGuard
from diffbox.workflows import svi
from diffbox.workflows.outputs import STREAMING_NEEDS_FFMPEG, streaming_tools_missing

NONE = ""


@dataclass
class SVITab:
    """What other tabs need: the form (to refill it from a history entry) and the model refresh."""
    names: list[str]
    fields: dict
    loras: LoraRows
    extend_job: gr.Textbox
    services: Services

    @property
    def fill_outputs(self) -> list:
        return [*fill_components(self.fields, self.loras), self.extend_job]

    def fill(self, params: dict | None, job_id: str | None = None) -> list:
        """Updates that put saved params into the form (and the job to continue into Extend)."""
        params = dict(params or {})
        if isinstance(params.get("prompts"), list):
            params["prompts"] = "\n".join(params["prompts"])
        return fill_updates(self.fields, self.loras, params) + [job_id or gr.skip()]

    def lora_choices(self) -> list[str]:
        return [NONE, *(l.name for l in self.services.loras(svi.BASE_MODEL))]

    def refresh_choices(self) -> list:
        loras = gr.Dropdown(choices=self.lora_choices())
        return [gr.Dropdown(choices=[m.name for m in self.services.models("svi")]), loras, loras, loras,
                *self.loras.refresh()]

    @property
    def refresh_outputs(self) -> list:
        return [self.fields["model"], self.fields["svi_lora_high"], self.fields["svi_lora_low"],
                self.fields["distill_lora"], *(row[0] for row in self.loras.rows)]


def build_svi_tab(services: Services) -> SVITab:
    spec = services.specs["svi"]
    model_names = [m.name for m in services.models("svi")]
    holder: dict = {}

    def lora_names() -> list[str]:
        return [l.name for l in services.loras(svi.BASE_MODEL)]

    def model_dropdown(param):
        value = param.default if param.default in model_names else (model_names[0] if model_names else None)
        return gr.Dropdown(choices=model_names, value=value, label="Model", info=param.help, elem_id="svi-model")

    def lora_file(param):
        choices = [NONE, *lora_names()]
        value = param.default if param.default in choices else NONE
        return gr.Dropdown(choices=choices, value=value, label=param.title, info=param.help,
                           elem_id=f"svi-{param.name}", allow_custom_value=True)

    def prompts_box(param):
        return gr.Textbox("\n".join(param.default), lines=4, max_lines=20, label="Prompts, one line per clip",
                          info=param.help + " An empty box means no prompt.", elem_id="svi-prompts")

    def lora_rows(param):
        holder["loras"] = LoraRows(lora_names, elem_prefix="svi-lora")
        return holder["loras"].state

    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            presets_slot = gr.Column()  # the presets bar goes here once the form exists
            image = gr.Image(label="Anchor image", type="filepath", sources=["upload", "clipboard"],
                             elem_id="svi-image", height=300)
            fields = build_form(spec, custom={"model": model_dropdown, "prompts": prompts_box, "loras": lora_rows,
                                              "svi_lora_high": lora_file, "svi_lora_low": lora_file,
                                              "distill_lora": lora_file})
            distill = gr.Button("Distill preset (6 steps, CFG 1, Euler)", size="sm", elem_id="svi-distill-preset")
        with gr.Column(scale=1):
            if streaming_tools_missing():
                gr.Markdown(f"**Note:** {STREAMING_NEEDS_FFMPEG}", elem_id="svi-ffmpeg-note")
            stream = gr.Video(label="Live: each clip as it finishes", streaming=True, autoplay=True,
                              elem_id="svi-stream", height=360)
            status = gr.Markdown(elem_id="svi-status")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="svi-generate")
                stop = gr.Button("Stop (keeps finished clips)", variant="stop", elem_id="svi-stop")
            clips = gr.Gallery(label="Clips", columns=4, height=200, elem_id="svi-clips", format="mp4")
            video = gr.Video(label="Stitched video", loop=True, elem_id="svi-video", height=360,
                             buttons=["download"])
            with gr.Accordion("Extend an earlier video", open=False):
                extend_job = gr.Textbox(label="Job to continue", elem_id="svi-extend-job",
                                        info="An SVI job id (History → Use these settings fills it). Extend "
                                             "continues that video from its saved latents with the prompts above.")
                extend = gr.Button("Extend", elem_id="svi-extend")
            with gr.Accordion("Metadata", open=False):
                metadata = gr.JSON(label="Saved with the video", elem_id="svi-metadata")

    names = list(fields)
    tab = SVITab(names, fields, holder["loras"], extend_job, services)
    with presets_slot:
        build_presets_bar(services, "svi", fields, tab.fill, tab.fill_outputs)

    def to_params(values) -> dict:
        params = values_to_params(names, values)
        text = params.get("prompts") or ""
        params["prompts"] = [line.strip() for line in text.splitlines() if line.strip()] if isinstance(text, str) \
            else text
        return params

    can_stream = not streaming_tools_missing()  # without them Gradio's stream fails the whole update

    async def stream_job(job):
        shown: list[str] = []
        skip = gr.skip()
        yield None, [], f"Job `{job.id}` waiting for the GPU…", None, None, job.id
        async for event in follow(job):
            if isinstance(event, OutputEvent) and event.kind == "clip":
                shown.append(event.path)
                yield event.path if can_stream else skip, list(shown), skip, skip, skip, skip
            elif isinstance(event, ProgressEvent):
                yield skip, skip, f"Job `{job.id}`: {event.text}", skip, skip, skip
            elif isinstance(event, FinishedEvent):
                raise_if_failed(event)
                result = event.result
                path = result.outputs[0] if result and result.outputs else None
                kept = f" {len(shown)} clip(s) kept and stitched." if shown else ""
                yield skip, skip, f"Job `{job.id}`: {status_line(event)}{kept}", path, \
                    (result.metadata if result else None), None

    guard = UploadGuard(services.settings.outputs_dir)

    async def ui_svi(image_path, *values):
        job = await submit_or_explain(lambda: services.submit_svi(to_params(values), guard.file(image_path, "image")))
        async for update in stream_job(job):
            yield update

    async def ui_svi_extend(job_id, *values):
        job = await submit_or_explain(lambda: services.submit_svi_extend((job_id or "").strip(), to_params(values)))
        async for update in stream_job(job):
            yield update

    running_job = gr.State(None)  # the job this page started, for Stop
    outputs = [stream, clips, status, video, metadata, running_job]
    gpu = {**GPU_EVENT, "api_visibility": "private"}
    generate.click(ui_svi, [image, *fields.values()], outputs, api_name="ui_svi", **gpu)
    extend.click(ui_svi_extend, [extend_job, *fields.values()], outputs, api_name="ui_svi_extend", **gpu)
    stop.click(stop_running(services.runner.cancel), running_job, None, api_name="ui_svi_stop", api_visibility="private", queue=False)
    preset_fields = list(svi.DISTILL_PRESET)
    distill.click(lambda: [svi.DISTILL_PRESET[name] for name in preset_fields], None,
                  [fields[name] for name in preset_fields], api_name="ui_svi_distill", api_visibility="private",
                  queue=False)
    return tab
