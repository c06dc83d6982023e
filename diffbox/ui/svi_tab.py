"""The SVI 2.0 Pro tab: each finished clip streams into the player and the gallery as it is decoded."""

from __future__ import annotations

import re
from dataclasses import dataclass

import gradio as gr

from diffbox.engine.runner import FinishedEvent, OutputEvent, ProgressEvent
from diffbox.markup import plain
from diffbox.services import Services
from diffbox.ui.form import build_form, fill_components, fill_updates, values_to_params
from diffbox.ui.image_checks import check_image_uploads
from diffbox.ui.jobs import (GPU_EVENT, follow, not_started, raise_if_failed, status_line, stop_running,
                             submit_or_explain)
from diffbox.ui.lora_rows import LoraRows
from diffbox.ui.presets_bar import build_presets_bar
from diffbox.ui.uploads import UploadGuard
from diffbox.workflows import svi
from diffbox.workflows.outputs import STREAMING_NEEDS_FFMPEG, streaming_tools_missing

NONE = ""
# What a distill LoRA's file is usually called (LightX2V, Wan2.2-Lightning, CausVid): the distill preset
# picks such a file when the form names none.
DISTILL_NAME = re.compile(r"lightx2v|lightning|distill|causvid", re.IGNORECASE)
# Extend continues the saved video, so its size is the video's: the form's width and height are not sent.
EXTEND_KEEPS = ("width", "height")


@dataclass
class SVITab:
    """What other tabs need: the form (to refill it from a history entry) and the model refresh."""
    names: list[str]
    fields: dict
    loras: LoraRows
    extend_job: gr.Textbox
    image: gr.Image
    services: Services

    @property
    def fill_outputs(self) -> list:
        return [*fill_components(self.fields, self.loras), self.extend_job, self.image]

    def fill(self, params: dict | None, job_id: str | None = None) -> list:
        """Updates that put saved params into the form; for an earlier job also its id (Extend continues
        it) and its anchor image, which every SVI job keeps beside its video."""
        params = dict(params or {})
        if isinstance(params.get("prompts"), list):
            params["prompts"] = "\n".join(params["prompts"])
        anchor = self.services.settings.outputs_dir / job_id / svi.ANCHOR_FILE if job_id else None
        return fill_updates(self.fields, self.loras, params) + [
            job_id or gr.skip(), str(anchor) if anchor and anchor.is_file() else gr.skip()]

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
            presets_slot = gr.Column()  # the presets bar goes here, above the form, once the form exists
            image = gr.Image(label="Anchor image", type="filepath", sources=["upload", "clipboard"],
                             elem_id="svi-image", height=300)
            fields = build_form(spec, custom={"model": model_dropdown, "prompts": prompts_box, "loras": lora_rows,
                                              "svi_lora_high": lora_file, "svi_lora_low": lora_file,
                                              "distill_lora": lora_file})
            distill = gr.Button("Distill preset (6 steps, CFG 1, Euler, a distill LoRA)", size="sm",
                                elem_id="svi-distill-preset")
        with gr.Column(scale=1):
            if streaming_tools_missing():
                gr.Markdown(f"**Note:** {STREAMING_NEEDS_FFMPEG}", elem_id="svi-ffmpeg-note")
            stream = gr.Video(label="Live: each clip as it finishes", streaming=True, autoplay=True,
                              elem_id="svi-stream", height=360)
            preview = gr.Image(label="Live preview of the clip being made (latents, no decode)", interactive=False,
                               height=140, elem_id="svi-preview", format="png")
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
                                             "continues that video from its saved latents with the prompts above, "
                                             "at the video's own size (the form's width and height are not used).")
                extend = gr.Button("Extend", elem_id="svi-extend")
            with gr.Accordion("Metadata", open=False):
                metadata = gr.JSON(label="Saved with the video", elem_id="svi-metadata")

    names = list(fields)
    tab = SVITab(names, fields, holder["loras"], extend_job, image, services)
    with presets_slot:
        build_presets_bar(services, "svi", fields, tab.fill, tab.fill_outputs)

    def to_params(values) -> dict:
        params = values_to_params(names, values)
        text = params.get("prompts") or ""
        params["prompts"] = [line.strip() for line in text.splitlines() if line.strip()] if isinstance(text, str) \
            else text
        return params

    can_stream = not streaming_tools_missing()  # without them Gradio's stream fails the whole update

    async def stream_job(start):
        skip = gr.skip()
        try:
            job = await submit_or_explain(start)
        except gr.Error as refusal:  # what is on screen stays; the status says why nothing started
            yield skip, skip, skip, not_started(refusal), skip, skip, skip
            raise
        shown: list[str] = []
        yield None, None, [], f"Job `{job.id}` waiting for the GPU…", None, None, job.id
        async for event in follow(job):
            if isinstance(event, OutputEvent) and event.kind == "clip":
                shown.append(event.path)
                yield event.path if can_stream else skip, skip, list(shown), skip, skip, skip, skip
            elif isinstance(event, OutputEvent) and event.kind == "preview":
                yield skip, event.data, skip, skip, skip, skip, skip
            elif isinstance(event, ProgressEvent):
                yield skip, skip, skip, f"Job `{job.id}`: {event.text}", skip, skip, skip
            elif isinstance(event, FinishedEvent):
                result = event.result
                path = result.outputs[0] if result and result.outputs else None
                kept = f" {len(shown)} clip(s) kept and stitched." if shown else ""
                # A failed run keeps its finished clips too: show them, then say why it ended.
                yield skip, skip, skip, f"Job `{job.id}`: {status_line(event)}{kept}", path or skip, \
                    (result.metadata if result else skip), None
                raise_if_failed(event)

    guard = UploadGuard(services.settings.outputs_dir)

    async def ui_svi(image_path, *values):
        async for update in stream_job(lambda: services.submit_svi(to_params(values), guard.file(image_path, "image"))):
            yield update

    async def ui_svi_extend(job_id, *values):
        params = {k: v for k, v in to_params(values).items() if k not in EXTEND_KEEPS}
        async for update in stream_job(lambda: services.submit_svi_extend((job_id or "").strip(), params)):
            yield update

    def distill_preset(chosen: str):
        """The distill numbers only make sense with a distill LoRA: one is picked from the library when the
        form names none, and without one nothing changes and the user is told what is missing."""
        lora = chosen or next((name for name in tab.lora_choices() if DISTILL_NAME.search(name)), None)
        if not lora:
            gr.Warning("The distill preset needs a distill LoRA (LightX2V or Wan2.2-Lightning), and the library "
                       "has none: download one (Models tab), then choose it under Advanced → Distill lora. "
                       "Nothing was changed: 6 steps at CFG 1 without it give a blurred video.",
                       title="No distill LoRA")
            return [gr.skip()] * (len(preset_fields) + 1)
        gr.Info(plain(f"Distill preset: 6 Euler steps at CFG 1 with {lora}."))
        return [*(svi.DISTILL_PRESET[name] for name in preset_fields), lora]

    running_job = gr.State(None)  # the job this page started, for Stop
    outputs = [stream, preview, clips, status, video, metadata, running_job]
    # Progress and errors are drawn on the status line only: error badges on the player, the clips and the
    # stitched video would hide the last results, which a refused or failed job must leave on screen.
    gpu = {**GPU_EVENT, "api_visibility": "private", "show_progress_on": [status]}
    generate.click(ui_svi, [image, *fields.values()], outputs, api_name="ui_svi", **gpu)
    extend.click(ui_svi_extend, [extend_job, *fields.values()], outputs, api_name="ui_svi_extend", **gpu)
    # Queued, as every event that may answer with gr.Info/gr.Warning: Gradio drops them from unqueued ones.
    stop.click(stop_running(services.runner.cancel), running_job, None, api_name="ui_svi_stop",
               api_visibility="private", queue=True, show_progress="hidden")
    preset_fields = list(svi.DISTILL_PRESET)
    distill.click(distill_preset, fields["distill_lora"], [*(fields[name] for name in preset_fields),
                                                           fields["distill_lora"]],
                  api_name="ui_svi_distill", api_visibility="private", queue=True, show_progress="hidden")
    check_image_uploads(image, guard, "Anchor image", "ui_svi_image_check")
    return tab
