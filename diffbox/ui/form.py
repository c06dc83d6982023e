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
    if param.kind == "choice" or (param.kind == "int" and param.choices):
        return gr.Dropdown(choices=list(param.choices or ()), **common)
    if param.kind in ("int", "float") and param.nullable:
        # Gradio 6.31's Number turns an empty value into 0 as soon as it is drawn (its frontend sets
        # `value ??= 0`, placeholder or not), so "empty = the model's value" would silently become 0 the
        # moment its accordion opens. A one-line text box keeps empty as empty; the spec parses the number.
        return gr.Textbox(lines=1, max_lines=1, placeholder="empty = the model's own value",
                          **{**common, "value": shown_value(param.default, nullable=True)})
    if param.kind in ("int", "float", "seed"):
        # A plain Number, not a Slider and without Gradio's minimum/maximum/precision: a slider clamps a
        # typed 0 to its minimum, Gradio's bounds answer "Value 0 is less than minimum value 1." without
        # naming the field, and precision=0 rounds 1.5 to 2, all silently or half-said. The spec's own
        # check names the field and its range; the range is shown beside the help up front.
        step = param.step or (1 if param.kind in ("int", "seed") else 0.01)
        return gr.Number(step=step, **{**common, "info": _with_range(param)})
    return gr.JSON(label=param.title, value=param.default, elem_id=common["elem_id"])


def _with_range(param: Param) -> str:
    low, high = param.minimum, param.maximum
    if low is not None and high is not None:
        return f"{param.help} ({_number(low)} to {_number(high)})"
    if low is not None:
        return f"{param.help} (at least {_number(low)})"
    if high is not None:
        return f"{param.help} (at most {_number(high)})"
    return param.help


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def shown_value(value: Any, nullable: bool) -> Any:
    """What a nullable number's text box shows: "" for None (the model's value), else the number."""
    if not nullable:
        return value
    if value is None:
        return ""
    return _number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


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
    """The components a saved-settings refill writes: every field, with the LoRA rows (if any) in place of `loras`."""
    plain = [component for name, component in fields.items() if name != "loras"]
    return [*plain, *loras.components, loras.state] if loras else plain


def fill_updates(fields: dict[str, gr.Component], loras, params: dict | None) -> list:
    """Updates matching fill_components(); a key the params lack keeps the form's current value."""
    params = params or {}
    updates = [_for_component(component, params[name]) if name in params else gr.skip()
               for name, component in fields.items() if name != "loras"]
    return updates + loras.from_list(params.get("loras", [])) if loras else updates


def _for_component(component: gr.Component, value: Any) -> Any:
    # A nullable number lives in a text box (component_for says why): None is shown as an empty box.
    return shown_value(value, nullable=True) if isinstance(component, gr.Textbox) else value


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
