"""Models → Library → Variants: every variant (a diffusers base with its denoisers from single files) as one
model, and a form to make one from files already in the library — an fp8 or GGUF expert pair copied in by
hand, or downloaded one by one. The pod plan records its own variants (diffbox/hub/pod_setup.py); both kinds
are offered by the workflows' model pickers once ready and travel in the portable config.
"""

from __future__ import annotations

import gradio as gr

from diffbox.hub.library import LocalModel
from diffbox.hub.variants import Ref
from diffbox.markup import code, md, plain
from diffbox.services import Services

COLUMNS = ["variant", "base model", "base", "parts", "ready"]
# Base models whose pipelines take their denoisers from single files (loaders.ModelSource).
VARIANT_BASES = ("wan2.2-i2v", "qwen-edit", "qwen-image")
PARTS = {"transformer": "transformer (Wan: high-noise expert; Qwen: the transformer)",
         "transformer_2": "transformer_2 (Wan: low-noise expert; empty for Qwen)"}
PRIVATE = {"api_visibility": "private", "queue": False}


def ref_for(model: LocalModel) -> Ref:
    """How a variant names a library model: by where it came from (so a config rebuilds it on a fresh pod),
    or by its library name when it was copied in by hand."""
    if model.source == "local" or not model.model_id:
        return Ref("local", model.name)
    return Ref(model.source, model.model_id, "" if model.kind == "diffusers" else model.files[0].name)


def variant_rows(services: Services) -> list[list]:
    rows = []
    for variant in services.hub.library.variants():
        parts = "; ".join(f"{component}: {ref.file or ref.id}" for component, ref in sorted(variant.parts.items()))
        base = variant.base.id + (f"/{variant.base.file}" if variant.base.file else "")
        ready = "yes" if variant.ready else "missing " + ", ".join(variant.missing)
        rows.append([variant.name, variant.base_model, base, parts, ready])
    return rows


def bases(services: Services) -> list[str]:
    return [m.name for m in services.hub.library.models() if m.kind == "diffusers" and m.base_model in VARIANT_BASES]


def single_files(services: Services) -> list[str]:
    return [m.name for m in services.hub.library.models() if m.kind == "checkpoint" and m.path.is_file()]


def save_variant(services: Services, name: str, base_name: str, parts: dict[str, str]) -> str:
    """Records a variant from library names; ValueError naming the field when something does not fit."""
    library = services.hub.library
    base = library.get(base_name) if base_name else None
    if base is None or base.kind != "diffusers":
        raise ValueError("base: choose a diffusers folder from the library")
    chosen = {component: value for component, value in parts.items() if value}
    if not chosen:
        raise ValueError("parts: choose at least one single file (the transformer, and for Wan the low-noise "
                         "expert too)")
    refs = {}
    for component, value in chosen.items():
        model = library.get(value)
        if model is None or not model.path.is_file():
            raise ValueError(f"{component}: {value!r} is not a single file in the library")
        refs[component] = ref_for(model)
    if base.base_model == "wan2.2-i2v" and set(refs) != {"transformer", "transformer_2"}:
        raise ValueError("parts: a Wan 2.2 A14B variant needs both experts, transformer (high noise) and "
                         "transformer_2 (low noise)")
    variant = library.variant_records.add(name, base.base_model, ref_for(base), refs)
    return variant.name


def build_variants_panel(services: Services) -> None:
    gr.Markdown("#### Variants\nA *variant* is one diffusers base (text encoder, VAE, configs) with its denoisers "
                "taken from single files: 16-bit, fp8 or GGUF experts that fit a smaller GPU. The model pickers "
                "offer it by its name once every file is here; the portable config carries it.")
    table = gr.Dataframe(headers=COLUMNS, value=lambda: variant_rows(services), interactive=False, wrap=True,
                         elem_id="hub-variants")
    with gr.Row():
        name = gr.Textbox(label="Variant name", placeholder="e.g. Wan2.2-I2V-A14B · fp8 (mine)", scale=2,
                          elem_id="hub-variant-name")
        base = gr.Dropdown(label="Base (diffusers folder)", choices=bases(services), scale=2,
                           elem_id="hub-variant-base")
    with gr.Row():
        pickers = {component: gr.Dropdown(label=label, choices=["", *single_files(services)], value="", scale=2,
                                          elem_id=f"hub-variant-{component}")
                   for component, label in PARTS.items()}
    with gr.Row():
        save = gr.Button("Save variant", variant="primary", elem_id="hub-variant-save")
        remove = gr.Button("Remove variant (by name)", elem_id="hub-variant-remove")
        reload = gr.Button("Refresh lists", elem_id="hub-variant-refresh")
    message = gr.Markdown(elem_id="hub-variant-message")

    def on_save(variant_name, base_name, *files):
        try:
            saved = save_variant(services, variant_name, base_name, dict(zip(PARTS, files)))
        except ValueError as exc:
            raise gr.Error(plain(exc), title="Variant not saved", print_exception=False) from None
        return variant_rows(services), f"Saved variant **{md(saved)}**: pick it in the forms' model list."

    def on_remove(variant_name):
        if not services.hub.library.variant_records.remove(str(variant_name or "").strip()):
            raise gr.Error(plain(f"variant name: there is no variant {str(variant_name)[:80]!r}"),
                           title="Nothing removed", print_exception=False)
        return variant_rows(services), f"Removed variant {code(variant_name)} (its files stay in the library)."

    def on_reload():
        files = ["", *single_files(services)]
        return (variant_rows(services), gr.Dropdown(choices=bases(services)),
                *(gr.Dropdown(choices=files) for _ in PARTS))

    save.click(on_save, [name, base, *pickers.values()], [table, message], api_name="ui_hub_variant_save", **PRIVATE)
    remove.click(on_remove, name, [table, message], api_name="ui_hub_variant_remove", **PRIVATE)
    reload.click(on_reload, None, [table, base, *pickers.values()], api_name="ui_hub_variant_refresh", **PRIVATE)
