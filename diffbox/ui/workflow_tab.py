"""The tab every workflow gets from its registry object: presets bar, inputs, the spec's form (model picker,
LoRA rows, size presets), named outputs, Generate / Stop, the status line and the settings-file drop.

A workflow with widgets of its own (SVI's streaming player and Extend, Qwen's reference gallery and mask
editor) passes `TabHooks`: small functions that draw or wire those widgets into this one tab. Element ids
are `<prefix>-<part>` (prefix: the workflow's name unless the hooks say otherwise) and private event names
`ui_<workflow>_<part>`, so browser tests and History find a workflow's parts by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, AsyncIterator, Callable

import gradio as gr

from diffbox.engine.runner import FinishedEvent, OutputEvent, ProgressEvent
from diffbox.services import Services
from diffbox.store import DONE
from diffbox.ui.chain import finish_options, finish_steps, main_output, offers_finish, taking_input
from diffbox.ui.form import (build_form, component_for, fill_components, fill_updates, settings_file_loader,
                             size_preset_picker, values_to_params)
from diffbox.ui.image_checks import check_image_uploads
from diffbox.ui.jobs import (GPU_EVENT, failed, follow, job_status, not_started, raise_if_failed, status_line,
                             stop_running, submit_or_explain)
from diffbox.ui.lora_rows import LoraRows
from diffbox.ui.presets_bar import build_presets_bar
from diffbox.ui.prompt_picker import with_prompt_pickers
from diffbox.ui.uploads import UploadGuard
from diffbox.workflows.registry import WORKFLOWS
from diffbox.workflows.workflow import Input, Output, Workflow

CUSTOM_SIZE = "custom"
PRIVATE = {"api_visibility": "private"}

Parts = dict  # a tab's components by name, shared by the generic builder and the hooks


@dataclass
class TabHooks:
    """What a workflow's tab adds to the generic one. Every hook is optional and receives `parts`."""
    elem_prefix: str = ""                                       # ids' prefix when not the workflow's name
    form: Callable[[Parts], dict] | None = None                 # extra form widgets: {param name: maker(param)}
    inputs: Callable[[Parts], list] | None = None               # draws the input side; returns the handler's inputs
    uploads: Callable[[list, dict], dict] | None = None         # (those inputs' values, params) -> files by input name
    under_form: Callable[[Parts], None] | None = None           # draws below the form (SVI's distill button)
    results: Callable[[Parts], None] | None = None              # draws parts[output name] above the status line
    under_buttons: Callable[[Parts], None] | None = None        # draws below Generate / Stop
    to_params: Callable[[dict], dict] | None = None             # form values -> the workflow's params
    on_start: Callable[[Parts], dict] | None = None             # updates once a job is accepted
    on_output: Callable[[Parts, OutputEvent, dict], dict] | None = None  # updates for a partial result
    finished_note: Callable[[dict], str] | None = None          # appended to the status when the job ends
    wire: Callable[[Any, Parts], None] | None = None            # the workflow's own events (tab, parts)
    tab_class: type | None = None                               # a WorkflowTab subclass (extra refill or refresh)
    stop_label: str = "Stop"


def part_id(prefix: str, name: str) -> str:
    return f"{prefix}-{name.replace('_', '-')}"


@dataclass
class WorkflowTab:
    """What the app needs from a tab: its form (History refills it) and its model refresh."""
    workflow: Workflow
    fields: dict
    loras: LoraRows | None
    services: Services
    parts: Parts = field(default_factory=dict)
    job_outputs: list = field(default_factory=list)  # every component a job's updates may name
    follow_job: Callable | None = None  # (start, progress=None) -> async {component: value}; for hooks' job events
    to_params: Callable | None = None   # form values in form order -> the workflow's params

    @property
    def names(self) -> list[str]:
        """The spec's parameter names in form order: the order a handler receives their values in."""
        return list(self.fields)

    @property
    def fill_outputs(self) -> list:
        return fill_components(self.fields, self.loras)

    def fill(self, params: dict | None) -> list:
        """Updates that put saved params into the form; unknown or missing keys keep the form's value."""
        return fill_updates(self.fields, self.loras, params)

    def from_record(self, record: dict) -> list:
        return self.fill(record.get("params"))

    def refresh_choices(self) -> list:
        models = [gr.Dropdown(choices=[m.name for m in self.services.models(self.workflow.name)])]
        return [*(models if "model" in self.fields else []), *(self.loras.refresh() if self.loras else [])]

    @property
    def refresh_outputs(self) -> list:
        """The pickers whose choices are the library's: re-read on every page load."""
        models = [self.fields["model"]] if "model" in self.fields else []
        return [*models, *((row[0] for row in self.loras.rows) if self.loras else [])]


def model_picker(services: Services, workflow: str, param, elem_id: str) -> gr.Dropdown:
    """The library's models for a workflow; the spec's default if it is there, else the first one."""
    names = [m.name for m in services.models(workflow)]
    value = param.default if param.default in names else (names[0] if names else None)
    return gr.Dropdown(choices=names, value=value, label="Model", info=param.help, elem_id=elem_id)


def width_with_size_presets(spec, presets: dict, info: str, elem_id: str, parts: Parts):
    """A form hook for `width`: a size-preset dropdown (kept in parts["preset"]) above the width box."""
    def width(param):
        current = (param.default, spec["height"].default)
        label = next((k for k, v in presets.items() if v == current), CUSTOM_SIZE)
        parts["preset"] = gr.Dropdown([*presets, CUSTOM_SIZE], value=label, label="Size", info=info, elem_id=elem_id)
        return component_for(param)
    return width


def input_component(prefix: str, put: Input) -> gr.Component:
    common = {"label": put.label, "elem_id": part_id(prefix, put.name)}
    if put.kind in ("image", "mask"):
        return gr.Image(type="filepath", sources=["upload", "clipboard"], height=220 if put.optional else 300,
                        **common)
    if put.kind == "images":
        return gr.Gallery(type="filepath", height=220, **common)
    if put.kind == "video":
        return gr.Video(sources=["upload"], height=300, **common)
    return gr.File(file_types=["image", "video"], type="filepath", height=140, **common)


def output_component(prefix: str, out: Output) -> gr.Component:
    common = {"label": out.label, "elem_id": part_id(prefix, out.name)}
    if out.kind == "video":
        return gr.Video(autoplay=True, loop=True, height=400, buttons=["download"], **common)
    if out.kind == "image":
        return gr.Image(interactive=False, height=400, format="png", **common)
    if out.kind == "images":
        return gr.Gallery(columns=2, height=420, format="png", interactive=False, **common)
    return gr.File(interactive=False, **common)


def output_value(out: Output, paths: list[str]):
    return list(paths) if out.kind == "images" else (paths[0] if paths else None)


def draw_inputs(workflow: Workflow, prefix: str) -> list:
    """One component per input; optional ones folded away."""
    drawn = []
    for put in workflow.inputs:
        if put.optional:
            with gr.Accordion(f"{put.label} (optional)", open=False):
                drawn.append(input_component(prefix, put))
        else:
            drawn.append(input_component(prefix, put))
    return drawn


def finish_picker(services: Services, prefix: str) -> gr.CheckboxGroup:
    return gr.CheckboxGroup(list(finish_options(services.specs)), value=[], label="Finish with",
                            info="Each chosen step runs after the job as a job of its own on the result (with its "
                                 "tab's default settings); the last result shows here.",
                            elem_id=part_id(prefix, "finish"))


def build_workflow_tab(services: Services, workflow: Workflow, hooks: TabHooks | None = None) -> WorkflowTab:
    hooks = hooks or TabHooks()
    name, spec = workflow.name, services.specs[workflow.name]
    prefix = hooks.elem_prefix or name
    presets = dict(workflow.size_presets)
    parts: Parts = {}

    def lora_rows(param):
        parts["loras"] = LoraRows(param, lambda: [lora.name for lora in services.loras(workflow.base_model)],
                                  experts=workflow.lora_weights, elem_prefix=part_id(prefix, "lora"))
        return parts["loras"].state

    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            presets_slot = gr.Column()  # the presets bar goes here, above the form, once the form exists
            if hooks.inputs:
                inputs = hooks.inputs(parts)
            else:  # by name too, so History can send an output to them
                inputs = draw_inputs(workflow, prefix)
                parts.update(zip((put.name for put in workflow.inputs), inputs))
            custom = {"model": lambda param: model_picker(services, name, param, part_id(prefix, "model"))}
            if presets and "width" in spec:
                custom["width"] = width_with_size_presets(spec, presets, f"{workflow.title}: trained sizes, or custom.",
                                                          part_id(prefix, "size-preset"), parts)
            if "loras" in spec:
                custom["loras"] = lora_rows
            makers = {**custom, **(hooks.form(parts) if hooks.form else {})}
            fields = build_form(spec, custom=with_prompt_pickers(services, spec, makers, prefix, parts))
            if hooks.under_form:
                hooks.under_form(parts)
            finish = finish_picker(services, prefix) if offers_finish(workflow) else None
        with gr.Column(scale=1):
            if hooks.results:
                hooks.results(parts)
            else:
                parts.update({out.name: output_component(prefix, out) for out in workflow.outputs})
            parts["preview"] = gr.Image(label="Live preview (latents, no decode)", interactive=False, height=140,
                                        elem_id=part_id(prefix, "preview"), format="png", visible=workflow.live_preview)
            parts["status"] = gr.Markdown(elem_id=part_id(prefix, "status"))
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id=part_id(prefix, "generate"))
                stop = gr.Button(hooks.stop_label, variant="stop", elem_id=part_id(prefix, "stop"))
            if hooks.under_buttons:
                hooks.under_buttons(parts)
            with gr.Accordion("Metadata", open=False):
                parts["metadata"] = gr.JSON(label="Saved with the output", elem_id=part_id(prefix, "metadata"))
            settings_file = gr.File(label="Drop a diffbox output or meta.json to reuse its settings",
                                    file_types=[".mp4", ".png", ".json"], type="filepath",
                                    elem_id=part_id(prefix, "settings-file"), height=100)
    parts["running_job"] = gr.State(None)  # the job this page started, for Stop

    tab = (hooks.tab_class or WorkflowTab)(workflow, fields, parts.get("loras"), services, parts)
    with presets_slot:
        build_presets_bar(services, name, fields, tab.fill, tab.fill_outputs)

    guard = UploadGuard(services.settings.outputs_dir)
    outputs = [parts[out.name] for out in workflow.outputs]
    status, metadata, running_job = parts["status"], parts["metadata"], parts["running_job"]

    def to_params(values) -> dict:
        params = values_to_params(tab.names, values)
        return hooks.to_params(params) if hooks.to_params else params

    async def follow_job(start: Callable, progress=None, seen: dict | None = None,
                         hooked: bool = True) -> AsyncIterator[dict]:
        """Updates for one job, as {component: value}: what is not named stays as it is on screen. `seen`
        receives the job's id and its FinishedEvent; `hooked=False` (a finishing step) leaves the
        workflow's own widgets alone."""
        seen = {} if seen is None else seen
        active = hooks if hooked else TabHooks()
        try:
            job = await submit_or_explain(start)
        except gr.Error as refusal:  # what is on screen stays; the status says why nothing started
            yield {status: not_started(refusal)}
            raise
        seen["job"] = job.id
        notes: list[str] = []
        state: dict = {}
        yield {parts["preview"]: None, status: f"Job `{job.id}` waiting for the GPU…", running_job: job.id,
               **(active.on_start(parts) if active.on_start else {})}
        async for event in follow(job, progress):
            if isinstance(event, OutputEvent) and event.kind == "preview":
                yield {parts["preview"]: event.data}
            elif isinstance(event, OutputEvent) and event.kind == "note":
                notes.append(event.data)
                yield {status: job_status(job.id, "", notes)}
            elif isinstance(event, OutputEvent) and active.on_output:
                yield active.on_output(parts, event, state)
            elif isinstance(event, ProgressEvent) and (event.step is None or progress is None):
                yield {status: job_status(job.id, event.text, notes)}
            elif isinstance(event, FinishedEvent):
                seen["finished"] = event
                note = active.finished_note(state) if active.finished_note else ""
                shown = {status: job_status(job.id, status_line(event) + note, notes), running_job: None}
                result = event.result
                if result and result.outputs:  # a stopped or failed job may leave what it finished (SVI's clips)
                    shown.update({c: output_value(out, result.outputs) for c, out in zip(outputs, workflow.outputs)})
                    shown[metadata] = result.metadata
                elif not failed(event):
                    shown[metadata] = None
                yield shown
                raise_if_failed(event)

    async def follow_chain(start: Callable, chosen: list[str] | None, progress=None) -> AsyncIterator[dict]:
        """The job, then each "Finish with" step on the previous job's main output, each a job of its own
        whose record names its source; a step runs only when the job before it finished with a result."""
        steps: list = []

        def checked_start():
            steps[:] = finish_steps(chosen, services.specs)  # refused like any bad field, before anything queues
            return start()

        seen: dict = {}
        async for update in follow_job(checked_start, progress, seen):
            yield update
        lead = ""
        for label, step_name, step_params in steps:
            finished = seen.get("finished")
            source = main_output(finished.result.outputs) if finished.status == DONE and finished.result else None
            if not source:
                return
            step, source_job = WORKFLOWS[step_name], seen["job"]
            files = guard.inputs(step, {taking_input(step, "video").name: source})
            lead += f"Job `{source_job}`: done. Then {label}:\n\n"
            start_step = partial(services.submit, step_name, step_params, files, source_job=source_job)
            async for update in follow_job(start_step, progress, seen, hooked=False):
                yield {**update, **({status: lead + update[status]} if status in update else {})}

    async def run_job(*values, progress=gr.Progress()):
        uploaded, form_values = values[:len(inputs)], values[len(inputs):len(inputs) + len(fields)]
        chosen = values[len(inputs) + len(fields)] if finish else None
        params = to_params(form_values)
        files = (hooks.uploads(list(uploaded), params) if hooks.uploads
                 else dict(zip((put.name for put in workflow.inputs), uploaded)))
        async for update in follow_chain(lambda: services.submit(name, params, guard.inputs(workflow, files)), chosen,
                                         progress):
            yield update

    tab.follow_job, tab.to_params = follow_job, to_params
    # Every component a job's updates may name; hooks add theirs to parts["extra_outputs"] (SVI's live clips).
    tab.job_outputs = [*outputs, parts["preview"], status, metadata, running_job, *parts.get("extra_outputs", [])]
    from_file = settings_file_loader(name, workflow.title, tab.fill, len(tab.fill_outputs))

    def settings_from_file(path):
        return from_file(guard.file(path, "file"))

    generate.click(
        run_job, [*inputs, *fields.values(), *([finish] if finish else [])], tab.job_outputs, api_name=f"ui_{name}",
        **PRIVATE, **GPU_EVENT,
        # Progress and errors are drawn on the status line only: an error badge on the outputs would hide
        # the last result, which a refused or failed job must leave on screen.
        show_progress_on=[status],
    )
    # Queued, as every event that may answer with gr.Info/gr.Warning: Gradio drops them from unqueued ones.
    stop.click(stop_running(services.runner.cancel), running_job, None, api_name=f"ui_{name}_stop", **PRIVATE,
               queue=True, show_progress="hidden")
    if "preset" in parts:
        parts["preset"].change(size_preset_picker(presets), parts["preset"], [fields["width"], fields["height"]],
                               api_name=f"ui_{name}_size", **PRIVATE, queue=False)
    settings_file.upload(settings_from_file, settings_file, tab.fill_outputs, api_name=f"ui_{name}_settings_file",
                         **PRIVATE, queue=True)
    if not hooks.inputs:
        for put, component in zip(workflow.inputs, inputs):
            if put.kind in ("image", "mask"):
                check_image_uploads(component, guard, put.label, f"ui_{name}_{put.name}_check")
    if hooks.wire:
        hooks.wire(tab, parts)
    return tab
