"""The Qwen-Image-Edit tab: references in order, a sketched (or uploaded) mask, results in a gallery."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from diffbox.engine.runner import FinishedEvent, OutputEvent, ProgressEvent
from diffbox.services import Services
from diffbox.ui.form import (build_form, component_for, fill_components, fill_updates, settings_file_loader,
                             size_preset_picker, values_to_params)
from diffbox.ui.image_checks import check_image_uploads, gallery_paths_checked, image_problem
from diffbox.ui.jobs import (GPU_EVENT, failed, follow, job_status, not_started, public_message, raise_if_failed,
                             status_line, stop_running, submit_or_explain)
from diffbox.ui.lora_rows import LoraRows
from diffbox.ui.presets_bar import build_presets_bar
from diffbox.ui.uploads import UploadGuard
from diffbox.workflows import qwen_edit
from diffbox.workflows.masks import editor_to_mask, finish_mask, load_mask

CUSTOM_SIZE = "custom"
NO_CONTROLNET = ""


@dataclass
class QwenTab:
    """What other tabs need: the form (to refill it from a history entry) and the model refresh."""
    names: list[str]
    fields: dict
    loras: LoraRows
    services: Services

    @property
    def fill_outputs(self) -> list:
        return fill_components(self.fields, self.loras)

    def fill(self, params: dict | None) -> list:
        """Updates that put saved params into the form; unknown or missing keys keep the form's value."""
        return fill_updates(self.fields, self.loras, params)

    def refresh_choices(self) -> list:
        return [gr.Dropdown(choices=self._models()), gr.Dropdown(choices=self._controlnets()),
                *self.loras.refresh()]

    @property
    def refresh_outputs(self) -> list:
        return [self.fields["model"], self.fields["controlnet"], *(row[0] for row in self.loras.rows)]

    def _models(self) -> list[str]:
        return [m.name for m in self.services.models("qwen_edit")]

    def _controlnets(self) -> list[str]:
        return [NO_CONTROLNET, *(m.name for m in self.services.qwen_controlnets())]


def _paths(gallery) -> list[str]:
    """Gallery values arrive as (path, caption) pairs, dicts or bare paths depending on the route."""
    paths = []
    for item in gallery or []:
        if isinstance(item, (list, tuple)):
            item = item[0]
        if isinstance(item, dict):
            item = (item.get("image") or {}).get("path") if isinstance(item.get("image"), dict) else item.get("path")
        if item:
            paths.append(str(item))
    return paths


def _editor_over(path: str | None):
    return {"background": path, "layers": [], "composite": path} if path else None


def build_qwen_tab(services: Services) -> QwenTab:
    spec = services.specs["qwen_edit"]
    probe = QwenTab([], {}, None, services)  # only for the model lists
    presets = dict(qwen_edit.RESOLUTION_PRESETS)
    holder: dict = {}

    def model_dropdown(param):
        names = probe._models()
        value = param.default if param.default in names else (names[0] if names else None)
        return gr.Dropdown(choices=names, value=value, label="Model", info=param.help, elem_id="qwen-model")

    def controlnet_dropdown(param):
        return gr.Dropdown(choices=probe._controlnets(), value=NO_CONTROLNET, label="ControlNet", info=param.help,
                           elem_id="qwen-controlnet")

    def width_with_presets(param):
        current = (param.default, spec["height"].default)
        label = next((k for k, v in presets.items() if v == current), CUSTOM_SIZE)
        holder["preset"] = gr.Dropdown([*presets, CUSTOM_SIZE], value=label, label="Size",
                                       info="~1 MP sizes for common aspect ratios, or custom.",
                                       elem_id="qwen-size-preset")
        return component_for(param)

    def lora_rows(param):
        holder["loras"] = LoraRows(lambda: [l.name for l in services.loras(qwen_edit.BASE_MODEL)],
                                   experts=("weight",), elem_prefix="qwen-lora")
        return holder["loras"].state

    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            presets_slot = gr.Column()  # the presets bar goes here, above the form, once the form exists
            references = gr.Gallery(label="Reference images, in order (picture 1, 2, …)", type="filepath",
                                    interactive=True, columns=4, height=220, format="png", elem_id="qwen-images")
            selected_ref = gr.State(None)
            with gr.Row():
                remove_ref = gr.Button("Remove selected", size="sm", elem_id="qwen-remove-image")
                clear_refs = gr.Button("Remove all", size="sm", elem_id="qwen-clear-images")
            with gr.Accordion("Mask (inpaint mode): paint the area to repaint", open=False, elem_id="qwen-mask"):
                editor = gr.ImageEditor(label="Paint over the first image (white = repaint)", type="pil",
                                        image_mode="RGBA", sources=(), elem_id="qwen-mask-editor", height=360,
                                        brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                                        eraser=gr.Eraser(), layers=gr.LayerOptions(allow_additional_layers=True),
                                        format="png")
                with gr.Row():
                    invert = component_for(spec["mask_invert"])
                    feather = component_for(spec["mask_feather"])
                with gr.Row():
                    clear_mask = gr.Button("Clear mask", size="sm", elem_id="qwen-clear-mask")
                mask_file = gr.File(label="…or upload a mask file (white = repaint)", file_types=["image"],
                                    type="filepath", elem_id="qwen-mask-file", height=90)
                mask_preview = gr.Image(label="Mask as it will be used", format="png", interactive=False,
                                        height=160, elem_id="qwen-mask-preview")
            with gr.Accordion("Control image (generate mode with a ControlNet)", open=False):
                control_image = gr.Image(label="Control image", type="filepath", sources=["upload", "clipboard"],
                                         elem_id="qwen-control-image", height=200)
            fields = build_form(spec, custom={
                "model": model_dropdown, "controlnet": controlnet_dropdown, "width": width_with_presets,
                "loras": lora_rows, "mask_invert": lambda p: invert, "mask_feather": lambda p: feather})
        with gr.Column(scale=1):
            results = gr.Gallery(label="Results", format="png", columns=2, height=420, elem_id="qwen-results",
                                 interactive=False)
            selected_result = gr.State(None)
            status = gr.Markdown(elem_id="qwen-status")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="qwen-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="qwen-stop")
            send = gr.Button("Use selected result as the input (chain edits)", elem_id="qwen-send-to-input")
            with gr.Accordion("Metadata", open=False):
                metadata = gr.JSON(label="Saved with the images", elem_id="qwen-metadata")
            settings_file = gr.File(label="Drop a diffbox PNG or meta.json to reuse its settings",
                                    file_types=[".png", ".json"], type="filepath", elem_id="qwen-settings-file",
                                    height=100)

    names = list(fields)
    tab = QwenTab(names, fields, holder["loras"], services)
    with presets_slot:
        build_presets_bar(services, "qwen_edit", fields, tab.fill, tab.fill_outputs)

    guard = UploadGuard(services.settings.outputs_dir)

    def chosen_mask(editor_value, file_path, size=None):
        painted = editor_to_mask(editor_value, size)
        if painted is not None:
            return editor_value
        return file_path or None

    async def ui_qwen_edit(gallery, editor_value, file_path, control_path, *values, progress=gr.Progress()):
        params = values_to_params(names, values)
        mask = chosen_mask(editor_value, file_path) if params.get("mode") == "inpaint" else None
        skip = gr.skip()
        try:
            job = await submit_or_explain(lambda: services.submit_qwen_edit(
                params, guard.files(_paths(gallery), "images"), guard.mask(mask),
                guard.file(control_path, "control_image")))
        except gr.Error as refusal:  # the results on screen stay; the status says why nothing started
            yield skip, not_started(refusal), skip, skip
            raise
        notes: list[str] = []
        yield skip, f"Job `{job.id}` waiting for the GPU…", skip, job.id
        async for event in follow(job, progress):
            if isinstance(event, OutputEvent) and event.kind == "note":
                notes.append(event.data)
                yield skip, job_status(job.id, "", notes), skip, skip
            elif isinstance(event, ProgressEvent) and event.step is None:
                yield skip, job_status(job.id, event.text, notes), skip, skip
            elif isinstance(event, FinishedEvent):
                status_text = job_status(job.id, status_line(event), notes)
                if failed(event):  # the last results stay on screen; the status line and a toast say why
                    yield skip, status_text, skip, None
                    raise_if_failed(event)
                result = event.result
                yield (result.outputs if result else skip), status_text, (result.metadata if result else None), None

    def preview_mask(editor_value, file_path, invert_value, feather_value):
        """What the job will use: the sketch if anything is painted, else the uploaded file."""
        try:
            mask = editor_to_mask(editor_value)
            if mask is None and file_path:
                if image_problem(guard, file_path, "Mask file"):
                    return None  # its upload check takes the file out and says why
                file_path = guard.file(file_path, "mask")
                background = (editor_value or {}).get("background")
                size = background.size if background is not None else None
                mask = load_mask(file_path, size) if size else load_mask(file_path, _size_of(file_path))
            if mask is None:
                return None
            return finish_mask(mask, bool(invert_value), int(feather_value or 0))
        except ValueError as exc:
            gr.Warning(public_message(str(exc)))
            return None

    def references_changed(gallery):
        # The editor draws the first readable picture (a file that is none is being taken out by its check).
        first = next((path for path in _paths(gallery) if image_problem(guard, path, "image") is None), None)
        return _editor_over(first), None

    def remove_selected(gallery, index):
        paths = _paths(gallery)
        if index is not None and 0 <= index < len(paths):
            paths.pop(index)
        return paths, None

    def send_to_input(gallery, index):
        paths = _paths(gallery)
        if not paths:
            gr.Warning("No result yet: generate first, then pick the result to edit further.")
            return gr.skip()
        return [paths[index if index is not None and 0 <= index < len(paths) else 0]]

    def remember(evt: gr.SelectData):
        return evt.index

    def inpaint_matches_input(mode):
        """Inpaint repaints part of the picture shown in the mask editor, so by default its output keeps that
        picture's size; width × height would crop and scale it (640×480 at 1024² loses its sides)."""
        return True if mode == "inpaint" else gr.skip()

    size_preset = size_preset_picker(presets)
    from_file = settings_file_loader("qwen_edit", "Qwen-Image-Edit", tab.fill, len(tab.fill_outputs))

    def settings_from_file(path):
        return from_file(guard.file(path, "file"))

    private = {"api_visibility": "private", "queue": False}
    running_job = gr.State(None)  # the job this page started, for Stop
    generate.click(
        ui_qwen_edit, [references, editor, mask_file, control_image, *fields.values()],
        [results, status, metadata, running_job],
        api_name="ui_qwen_edit", api_visibility="private", **GPU_EVENT,
        # Progress and errors are drawn on the status line only: an error badge on the results would hide
        # them, and a refused or failed job must leave them on screen.
        show_progress_on=[status],
    )
    # Events that may answer with gr.Info/gr.Warning are queued: Gradio drops them from unqueued ones.
    queued = {"api_visibility": "private", "queue": True, "show_progress": "hidden"}
    stop.click(stop_running(services.runner.cancel), running_job, None, api_name="ui_qwen_edit_stop", **queued)
    references.change(references_changed, references, [editor, selected_ref], api_name="ui_qwen_refs", **private)
    references.select(remember, None, selected_ref, api_name="ui_qwen_ref_select", **private)
    remove_ref.click(remove_selected, [references, selected_ref], [references, selected_ref],
                     api_name="ui_qwen_remove_ref", **private)
    clear_refs.click(lambda: ([], None), None, [references, selected_ref], api_name="ui_qwen_clear_refs", **private)
    mask_inputs = [editor, mask_file, invert, feather]
    # A brush stroke fires the editor's input/apply, not change (seen in Chromium with Gradio 6.31).
    mask_events = [editor.change, editor.input, editor.apply, mask_file.change, invert.change, feather.change]
    gr.on(mask_events, preview_mask, mask_inputs, mask_preview, api_name="ui_qwen_mask_preview", **queued)
    clear_mask.click(lambda gallery: (_editor_over((_paths(gallery) or [None])[0]), None), references,
                     [editor, mask_file], api_name="ui_qwen_clear_mask", **private)
    results.select(remember, None, selected_result, api_name="ui_qwen_result_select", **private)
    send.click(send_to_input, [results, selected_result], references, api_name="ui_qwen_send", **queued)
    holder["preset"].change(size_preset, holder["preset"], [fields["width"], fields["height"]],
                            api_name="ui_qwen_size", **private)
    settings_file.upload(settings_from_file, settings_file, tab.fill_outputs, api_name="ui_qwen_settings_file",
                         **queued)
    # .input, not .change: a refill (preset, History, a dropped PNG) sets both fields as they were saved.
    fields["mode"].input(inpaint_matches_input, fields["mode"], fields["match_input_size"],
                         api_name="ui_qwen_inpaint_size", **private)
    references.upload(gallery_paths_checked(guard, "Reference image", _paths), references, references,
                      api_name="ui_qwen_refs_check", preprocess=False, **queued)
    check_image_uploads(control_image, guard, "Control image", "ui_qwen_control_check")
    check_image_uploads(mask_file, guard, "Mask file", "ui_qwen_mask_file_check")
    return tab


def _size_of(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size
