"""The Config tab's import preview, through the app's own event handlers (the browser flow is in
test_browser.py)."""

import json
import shutil
import tempfile
from pathlib import Path

import gradio as gr


def event(app: gr.Blocks, api_name: str):
    return next(f for f in app.fns.values() if f.api_name == api_name)


def test_a_refused_file_says_so_once_and_a_new_upload_forgets_the_last_preview(services):
    from gradio.utils import get_upload_folder

    from diffbox.ui.app import build_app

    app = build_app(services)
    tmp_path = Path(tempfile.mkdtemp(dir=get_upload_folder()))  # where an upload lands
    preview, forget = event(app, "ui_config_preview"), event(app, "ui_config_forget")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"version": 1, "defaults": {"i2v": {"num_inference_steps": 5}}}))
    text, apply_button, kept = preview.fn(str(good))
    assert "1 change" in text and apply_button.interactive and kept == str(good)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "colour": "red"}))
    text, apply_button, kept = preview.fn(str(bad))
    assert text.lower().count("refused") == 1 and text.count("nothing") == 1, text
    assert "colour" in text and not apply_button.interactive and kept is None

    # Gradio refuses a file of another type before the preview handler runs; the click that opens the
    # file chooser already cleared the last preview, the Apply button and the file it would apply.
    upload = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "config-upload")
    assert (upload._id, "click") in [tuple(target) for target in forget.targets]
    outputs = [getattr(c, "elem_id", None) for c in forget.outputs]
    assert outputs[:2] == ["config-preview", "config-apply"]
    text, apply_button, kept = forget.fn()
    assert text == "" and not apply_button.interactive and kept is None
    shutil.rmtree(tmp_path)
