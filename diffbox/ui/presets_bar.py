"""A presets bar for any workflow form: load, save, delete named presets, and save the form as defaults.

Reusable by every tab: build_presets_bar(services, workflow, fields, fill, fill_outputs), called
inside the layout block where the bar should appear, after the form exists. `fields` maps
parameter names to the form's components (their values become the preset's params); `fill`
turns a params dict into updates for `fill_outputs` (I2VTab.fill / fill_outputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gradio as gr
from gradio.context import Context

from diffbox import portable
from diffbox.config import PRESET_FIELDS, ConfigDoc, ConfigError, _Errors, clean_params
from diffbox.markup import code, md, plain
from diffbox.presets import PresetError, check
from diffbox.services import Services

SHIPPED_MARK = " (shipped)"


@dataclass
class PresetsBar:
    dropdown: gr.Dropdown
    name: gr.Textbox
    note: gr.Markdown


def labels(services: Services, workflow: str) -> list[str]:
    return [p["name"] + (SHIPPED_MARK if p.get("shipped") else "") for p in services.presets.list(workflow)]


def _name(label: str | None) -> str:
    return (label or "").removesuffix(SHIPPED_MARK).strip()


def _missing_models(services: Services, preset: dict) -> list[str]:
    downloads = services.downloads.list() if services.downloads is not None else []
    return [portable._label(m) for m in preset.get("models", [])
            if portable._model_state(m, services.library, downloads) == "download"]


def build_presets_bar(services: Services, workflow: str, fields: dict, fill: Callable[[dict], list],
                      fill_outputs: list) -> PresetsBar:
    names = list(fields)
    prefix = f"{workflow}-preset"
    with gr.Accordion("Presets", open=False, elem_id=f"{prefix}s"):
        with gr.Row():
            dropdown = gr.Dropdown(labels(services, workflow), value=None, label="Preset", scale=3,
                                   elem_id=f"{prefix}-choice")
            name = gr.Textbox(label="Save as", placeholder="a name for the current form", scale=2,
                              elem_id=f"{prefix}-name")
        with gr.Row():
            load = gr.Button("Load", size="sm", elem_id=f"{prefix}-load")
            save = gr.Button("Save", size="sm", elem_id=f"{prefix}-save")
            delete = gr.Button("Delete", size="sm", variant="stop", elem_id=f"{prefix}-delete")
            fetch = gr.Button("Download its models", size="sm", elem_id=f"{prefix}-fetch")
            as_defaults = gr.Button("Save form as my defaults", size="sm", elem_id=f"{prefix}-defaults")
        note = gr.Markdown(elem_id=f"{prefix}-note")

    def current(label):
        preset = services.presets.get(workflow, _name(label))
        if preset is None:
            raise gr.Error(plain(f"choose a preset first (there is no {workflow} preset {_name(label)!r})"),
                           title="No preset", print_exception=False)
        return preset

    def on_load(label):
        preset = current(label)
        try:
            checked, notes = check({k: v for k, v in preset.items() if k in PRESET_FIELDS}, services.specs)
        except ConfigError as exc:
            raise gr.Error(plain(f"preset {preset['name']!r} does not fit this diffbox: {exc}"), title="Preset refused",
                           print_exception=False)
        missing = _missing_models(services, checked)
        # A preset may come from someone else's config: its name, description and notes are shown as text.
        lines = [f"Loaded **{md(checked['name'])}**. {md(checked.get('description', ''))}".strip(),
                 *(md(note) for note in notes)]
        if missing:
            lines.append(f"It needs models that are not in the library: {', '.join(map(code, missing))} — "
                         "click *Download its models*.")
        return [*fill(checked["params"]), "\n\n".join(lines)]

    def on_save(preset_name, *values):
        params = dict(zip(names, values))
        try:
            preset, _ = check({"workflow": workflow, "name": preset_name, "params": params}, services.specs)
        except ConfigError as exc:
            raise gr.Error(plain(str(exc).removeprefix("config refused, nothing was applied: ")),
                           title="Preset not saved", print_exception=False) from None
        previous = services.presets.get(workflow, preset["name"])
        if previous and not previous.get("shipped"):
            preset["models"] = previous.get("models", [])  # re-saving keeps the models it pins
        services.presets.save(preset)
        label = preset["name"]
        return gr.Dropdown(choices=labels(services, workflow), value=label), f"Saved preset **{md(label)}**."

    def on_delete(label):
        try:
            services.presets.delete(workflow, _name(label))
        except PresetError as exc:
            raise gr.Error(plain(exc), title="Not deleted", print_exception=False) from None
        return gr.Dropdown(choices=labels(services, workflow), value=None), f"Deleted preset **{md(_name(label))}**."

    def on_fetch(label):
        preset = current(label)
        if not preset.get("models"):
            return "This preset pins no models."
        report = portable.apply(services, ConfigDoc(models=preset["models"]))
        return portable.summary(report) + ("\n\nProgress: Models → Downloads." if report["download_ids"] else "")

    def on_defaults(*values):
        spec, errors = services.specs[workflow], _Errors()
        clean = clean_params(dict(zip(names, values)), "form", workflow, services.specs, errors)
        if clean is None:
            raise gr.Error(plain(str(ConfigError(errors)).removeprefix("config refused, nothing was applied: ")),
                           title="Defaults not saved", print_exception=False)
        changed = {k: v for k, v in clean.items() if v != spec[k].default}
        if not changed:
            return "The form already matches the defaults."
        report = portable.apply(services, ConfigDoc(defaults={workflow: changed}))
        return portable.summary(report) + "\n\nNew jobs (and the API) use them now; they survive a restart."

    private = {"api_visibility": "private", "queue": False}
    load.click(on_load, dropdown, [*fill_outputs, note], api_name=f"ui_{workflow}_preset_load", **private)
    save.click(on_save, [name, *fields.values()], [dropdown, note], api_name=f"ui_{workflow}_preset_save", **private)
    delete.click(on_delete, dropdown, [dropdown, note], api_name=f"ui_{workflow}_preset_delete", **private)
    fetch.click(on_fetch, dropdown, note, api_name=f"ui_{workflow}_preset_fetch", **private)
    as_defaults.click(on_defaults, list(fields.values()), note, api_name=f"ui_{workflow}_preset_defaults",
                      **private)
    # A page load shows the defaults as they are now (an import or "save as defaults" since start),
    # and the presets list as it is now.
    if Context.root_block is not None:
        def on_page_load():
            saved = portable.read_preferences(services.settings.db_dir)["defaults"].get(workflow, {})
            return [*fill(saved), gr.Dropdown(choices=labels(services, workflow))]

        Context.root_block.load(on_page_load, None, [*fill_outputs, dropdown],
                                api_name=f"ui_{workflow}_presets_refresh", **private)
    return PresetsBar(dropdown, name, note)
