"""LoRA rows (library file + weight per expert) standing in for one `loras` list parameter: as many rows as
the parameter allows items, so whatever validates can be shown and refilled."""

from __future__ import annotations

from typing import Callable

import gradio as gr

from diffbox.params import Param

NONE = "(none)"


class LoraRows:
    """Renders `param.max_items` rows; `.state` holds the list value the handlers read, kept in sync."""

    def __init__(self, param: Param, choices: Callable[[], list[str]],
                 experts: tuple[str, ...] = ("weight_high", "weight_low"), elem_prefix: str = "lora"):
        self.count = param.max_items
        self.experts = experts
        self.choices = choices
        self.rows: list[tuple[gr.Dropdown, ...]] = []
        labels = {"weight_high": "High-noise weight", "weight_low": "Low-noise weight", "weight": "Weight"}
        with gr.Accordion("LoRAs", open=False, elem_id=f"{elem_prefix}-rows"):
            if "weight_high" in experts:  # Wan's two experts; a one-transformer model has one weight
                gr.Markdown("Weights apply per Wan expert: high-noise (layout, motion) and low-noise (detail). "
                            "0 leaves that expert untouched.")
            for index in range(self.count):
                with gr.Row(equal_height=True):
                    name = gr.Dropdown([NONE, *choices()], value=NONE, label=f"LoRA {index + 1}", scale=3,
                                       elem_id=f"{elem_prefix}-name-{index}")
                    # No Gradio minimum/maximum: its refusal would not say which box; the spec's does.
                    weights = [gr.Number(value=1.0, label=labels[e], step=0.05, scale=1,
                                         elem_id=f"{elem_prefix}-{e}-{index}") for e in experts]
                self.rows.append((name, *weights))
        self.state = gr.State([])
        components = self.components
        for component in components:
            component.change(self.to_list, components, self.state, queue=False, api_visibility="private",
                             show_progress="hidden")

    @property
    def components(self) -> list[gr.Component]:
        return [c for row in self.rows for c in row]

    def to_list(self, *values) -> list[dict]:
        width = 1 + len(self.experts)
        entries = []
        for start in range(0, len(values), width):
            name, *weights = values[start:start + width]
            if name and name != NONE:
                entries.append({"name": name, **{e: float(w or 0) for e, w in zip(self.experts, weights)}})
        return entries

    def from_list(self, entries: list[dict] | None) -> list:
        """Updates for every row component (then the state), filling rows from a saved list."""
        entries = list(entries or [])[:self.count]  # the spec allows no more
        updates = []
        for index in range(self.count):
            entry = entries[index] if index < len(entries) else {}
            name = entry.get("name", NONE)
            updates.append(gr.Dropdown(choices=[NONE, *self.choices(), *([name] if name != NONE else [])],
                                       value=name))
            updates.extend(entry.get(e, 1.0) for e in self.experts)
        return updates + [entries]

    def refresh(self) -> list:
        return [gr.Dropdown(choices=[NONE, *self.choices()]) for _ in self.rows]
