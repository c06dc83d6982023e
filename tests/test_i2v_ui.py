"""The I2V form refills from saved settings (History "Use these settings", a dropped output)."""

import gradio as gr

from diffbox.ui.lora_rows import NONE
from diffbox.ui.workflow_tab import build_workflow_tab
from diffbox.workflows.registry import WORKFLOWS


def build_i2v_tab(services):
    return build_workflow_tab(services, WORKFLOWS["i2v"])


def test_fill_puts_saved_params_into_the_right_components(services):
    with gr.Blocks():
        tab = build_i2v_tab(services)
    saved = {"prompt": "waves", "width": 480, "height": 832, "num_frames": 33, "seed": 99, "step_cache": "first_block",
             "loras": [{"name": "demo/loras/wan-lora-high.safetensors", "weight_high": 0.5, "weight_low": 0.0}]}
    updates = dict(zip(map(id, tab.fill_outputs), tab.fill(saved)))
    assert len(updates) == len(tab.fill_outputs)
    for name in ("prompt", "width", "height", "num_frames", "seed", "step_cache"):
        assert updates[id(tab.fields[name])] == saved[name], name
    first_row = tab.loras.rows[0]
    assert updates[id(first_row[0])].value == "demo/loras/wan-lora-high.safetensors"
    assert (updates[id(first_row[1])], updates[id(first_row[2])]) == (0.5, 0.0)
    assert all(updates[id(row[0])].value == NONE for row in tab.loras.rows[1:])
    assert updates[id(tab.loras.state)] == saved["loras"]


def test_lora_rows_read_back_as_the_loras_param(services):
    with gr.Blocks():
        tab = build_i2v_tab(services)
    values = ["demo/loras/wan-lora-low.safetensors", 0, 1.25] + [NONE, 1, 1] * (tab.loras.count - 1)
    assert tab.loras.to_list(*values) == [
        {"name": "demo/loras/wan-lora-low.safetensors", "weight_high": 0.0, "weight_low": 1.25}]
    assert services.specs["i2v"].validate({"loras": tab.loras.to_list(*values)})["loras"][0]["weight_low"] == 1.25


def test_a_dropped_output_refills_the_form_and_a_foreign_one_changes_nothing(services, tmp_path):
    import json

    from diffbox.ui.form import settings_file_loader

    with gr.Blocks():
        tab = build_i2v_tab(services)
    load = settings_file_loader("i2v", "image-to-video", tab.fill, len(tab.fill_outputs))
    ours, theirs = tmp_path / "meta.json", tmp_path / "other.json"
    ours.write_text(json.dumps({"workflow": "i2v", "params": {"prompt": "from a file", "num_frames": 17}}))
    theirs.write_text(json.dumps({"workflow": "qwen_edit", "params": {"prompt": "not for this tab"}}))
    updates = dict(zip(map(id, tab.fill_outputs), load(str(ours))))
    assert updates[id(tab.fields["prompt"])] == "from a file" and updates[id(tab.fields["num_frames"])] == 17
    skipped = load(str(theirs))
    assert len(skipped) == len(tab.fill_outputs) and all(u == gr.skip() for u in skipped)


def test_the_form_shows_as_many_lora_rows_as_the_spec_allows_and_refills_them_all(services):
    with gr.Blocks():
        tab = build_i2v_tab(services)
    limit = services.specs["i2v"]["loras"].max_items
    saved = [{"name": f"demo/loras/lora-{index}.safetensors", "weight_high": index / 10, "weight_low": 1.0}
             for index in range(limit)]
    assert len(tab.loras.rows) == limit > 4
    updates = dict(zip(map(id, tab.fill_outputs), tab.fill({"loras": saved})))
    assert [updates[id(row[0])].value for row in tab.loras.rows] == [entry["name"] for entry in saved]
    assert updates[id(tab.loras.state)] == saved
