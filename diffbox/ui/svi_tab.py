"""The SVI 2.0 Pro tab's own widgets, hooked into the generic workflow tab: each finished clip streams into
the player and the gallery as it is decoded, named LoRA pickers, the distill preset and Extend."""

from __future__ import annotations

import re

import gradio as gr

from diffbox.markup import plain
from diffbox.services import Services
from diffbox.ui.image_checks import check_image_uploads
from diffbox.ui.jobs import GPU_EVENT
from diffbox.ui.uploads import UploadGuard
from diffbox.ui.workflow_tab import TabHooks, WorkflowTab, build_workflow_tab
from diffbox.workflows import svi
from diffbox.workflows.outputs import STREAMING_NEEDS_FFMPEG, streaming_tools_missing

NONE = ""
# What a distill LoRA's file is usually called (LightX2V, Wan2.2-Lightning, CausVid): the distill preset
# picks such a file when the form names none.
DISTILL_NAME = re.compile(r"lightx2v|lightning|distill|causvid", re.IGNORECASE)
# Extend continues the saved video, so its size is the video's: the form's width and height are not sent.
EXTEND_KEEPS = ("width", "height")
NAMED_LORAS = ("svi_lora_high", "svi_lora_low", "distill_lora")


class SVITab(WorkflowTab):
    """The generic tab's form and refresh, plus Extend's job id, the anchor image and the named LoRA pickers."""

    @property
    def fill_outputs(self) -> list:
        return [*super().fill_outputs, self.parts["extend_job"], self.parts["image"]]

    def fill(self, params: dict | None, job_id: str | None = None) -> list:
        """Updates that put saved params into the form; for an earlier job also its id (Extend continues
        it) and its anchor image, which every SVI job keeps beside its video."""
        params = dict(params or {})
        if isinstance(params.get("prompts"), list):
            params["prompts"] = "\n".join(params["prompts"])
        anchor = self.services.settings.outputs_dir / job_id / svi.ANCHOR_FILE if job_id else None
        return super().fill(params) + [job_id or gr.skip(), str(anchor) if anchor and anchor.is_file() else gr.skip()]

    def from_record(self, record: dict) -> list:
        return self.fill(record.get("params"), record.get("id"))

    def lora_choices(self) -> list[str]:
        return [NONE, *(lora.name for lora in self.services.loras(svi.BASE_MODEL))]

    def refresh_choices(self) -> list:
        return [*super().refresh_choices(), *[gr.Dropdown(choices=self.lora_choices())] * len(NAMED_LORAS)]

    @property
    def refresh_outputs(self) -> list:
        return [*super().refresh_outputs, *(self.fields[name] for name in NAMED_LORAS)]


def prompt_lines(params: dict) -> dict:
    text = params.get("prompts") or ""
    if isinstance(text, str):
        params["prompts"] = [line.strip() for line in text.splitlines() if line.strip()]
    return params


def svi_hooks(services: Services) -> TabHooks:
    can_stream = not streaming_tools_missing()  # without them Gradio's stream fails the whole update

    def inputs(parts):
        parts["image"] = gr.Image(label="Anchor image", type="filepath", sources=["upload", "clipboard"],
                                  elem_id="svi-image", height=300)
        return [parts["image"]]

    def form(parts):
        def lora_file(param):
            choices = [NONE, *(lora.name for lora in services.loras(svi.BASE_MODEL))]
            value = param.default if param.default in choices else NONE
            return gr.Dropdown(choices=choices, value=value, label=param.title, info=param.help,
                               elem_id=f"svi-{param.name}", allow_custom_value=True)

        def prompts_box(param):
            return gr.Textbox("\n".join(param.default), lines=4, max_lines=20, label="Prompts, one line per clip",
                              info=param.help + " An empty box means no prompt.", elem_id="svi-prompts")
        return {"prompts": prompts_box, **dict.fromkeys(NAMED_LORAS, lora_file)}

    def under_form(parts):
        parts["distill"] = gr.Button("Distill preset (6 steps, CFG 1, Euler, a distill LoRA)", size="sm",
                                     elem_id="svi-distill-preset")

    def results(parts):
        if not can_stream:
            gr.Markdown(f"**Note:** {STREAMING_NEEDS_FFMPEG}", elem_id="svi-ffmpeg-note")
        parts["stream"] = gr.Video(label="Live: each clip as it finishes", streaming=True, autoplay=True,
                                   elem_id="svi-stream", height=360)

    def under_buttons(parts):
        parts["clips"] = gr.Gallery(label="Clips", columns=4, height=200, elem_id="svi-clips", format="mp4")
        parts["video"] = gr.Video(label="Stitched video", loop=True, elem_id="svi-video", height=360,
                                  buttons=["download"])
        parts["extra_outputs"] = [parts["stream"], parts["clips"]]
        with gr.Accordion("Extend an earlier video", open=False):
            parts["extend_job"] = gr.Textbox(
                label="Job to continue", elem_id="svi-extend-job",
                info="An SVI job id (History → Use these settings fills it). Extend continues that video from its "
                     "saved latents with the prompts above, at the video's own size (the form's width and height "
                     "are not used).")
            parts["extend"] = gr.Button("Extend", elem_id="svi-extend")

    def on_start(parts):
        return {parts["stream"]: None, parts["clips"]: [], parts["video"]: None, parts["metadata"]: None}

    def on_output(parts, event, state):
        if event.kind != "clip":
            return {}
        state.setdefault("clips", []).append(event.path)
        return {parts["clips"]: list(state["clips"]), **({parts["stream"]: event.path} if can_stream else {})}

    def finished_note(state):
        return f" {len(state['clips'])} clip(s) kept and stitched." if state.get("clips") else ""

    def wire(tab: SVITab, parts):
        fields = tab.fields

        async def ui_svi_extend(job_id, *values):
            params = {k: v for k, v in tab.to_params(values).items() if k not in EXTEND_KEEPS}
            async for update in tab.follow_job(lambda: services.submit_svi_extend((job_id or "").strip(), params)):
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
                return [gr.skip()] * (len(svi.DISTILL_PRESET) + 1)
            gr.Info(plain(f"Distill preset: 6 Euler steps at CFG 1 with {lora}."))
            return [*svi.DISTILL_PRESET.values(), lora]

        parts["extend"].click(ui_svi_extend, [parts["extend_job"], *fields.values()], tab.job_outputs,
                              api_name="ui_svi_extend", api_visibility="private", show_progress_on=[parts["status"]],
                              **GPU_EVENT)
        parts["distill"].click(distill_preset, fields["distill_lora"],
                               [*(fields[name] for name in svi.DISTILL_PRESET), fields["distill_lora"]],
                               api_name="ui_svi_distill", api_visibility="private", queue=True, show_progress="hidden")
        check_image_uploads(parts["image"], UploadGuard(services.settings.outputs_dir), "Anchor image",
                            "ui_svi_image_check")

    return TabHooks(inputs=inputs, form=form, under_form=under_form, results=results, under_buttons=under_buttons,
                    to_params=prompt_lines, on_start=on_start, on_output=on_output, finished_note=finished_note,
                    wire=wire, tab_class=SVITab, stop_label="Stop (keeps finished clips)")


def build_svi_tab(services: Services) -> SVITab:
    return build_workflow_tab(services, svi.WORKFLOW, svi_hooks(services))
