"""The Qwen tab's handlers in process: a sketch or a mask file becomes the inpaint mask, refill works."""

import asyncio

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from diffbox.ui.lora_rows import NONE
from diffbox.ui.qwen_tab import build_qwen_tab


def handler(blocks, api_name):
    return next(f.fn for f in blocks.fns.values() if f.api_name == api_name)


def build(services):
    with gr.Blocks() as blocks:
        tab = build_qwen_tab(services)
    return blocks, tab


def test_a_sketch_inpaints_only_where_painted(services, shrink_qwen_condition_area, tmp_path):
    blocks, tab = build(services)
    source = Image.fromarray(np.random.default_rng(4).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    upload = services.settings.outputs_dir / "in.png"  # handlers open only uploads and outputs
    source.save(upload)
    stroke = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    stroke.paste((255, 255, 255, 255), (8, 8, 40, 40))
    editor = {"background": source, "layers": [stroke], "composite": source}

    preview = handler(blocks, "ui_qwen_mask_preview")(editor, None, False, 0)
    assert np.array_equal(np.asarray(preview) > 0, np.asarray(stroke.getchannel("A")) > 0)

    values = {**tab.services.specs["qwen_edit"].defaults(), "mode": "inpaint", "match_input_size": True,
              "num_inference_steps": 2, "strength": 1.0, "prompt": "a moon", "seed": 1}
    ordered = [values[name] for name in tab.names]

    async def collect():
        return [update async for update in handler(blocks, "ui_qwen_edit")(
            [(str(upload), None)], editor, None, None, *ordered, progress=None)]

    final = asyncio.run(collect())[-1]  # updates by component: the tab's parts name them
    gallery, status, metadata, running_job = (final[tab.parts[name]] for name in ("results", "status", "metadata",
                                                                                   "running_job"))
    assert running_job is None  # finished: Stop has nothing left to cancel
    assert "Done." in status and metadata["pipeline"] == "QwenImageEditInpaintPipeline"
    out = np.asarray(Image.open(gallery[0]).convert("RGB"))
    inside = np.asarray(stroke.getchannel("A")) > 0
    assert np.array_equal(out[~inside], np.asarray(source)[~inside])
    assert not np.array_equal(out[inside], np.asarray(source)[inside])


def test_fill_and_lora_rows(services):
    _, tab = build(services)
    saved = {"prompt": "moon", "mode": "inpaint", "width": 832, "strength": 0.5, "mask_feather": 3,
             "loras": [{"name": "demo/loras/qwen-lora.safetensors", "weight": 0.75}]}
    updates = dict(zip(map(id, tab.fill_outputs), tab.fill(saved)))
    for name in ("prompt", "mode", "width", "strength", "mask_feather"):
        assert updates[id(tab.fields[name])] == saved[name], name
    assert updates[id(tab.loras.state)] == saved["loras"]
    values = ["demo/loras/qwen-lora.safetensors", 0.75] + [NONE, 1] * (tab.loras.count - 1)
    assert tab.loras.to_list(*values) == saved["loras"]


def test_a_mask_file_previews_at_its_own_size_and_one_that_is_no_image_is_taken_out(services):
    blocks, _ = build(services)
    preview = handler(blocks, "ui_qwen_mask_preview")
    painted = Image.new("L", (40, 24), 0)
    painted.paste(255, (10, 4, 30, 20))
    mask = services.settings.outputs_dir / "mask.png"  # handlers open only uploads and outputs
    painted.save(mask)
    shown = preview(None, str(mask), False, 0)  # no reference yet: the mask is shown at its own size
    assert shown.size == (40, 24) and np.array_equal(np.asarray(shown), np.asarray(painted))

    notes = services.settings.outputs_dir / "notes.png"
    notes.write_text("not a picture")
    assert preview(None, str(notes), False, 0) is None  # the upload check below says why, once
    with pytest.warns(UserWarning, match="Mask file: is not a readable image") as caught:
        assert handler(blocks, "ui_qwen_mask_file_check")({"path": str(notes)}) is None
    assert str(services.settings.outputs_dir) not in str(caught[0].message)


def test_the_mask_preview_is_the_jobs_mask_cropped_to_the_output_size(services):
    """Not matching the picture's size, the job crops picture and mask to width × height: the preview shows
    exactly the mask the job composites with, not the uncropped one."""
    from diffbox.workflows import qwen_edit

    blocks, _ = build(services)
    picture, painted = Image.new("RGB", (80, 40), "gray"), Image.new("L", (80, 40), 0)
    painted.paste(255, (30, 0, 50, 40))
    paths = [services.settings.outputs_dir / name for name in ("wide.png", "wide-mask.png")]
    picture.save(paths[0])
    painted.save(paths[1])
    shown = handler(blocks, "ui_qwen_mask_preview")(None, str(paths[1]), False, 2, 32, 32, False)
    job = qwen_edit.prepare({"mode": "inpaint", "width": 32, "height": 32, "match_input_size": False,
                             "mask_feather": 2}, [str(paths[0])], str(paths[1]), spec=services.specs["qwen_edit"])
    assert shown.size == job.soft_mask.size == (32, 32)
    assert np.array_equal(np.asarray(shown), np.asarray(job.soft_mask))
    columns = np.asarray(shown).max(axis=0)
    assert columns[0] == 0 and columns[16] == 255 and columns[-1] == 0  # the middle stripe, scaled to 32 wide
