"""Gradio components derived from a ParamSpec: basic fields shown, advanced and expert folded away."""

from __future__ import annotations

from typing import Any, Callable

import gradio as gr

from diffbox.params import Param, ParamSpec
from diffbox.workflows.outputs import read_metadata

TIER_TITLES = {"advanced": "Advanced", "expert": "Expert"}


def component_for(param: Param) -> gr.Component:
    common: dict[str, Any] = {"label": param.title, "info": param.help, "value": param.default,
                              "elem_id": f"param-{param.name}"}
    if param.kind == "text":
        return gr.Textbox(lines=3, max_lines=12, **common)
    if param.kind == "str":
        return gr.Textbox(lines=1, **common)
    if param.kind == "bool":
        return gr.Checkbox(**common)
    if param.kind == "choice":
        return gr.Dropdown(choices=list(param.choices or ()), **common)
    if param.kind == "seed":
        return gr.Number(precision=0, minimum=-1, **common)
    # A nullable number ("empty = the model's value") cannot be a slider: a slider has no empty state and
    # would silently send its minimum.
    if param.kind in ("int", "float") and param.minimum is not None and param.maximum is not None \
            and not param.nullable:
        step = param.step or (1 if param.kind == "int" else 0.01)
        return gr.Slider(minimum=param.minimum, maximum=param.maximum, step=step, **common)
    if param.kind in ("int", "float"):
        return gr.Number(precision=0 if param.kind == "int" else None, **common)
    return gr.JSON(label=param.title, value=param.default, elem_id=common["elem_id"])


def build_form(spec: ParamSpec, custom: dict[str, Callable[[Param], gr.Component]] | None = None,
               ) -> dict[str, gr.Component]:
    """Renders every parameter in place; `custom` replaces the component of a named parameter."""
    custom = custom or {}
    components: dict[str, gr.Component] = {}

    def render(params: list[Param]) -> None:
        for param in params:
            make = custom.get(param.name, component_for)
            components[param.name] = make(param)

    render(spec.tier("basic"))
    for tier in ("advanced", "expert"):
        params = spec.tier(tier)
        if params:
            with gr.Accordion(TIER_TITLES[tier], open=False):
                render(params)
    return components


def values_to_params(names: list[str], values: tuple) -> dict[str, Any]:
    return dict(zip(names, values))


def fill_components(fields: dict[str, gr.Component], loras) -> list[gr.Component]:
    """The components a saved-settings refill writes: every field, with the LoRA rows in place of `loras`."""
    plain = [component for name, component in fields.items() if name != "loras"]
    return [*plain, *loras.components, loras.state]


def fill_updates(fields: dict[str, gr.Component], loras, params: dict | None) -> list:
    """Updates matching fill_components(); a key the params lack keeps the form's current value."""
    params = params or {}
    updates = [params.get(name, gr.skip()) for name in fields if name != "loras"]
    return updates + loras.from_list(params.get("loras", []))


def size_preset_picker(presets: dict[str, tuple[int, int]]) -> Callable:
    """Handler for a size-preset dropdown: fills width and height; "custom" leaves them alone."""
    def pick(label):
        return presets[label] if label in presets else (gr.skip(), gr.skip())
    return pick


def settings_file_loader(workflow: str, title: str, fill: Callable[[dict], list], count: int) -> Callable:
    """Handler for "drop an output to reuse its settings": the recipe inside a diffbox mp4/png/meta.json."""
    def load(path):
        if not path:
            return [gr.skip()] * count
        saved = read_metadata(path)
        if not saved or saved.get("workflow") != workflow:
            gr.Warning(f"That file holds no diffbox {title} settings.")
            return [gr.skip()] * count
        gr.Info("Settings loaded from the file.")
        return fill(saved["params"])
    return load
