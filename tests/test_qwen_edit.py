"""Qwen-Image-Edit in process on the tiny models: masks, inpaint compositing, ControlNet, LoRAs, bad input."""

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import running_services

from diffbox.params import InvalidParams
from diffbox.workflows import qwen_edit
from diffbox.workflows.masks import composite, editor_to_mask, finish_mask, load_mask
from diffbox.workflows.outputs import read_metadata

PROMPT = "Make the sky purple and add a full moon above the mountains."
FAST = {"num_inference_steps": 2, "seed": 5, "prompt": PROMPT, "width": 64, "height": 64}


def noise(size=(64, 48), seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def box_mask(size=(64, 48), box=(16, 8, 40, 32)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def layer(size, box, alpha=255) -> Image.Image:
    """An ImageEditor layer: transparent, with a white stroke inside `box`."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    image.paste((255, 255, 255, alpha), box)
    return image


def run(services, params, images=(), mask=None, control_image=None):
    job = services.submit_qwen_edit({**FAST, **params}, list(images), mask, control_image)
    finished = job.wait(120)
    assert finished.status == "done", finished.error
    return finished.result


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


# --- the ImageEditor value → mask (pure functions) -------------------------------------------


def test_two_layers_are_ored_and_eraser_holes_stay_holes():
    size = (40, 30)
    first = layer(size, (0, 0, 20, 30))
    first.paste((0, 0, 0, 0), (5, 5, 10, 10))  # the eraser makes pixels transparent again
    second = layer(size, (30, 10, 40, 20), alpha=40)  # a faint stroke still counts as painted
    mask = np.asarray(editor_to_mask({"background": Image.new("RGB", size), "layers": [first, second],
                                      "composite": None}))
    expected = np.zeros((30, 40), dtype=np.uint8)
    expected[:, :20] = 255
    expected[5:10, 5:10] = 0
    expected[10:20, 30:40] = 255
    assert np.array_equal(mask, expected)


def test_layers_of_another_size_are_stretched_with_nearest():
    small = layer((20, 15), (0, 0, 10, 15))  # painted on a half-size canvas: left half
    mask = np.asarray(editor_to_mask({"background": Image.new("RGB", (40, 30)), "layers": [small]}))
    assert mask.shape == (30, 40) and set(np.unique(mask)) == {0, 255}  # hard edges, no blending
    assert (mask[:, :20] == 255).all() and (mask[:, 20:] == 0).all()
    resized = editor_to_mask({"background": Image.new("RGB", (40, 30)), "layers": [small]}, size=(80, 60))
    assert resized.size == (80, 60) and np.asarray(resized)[:, :40].all()


def test_nothing_painted_is_no_mask_and_files_load_as_masks(tmp_path):
    empty = {"background": Image.new("RGB", (8, 8)), "layers": [Image.new("RGBA", (8, 8))]}
    assert editor_to_mask(empty) is None and editor_to_mask(None) is None
    layer((16, 16), (0, 0, 8, 16)).save(tmp_path / "brush.png")  # an exported layer: alpha is the mask
    box_mask((16, 16), (8, 0, 16, 16)).convert("RGB").save(tmp_path / "bw.png")
    assert np.asarray(load_mask(tmp_path / "brush.png", (16, 16)))[:, :8].all()
    assert not np.asarray(load_mask(tmp_path / "brush.png", (16, 16)))[:, 8:].any()
    assert np.asarray(load_mask(str(tmp_path / "bw.png"), (32, 32)))[:, 16:].all()


def test_invert_feather_and_composite():
    hard = box_mask((64, 64), (16, 16, 48, 48))
    assert np.array_equal(np.asarray(finish_mask(hard, invert=True)), 255 - np.asarray(hard))
    soft = np.asarray(finish_mask(hard, feather=6))
    assert 0 < soft[32, 15] < 255 and soft[32, 32] == 255 and soft[0, 0] == 0
    original, generated = noise((64, 64), 1), noise((64, 64), 2)
    out = np.asarray(composite(original, generated, Image.fromarray(soft)))
    untouched = soft == 0
    assert np.array_equal(out[untouched], np.asarray(original)[untouched])
    assert np.array_equal(out[soft == 255], np.asarray(generated)[soft == 255])


# --- the workflow on the tiny model ----------------------------------------------------------


def test_inpaint_keeps_pixels_outside_the_mask_and_changes_inside(services, shrink_qwen_condition_area):
    image, mask = noise(), box_mask()
    result = run(services, {"mode": "inpaint", "match_input_size": True, "strength": 1.0}, [image], mask)
    out, original = pixels(result.outputs[0]), np.asarray(image)
    inside = np.asarray(mask) > 0
    assert out.shape == original.shape
    assert np.array_equal(out[~inside], original[~inside])  # exact, even through a random VAE
    assert np.abs(out[inside].astype(int) - original[inside]).mean() > 10

    feathered = run(services, {"mode": "inpaint", "match_input_size": True, "mask_feather": 4}, [image], mask)
    soft = np.asarray(finish_mask(mask, feather=4))
    out = pixels(feathered.outputs[0])
    assert np.array_equal(out[soft == 0], original[soft == 0])
    assert (soft[~inside] > 0).any()  # the edge really reaches outside the hard mask

    raw = run(services, {"mode": "inpaint", "match_input_size": True, "keep_unmasked": False}, [image], mask)
    assert not np.array_equal(pixels(raw.outputs[0])[~inside], original[~inside])  # the VAE round trip shows


def test_inpaint_at_a_requested_size_and_with_a_sketch(services, shrink_qwen_condition_area):
    image = noise((64, 48))
    sketch = {"background": image, "layers": [layer((64, 48), (0, 0, 32, 48))], "composite": image}
    result = run(services, {"mode": "inpaint", "width": 96, "height": 32, "num_images": 2}, [image], sketch)
    assert len(result.outputs) == 2
    assert [Image.open(p).size for p in result.outputs] == [(96, 32), (96, 32)]


def test_one_model_serves_every_mode_and_png_keeps_the_recipe(services, shrink_qwen_condition_area):
    refs = [noise(seed=s) for s in range(3)]
    generated = run(services, {"mode": "generate", "num_images": 2, "width": 48, "height": 32})
    plus = run(services, {"mode": "edit"}, refs)
    single = run(services, {"mode": "edit"}, refs[:1])
    run(services, {"mode": "inpaint"}, refs[:1], box_mask())
    assert [Image.open(p).size for p in generated.outputs] == [(48, 32), (48, 32)]
    assert generated.metadata["pipeline"] == "QwenImagePipeline"
    assert plus.metadata["pipeline"] == "QwenImageEditPlusPipeline" and plus.metadata["references"] == 3
    assert single.metadata["pipeline"] == "QwenImageEditPipeline"
    assert len(services.cache.loaded()) == 1  # from_pipe views, never a second load
    saved = read_metadata(plus.outputs[0])
    assert saved["params"]["seed"] == 5 and saved["workflow"] == "qwen_edit"


def test_controlnet_changes_the_output(services, shrink_qwen_condition_area):
    params = {"mode": "generate"}
    plain = pixels(run(services, params).outputs[0])
    control = noise((64, 64), 9)
    guided = run(services, {**params, "controlnet": "demo/qwen-controlnet"}, control_image=control)
    assert guided.metadata["pipeline"] == "QwenImageControlNetPipeline"
    assert np.abs(pixels(guided.outputs[0]).astype(int) - plain).max() > 5


def test_lora_loads_and_unloads_cleanly(services, shrink_qwen_condition_area):
    refs = [noise()]
    lora = services.loras(qwen_edit.BASE_MODEL)[0].name
    base = pixels(run(services, {"mode": "edit"}, refs).outputs[0])
    styled = run(services, {"mode": "edit", "loras": [{"name": lora, "weight": 1.0}]}, refs)
    assert styled.metadata["loras"][0]["name"] == lora
    assert np.abs(pixels(styled.outputs[0]).astype(int) - base).max() > 5
    assert np.array_equal(pixels(run(services, {"mode": "edit"}, refs).outputs[0]), base)


# --- bad input -------------------------------------------------------------------------------


def refused(services, params, images=(), mask=None, control_image=None) -> dict:
    with pytest.raises(InvalidParams) as caught:
        services.submit_qwen_edit({**FAST, **params}, list(images), mask, control_image)
    return caught.value.errors


def test_bad_input_names_the_field(services, tmp_path):
    assert "at least one reference" in refused(services, {"mode": "edit"})["images"]
    assert "needs an image" in refused(services, {"mode": "generate"}, [], box_mask())["mask"]
    assert "all black" in refused(services, {"mode": "inpaint"}, [noise()], Image.new("L", (64, 48)))["mask"]
    assert "needs a mask" in refused(services, {"mode": "inpaint"}, [noise()])["mask"]
    assert "nothing is left" in refused(services, {"mode": "inpaint", "mask_invert": True}, [noise()],
                                        Image.new("L", (64, 48), 255))["mask"]
    (tmp_path / "notes.png").write_text("not an image")
    assert "not a readable image" in refused(services, {"mode": "edit"}, [noise(), tmp_path / "notes.png"])["images[1]"]
    assert "only generate mode" in refused(services, {"mode": "edit", "controlnet": "demo/qwen-controlnet"},
                                           [noise()])["controlnet"]
    assert "control image" in refused(services, {"mode": "generate", "controlnet": "demo/qwen-controlnet"})[
        "control_image"]
    assert "not in the library" in refused(services, {"mode": "generate", "controlnet": "nope"},
                                           control_image=noise())["controlnet"]
    assert "mode" in refused(services, {"mode": "outpaint"})
    # The model's scheduler divides by zero at one step (every pixel NaN): refused before any work.
    assert "at least 2" in refused(services, {"mode": "edit", "num_inference_steps": 1}, [noise()])["num_inference_steps"]


def test_one_step_runs_with_the_lightning_scheduler(services, shrink_qwen_condition_area):
    result = run(services, {"mode": "edit", "num_inference_steps": 1, "scheduler": "lightning"}, [noise()])
    assert pixels(result.outputs[0]).shape == (FAST["height"], FAST["width"], 3)
    assert result.metadata["params"]["scheduler"] == "lightning"


def test_cmyk_16bit_and_huge_images_are_converted_with_a_note(tmp_path):
    noise((40, 30)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray((np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50)).save(tmp_path / "deep.png")
    Image.new("RGB", (4100, 64), (200, 10, 10)).save(tmp_path / "wide.png")
    job = qwen_edit.prepare({**FAST, "mode": "edit"}, [tmp_path / "cmyk.jpg", tmp_path / "deep.png",
                                                        {"path": str(tmp_path / "wide.png")}])
    assert [image.mode for image in job.images] == ["RGB"] * 3
    assert job.images[2].size == (2048, 32)
    notes = " | ".join(job.notes)
    assert "images[0]: converted from CMYK" in notes and "images[1]: converted from I;16" in notes
    assert "images[2]: 4100×64 scaled down to 2048×32" in notes


def test_expert_options_run(services, shrink_qwen_condition_area):
    params = {"mode": "edit", "step_cache": "first_block", "vae_tiling": True, "dtype": "float32"}
    result = run(services, params, [noise()])
    assert result.metadata["params"]["step_cache"] == "first_block"
    assert Image.open(result.outputs[0]).size == (64, 64)


def test_generate_prefers_a_text_to_image_model_from_the_library(services, demo_home, demo_models,
                                                                 shrink_qwen_condition_area):
    from diffusers import QwenImagePipeline

    from diffbox.engine.loaders import load_pipeline

    edit = load_pipeline(demo_models["qwen-image-edit"])
    QwenImagePipeline.from_pipe(edit).save_pretrained(demo_home / "models" / "qwen-t2i")
    generated = run(services, {"mode": "generate"})
    assert generated.metadata["model"] == "qwen-t2i" and generated.metadata["pipeline"] == "QwenImagePipeline"
    edited = run(services, {"mode": "edit"}, [noise()])
    assert edited.metadata["model"] == "demo/qwen-image-edit"


# --- the recipes: Lightning's scheduler, 2509 through the Plus encoding ------------------------

# ModelTC/Qwen-Image-Lightning generate_with_diffusers.py, the scheduler the Lightning LoRAs were distilled with.
LIGHTNING_RECIPE = {"base_image_seq_len": 256, "base_shift": math.log(3), "invert_sigmas": False,
                    "max_image_seq_len": 8192, "max_shift": math.log(3), "num_train_timesteps": 1000, "shift": 1.0,
                    "shift_terminal": None, "stochastic_sampling": False, "time_shift_type": "exponential",
                    "use_beta_sigmas": False, "use_dynamic_shifting": True, "use_exponential_sigmas": False,
                    "use_karras_sigmas": False}


def test_the_fast_preset_runs_lightnings_scheduler_and_the_next_job_the_models_own(services, demo_models,
                                                                                   shrink_qwen_condition_area):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from diffbox.presets import load_shipped

    (preset,) = [p for p in load_shipped() if p["name"] == "Qwen edit fast"]
    assert preset["params"]["scheduler"] == "lightning" and preset["params"]["num_inference_steps"] == 8
    lora = services.loras(qwen_edit.BASE_MODEL)[0].name  # the demo stands in for the 2509 Lightning LoRA
    fast = run(services, {**preset["params"], "loras": [{"name": lora, "weight": 1.0}]}, [noise()])
    pipe = next(iter(services.cache._entries.values())).pipe  # one reference on this model: the pipe itself
    assert {k: pipe.scheduler.config[k] for k in LIGHTNING_RECIPE} == LIGHTNING_RECIPE
    sigmas = np.linspace(1.0, 1 / 8, 8)  # what the Qwen pipelines ask for; log-3 shifts are a fixed shift 3
    expected = [*(3 * sigmas / (1 + 2 * sigmas)), 0.0]
    np.testing.assert_allclose(pipe.scheduler.sigmas.numpy(), expected, rtol=1e-5)
    notes = " | ".join(services.history.get(fast.metadata["job_id"])["notes"])
    assert "lightning scheduler, timesteps: 1000, 954.5, 900, 833.3, 750, 642.9, 500, 300" in notes

    run(services, {"mode": "edit"}, [noise()])  # scheduler "model": the folder's own config again
    own = FlowMatchEulerDiscreteScheduler.load_config(demo_models["qwen-image-edit"] / "scheduler")
    assert {k: pipe.scheduler.config[k] for k in LIGHTNING_RECIPE} == {k: own[k] for k in LIGHTNING_RECIPE}
    assert own["max_shift"] != LIGHTNING_RECIPE["max_shift"]


@pytest.fixture
def plus_services(twin, demo_home):
    """Services whose library holds the Qwen-Image-Edit-2509 twin (model_index class QwenImageEditPlusPipeline)."""
    (demo_home / "models" / "qwen-2509").symlink_to(twin("qwen-image-edit-2509"))
    with running_services(demo_home) as started:
        yield started


def test_2509_edits_and_inpaints_with_the_plus_encoding(plus_services, monkeypatch):
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_inpaint as inpaint
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

    # Small stand-ins for the real areas (1024² to the VAE, Plus: 384² to the text encoder) that keep them apart.
    real = inpaint.calculate_dimensions
    monkeypatch.setattr(inpaint, "calculate_dimensions", lambda area, ratio: real(64 * 64, ratio))
    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", 64 * 64)
    monkeypatch.setattr(plus, "CONDITION_IMAGE_SIZE", 32 * 32)
    image, mask = noise((64, 64)), box_mask((64, 64))
    single = run(plus_services, {"model": "qwen-2509", "mode": "edit"}, [image])
    assert single.metadata["pipeline"] == "QwenImageEditPlusPipeline"  # one reference: still 2509's own class
    pipe = next(iter(plus_services.cache._entries.values())).pipe
    encoded = []
    processor_type = type(pipe.processor)
    real_call = processor_type.__call__

    def record(self, *args, text=None, images=None, **kwargs):
        listed = images if isinstance(images, list) else [images] if images is not None else []
        encoded.append((text[0], [i.size for i in listed]))
        return real_call(self, *args, text=text, images=images, **kwargs)

    monkeypatch.setattr(processor_type, "__call__", record)
    inpainted = run(plus_services, {"model": "qwen-2509", "mode": "inpaint", "match_input_size": True}, [image], mask)
    assert inpainted.metadata["pipeline"] == "QwenImageEditPlusInpaintPipeline"
    out, original, inside = pixels(inpainted.outputs[0]), np.asarray(image), np.asarray(mask) > 0
    assert np.array_equal(out[~inside], original[~inside]) and not np.array_equal(out[inside], original[inside])
    text, sizes = encoded[0]  # the prompt (then the " " negative prompt for CFG)
    assert "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>" + PROMPT in text
    assert sizes == [(32, 32)]  # Plus's condition area, not the 64×64 the VAE gets

    encoded.clear()  # the original Qwen-Image-Edit keeps its own (v1) encoding
    v1 = run(plus_services, {"mode": "inpaint", "match_input_size": True}, [image], mask)
    assert v1.metadata["pipeline"] == "QwenImageEditInpaintPipeline"
    text, sizes = encoded[0]
    assert "Picture 1:" not in text and "<|vision_start|><|image_pad|><|vision_end|>" + PROMPT in text
    assert sizes == [(64, 64)]


def test_inpaint_saves_its_mask_and_the_recipe_replays(services, shrink_qwen_condition_area):
    image = noise()
    sketch = {"background": image, "layers": [layer((64, 48), (8, 4, 40, 30))], "composite": image}
    params = {"mode": "inpaint", "match_input_size": True, "mask_invert": True, "mask_feather": 2}
    first = run(services, params, [image], sketch)
    outdir = Path(first.outputs[0]).parent
    recipe = read_metadata(first.outputs[0])
    assert recipe["mask"] == first.metadata["mask"] == "mask.png"
    assert read_metadata(outdir / "meta.json")["mask"] == "mask.png"
    saved = np.asarray(Image.open(outdir / recipe["mask"]))
    assert np.array_equal(saved, np.asarray(editor_to_mask(sketch)))  # as painted: the params redo the invert

    replayed = run(services, recipe["params"], [image], outdir / recipe["mask"])
    assert np.array_equal(pixels(replayed.outputs[0]), pixels(first.outputs[0]))
    assert "mask" not in run(services, {"mode": "edit"}, [image]).metadata
