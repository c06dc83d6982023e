"""The Qwen-Image-Edit tab's own widgets, hooked into the generic workflow tab: references in order, a
sketched (or uploaded) mask with a preview of the mask the job will use, results that chain into the next edit."""

from __future__ import annotations

import gradio as gr

from diffbox.services import Services
from diffbox.ui.form import component_for
from diffbox.ui.image_checks import check_image_uploads, gallery_paths_checked, image_problem
from diffbox.ui.jobs import public_message
from diffbox.ui.uploads import UploadGuard
from diffbox.ui.workflow_tab import TabHooks, WorkflowTab, build_workflow_tab
from diffbox.workflows import qwen_edit
from diffbox.workflows.masks import editor_to_mask, resolve_mask

NO_CONTROLNET = ""


class QwenTab(WorkflowTab):
    """The generic tab's form and refresh, plus the ControlNet picker's."""

    def refresh_choices(self) -> list:
        return [*super().refresh_choices(), gr.Dropdown(choices=controlnet_names(self.services))]

    @property
    def refresh_outputs(self) -> list:
        return [*super().refresh_outputs, self.fields["controlnet"]]


def controlnet_names(services: Services) -> list[str]:
    return [NO_CONTROLNET, *(m.name for m in services.qwen_controlnets())]


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


def qwen_hooks(services: Services) -> TabHooks:
    spec = services.specs["qwen_edit"]
    guard = UploadGuard(services.settings.outputs_dir)

    def inputs(parts):
        parts["references"] = gr.Gallery(label="Reference images, in order (picture 1, 2, …)", type="filepath",
                                         interactive=True, columns=4, height=220, format="png", elem_id="qwen-images")
        parts["selected_ref"] = gr.State(None)
        with gr.Row():
            parts["remove_ref"] = gr.Button("Remove selected", size="sm", elem_id="qwen-remove-image")
            parts["clear_refs"] = gr.Button("Remove all", size="sm", elem_id="qwen-clear-images")
        with gr.Accordion("Mask (inpaint mode): paint the area to repaint", open=False, elem_id="qwen-mask"):
            parts["editor"] = gr.ImageEditor(
                label="Paint over the first image (white = repaint)", type="pil", image_mode="RGBA", sources=(),
                elem_id="qwen-mask-editor", height=360, brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                eraser=gr.Eraser(), layers=gr.LayerOptions(allow_additional_layers=True), format="png")
            with gr.Row():
                parts["invert"] = component_for(spec["mask_invert"])
                parts["feather"] = component_for(spec["mask_feather"])
            with gr.Row():
                parts["clear_mask"] = gr.Button("Clear mask", size="sm", elem_id="qwen-clear-mask")
            parts["mask_file"] = gr.File(label="…or upload a mask file (white = repaint)", file_types=["image"],
                                         type="filepath", elem_id="qwen-mask-file", height=90)
            parts["mask_preview"] = gr.Image(label="Mask as it will be used", format="png", interactive=False,
                                             height=160, elem_id="qwen-mask-preview")
        with gr.Accordion("Control image (generate mode with a ControlNet)", open=False):
            parts["control_image"] = gr.Image(label="Control image", type="filepath", sources=["upload", "clipboard"],
                                              elem_id="qwen-control-image", height=200)
        return [parts["references"], parts["editor"], parts["mask_file"], parts["control_image"]]

    def uploads(values, params):
        gallery, editor_value, file_path, control_path = values
        mask = chosen_mask(editor_value, file_path) if params.get("mode") == "inpaint" else None
        return {"images": _paths(gallery), "mask": mask, "control_image": control_path}

    def form(parts):
        def controlnet_dropdown(param):
            return gr.Dropdown(choices=controlnet_names(services), value=NO_CONTROLNET, label="ControlNet",
                               info=param.help, elem_id="qwen-controlnet")
        return {"controlnet": controlnet_dropdown, "mask_invert": lambda param: parts["invert"],
                "mask_feather": lambda param: parts["feather"]}

    def under_buttons(parts):
        parts["selected_result"] = gr.State(None)
        parts["send"] = gr.Button("Use selected result as the input (chain edits)", elem_id="qwen-send-to-input")

    def preview_mask(editor_value, file_path, invert_value, feather_value, width=None, height=None, match=True):
        """What the job will use, through the job's own resolve_mask: the sketch if anything is painted, else
        the uploaded file, inverted, cropped to the output size as the picture will be, and feathered."""
        try:
            painted = editor_to_mask(editor_value)  # at the picture's size
            if painted is not None:
                value, source = editor_value, painted.size
            elif file_path:
                if image_problem(guard, file_path, "Mask file"):
                    return None  # its upload check takes the file out and says why
                value = guard.file(file_path, "mask")
                background = (editor_value or {}).get("background")
                source = background.size if background is not None else _size_of(value)
            else:
                return None
            out = source if match or not (width and height) else (int(width), int(height))
            return resolve_mask(value, source, out, bool(invert_value), int(feather_value or 0))[2]
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

    def wire(tab, parts):
        fields, references, editor = tab.fields, parts["references"], parts["editor"]
        private = {"api_visibility": "private", "queue": False}
        # Events that may answer with gr.Info/gr.Warning are queued: Gradio drops them from unqueued ones.
        queued = {"api_visibility": "private", "queue": True, "show_progress": "hidden"}
        references.change(references_changed, references, [editor, parts["selected_ref"]], api_name="ui_qwen_refs",
                          **private)
        references.select(remember, None, parts["selected_ref"], api_name="ui_qwen_ref_select", **private)
        parts["remove_ref"].click(remove_selected, [references, parts["selected_ref"]],
                                  [references, parts["selected_ref"]], api_name="ui_qwen_remove_ref", **private)
        parts["clear_refs"].click(lambda: ([], None), None, [references, parts["selected_ref"]],
                                  api_name="ui_qwen_clear_refs", **private)
        sizing = [fields["width"], fields["height"], fields["match_input_size"]]
        mask_inputs = [editor, parts["mask_file"], parts["invert"], parts["feather"], *sizing]
        # A brush stroke fires the editor's input/apply, not change (seen in Chromium with Gradio 6.31).
        mask_events = [editor.change, editor.input, editor.apply,
                       *(component.change for component in mask_inputs[1:])]
        gr.on(mask_events, preview_mask, mask_inputs, parts["mask_preview"], api_name="ui_qwen_mask_preview",
              **queued)
        parts["clear_mask"].click(lambda gallery: (_editor_over((_paths(gallery) or [None])[0]), None), references,
                                  [editor, parts["mask_file"]], api_name="ui_qwen_clear_mask", **private)
        parts["results"].select(remember, None, parts["selected_result"], api_name="ui_qwen_result_select",
                                **private)
        parts["send"].click(send_to_input, [parts["results"], parts["selected_result"]], references,
                            api_name="ui_qwen_send", **queued)
        # .input, not .change: a refill (preset, History, a dropped PNG) sets both fields as they were saved.
        fields["mode"].input(inpaint_matches_input, fields["mode"], fields["match_input_size"],
                             api_name="ui_qwen_inpaint_size", **private)
        references.upload(gallery_paths_checked(guard, "Reference image", _paths), references, references,
                          api_name="ui_qwen_refs_check", preprocess=False, **queued)
        check_image_uploads(parts["control_image"], guard, "Control image", "ui_qwen_control_check")
        check_image_uploads(parts["mask_file"], guard, "Mask file", "ui_qwen_mask_file_check")

    return TabHooks(elem_prefix="qwen", inputs=inputs, uploads=uploads, form=form, under_buttons=under_buttons,
                    wire=wire, tab_class=QwenTab)


def build_qwen_tab(services: Services) -> QwenTab:
    return build_workflow_tab(services, qwen_edit.WORKFLOW, qwen_hooks(services))


def chosen_mask(editor_value, file_path):
    """The sketch if anything is painted on it, else the uploaded mask file."""
    return editor_value if editor_to_mask(editor_value) is not None else (file_path or None)


def _size_of(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size
