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
