"""Presets: the store (user and shipped), and the presets bar's events as the I2V tab wires them."""

import gradio as gr
import pytest

from diffbox import portable
from diffbox.config import ConfigError
from diffbox.presets import PresetError, PresetStore, check, load_shipped


def test_store_saves_shadows_and_refuses_to_delete_shipped(tmp_path):
    shipped = load_shipped()
    store = PresetStore(tmp_path / "presets.json", shipped)
    names = [p["name"] for p in store.list("i2v")]
    assert "Lightning 4-step" in names and all(p.get("shipped") for p in store.list("i2v"))
    with pytest.raises(PresetError, match="ships with diffbox"):
        store.delete("i2v", "Lightning 4-step")
    store.save({"workflow": "i2v", "name": "lightning 4-STEP", "params": {"num_inference_steps": 6}})
    mine = store.get("i2v", "Lightning 4-step")
    assert not mine.get("shipped") and mine["params"] == {"num_inference_steps": 6}  # shadows the shipped one
    assert [p["name"] for p in store.list("i2v")].count("Lightning 4-step") == 0
    store.delete("i2v", "lightning 4-step")
    assert store.get("i2v", "Lightning 4-step")["shipped"]
    store.close()
    with pytest.raises(ConfigError, match=r"preset\.params\.num_frames: must be 4n\+1"):
        from diffbox.services import WORKFLOW_SPECS
        check({"workflow": "i2v", "name": "x", "params": {"num_frames": 8}}, WORKFLOW_SPECS)


def test_a_preset_for_a_workflow_not_registered_is_kept_as_it_is():
    preset, notes = check({"workflow": "future_flow", "name": "Later", "params": {"knob": [1, 2]}}, {})
    assert preset["params"] == {"knob": [1, 2]} and "no future_flow workflow yet" in notes[0]


def event(app: gr.Blocks, api_name: str):
    return next(f for f in app.fns.values() if f.api_name == api_name)


def test_presets_bar_saves_loads_deletes_and_sets_defaults(services):
    from diffbox.ui.app import build_app

    app = build_app(services)
    save, load = event(app, "ui_i2v_preset_save"), event(app, "ui_i2v_preset_load")
    form = [c for c in save.inputs[1:]]
    values = [c.value for c in form]
    steps_at = next(i for i, c in enumerate(form) if getattr(c, "elem_id", "") == "param-num_inference_steps")
    values[steps_at] = 5
    dropdown, note = save.fn("My quick one", *values)
    assert dropdown.value == "My quick one" and "Saved" in note
    assert services.presets.get("i2v", "My quick one")["params"]["num_inference_steps"] == 5
    with pytest.raises(gr.Error, match="must not contain /"):
        save.fn("a/b", *values)

    updates = load.fn("My quick one")
    assert len(updates) == len(load.outputs)
    steps_out = next(i for i, c in enumerate(load.outputs) if getattr(c, "elem_id", "") == "param-num_inference_steps")
    assert updates[steps_out] == 5
    updates = load.fn("Lightning 4-step (shipped)")
    assert "not in the library" in updates[-1] and "lightx2v/Wan2.2-Lightning" in updates[-1]

    defaults = event(app, "ui_i2v_preset_defaults")
    assert "1 change" in defaults.fn(*values) and services.specs["i2v"]["num_inference_steps"].default == 5
    assert portable.read_preferences(services.settings.db_dir)["defaults"]["i2v"] == {"num_inference_steps": 5}
    assert "already matches" in defaults.fn(*values)

    dropdown, note = event(app, "ui_i2v_preset_delete").fn("My quick one")
    assert services.presets.get("i2v", "My quick one") is None and "Deleted" in note


def test_the_start_tab_preference_is_saved_exported_and_opened_on_load(services):
    from diffbox.ui.app import build_app

    app = build_app(services)
    event(app, "ui_config_start_tab").fn("models")
    assert portable.export_document(services)["ui"] == {"start_tab": "models"}
    assert event(app, "ui_open_start_tab").fn().selected == "models"


# The published files each shipped preset stands on (repo, path in the repo), as listed on the hub.
PUBLISHED = {
    "Lightning 4-step": ("lightx2v/Wan2.2-Lightning", {
        "Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1/high_noise_model.safetensors",
        "Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1/low_noise_model.safetensors"}),
    "SVI 2.0 Pro official": ("vita-video-gen/svi-model", {
        "version-2.0/SVI_Wan2.2-I2V-A14B_high_noise_lora_v2.0_pro.safetensors",
        "version-2.0/SVI_Wan2.2-I2V-A14B_low_noise_lora_v2.0_pro.safetensors"}),
    # made for 2509 (the recommended model), in bf16; not the one distilled from the original Qwen-Image-Edit
    "Qwen edit fast": ("lightx2v/Qwen-Image-Lightning", {
        "Qwen-Image-Edit-2509/Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors"}),
}
# What each preset claiming a recipe must set explicitly (a form default may differ from the recipe).
RECIPES = {
    "Wan 2.2 quality 40 steps": {"num_inference_steps": 40, "scheduler": "unipc", "flow_shift": 5.0,
                                 "boundary_ratio": 0.9, "guidance_scale": 3.5, "guidance_scale_2": 3.5},
    "Lightning 4-step": {"num_inference_steps": 4, "scheduler": "euler", "flow_shift": 5.0, "boundary_ratio": 0.9,
                         "guidance_scale": 1.0, "guidance_scale_2": 1.0},
    "Qwen edit fast": {"num_inference_steps": 8, "true_cfg_scale": 1.0, "scheduler": "lightning"},
}


def test_shipped_presets_pin_the_published_files_and_use_what_they_pin():
    shipped = {p["name"]: p for p in load_shipped()}
    for name, (repo, files) in PUBLISHED.items():
        (model,) = shipped[name]["models"]
        assert model["source"] == "hf" and model["id"] == repo and {f["name"] for f in model["files"]} == files
        params = shipped[name]["params"]
        used = [e["name"] for e in params.get("loras", [])] + [params[k] for k in ("svi_lora_high", "svi_lora_low")
                                                               if k in params]
        # a downloaded LoRA lands in models/loras/<its file name>: that is the name the preset must use
        assert sorted(used) == sorted(f"loras/{f.rsplit('/', 1)[-1]}" for f in files)
    for name, recipe in RECIPES.items():
        assert {k: shipped[name]["params"].get(k) for k in recipe} == recipe, name
