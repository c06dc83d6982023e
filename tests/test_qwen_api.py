"""`/qwen_edit` on `python app.py --demo`, driven with gradio_client as a script would."""

import json

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from test_app import app_env, start_app

from conftest import make_demo_home

PROMPT = "Replace the text on the sign with the words OPEN 24 HOURS in bold white letters."
FAST = {"num_inference_steps": 2, "seed": 3, "prompt": PROMPT}


@pytest.fixture(scope="module")
def qwen_app(tmp_path_factory, demo_models):
    home = make_demo_home(tmp_path_factory.mktemp("qwen-app"), demo_models)
    process, url, _ = start_app(home, env=app_env())
    yield Client(url, verbose=False)
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen-inputs")
    rng = np.random.default_rng(1)
    paths = {}
    for index in range(3):
        paths[f"ref{index}"] = folder / f"ref{index}.png"
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(paths[f"ref{index}"])
    mask = Image.new("L", (56, 40), 0)
    mask.paste(255, (8, 8, 32, 24))
    paths["mask"] = folder / "mask.png"
    mask.save(paths["mask"])
    paths["text"] = folder / "notes.png"
    paths["text"].write_text("not an image at all")
    return paths


def call(client, params, images=(), mask=None):
    return client.predict({**FAST, **params}, [handle_file(str(p)) for p in images],
                          handle_file(str(mask)) if mask else None, api_name="/qwen_edit")


def decoded(paths) -> list[Image.Image]:
    images = []
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG"
            image.load()
            images.append(image.convert("RGB"))
    return images


def test_every_mode_returns_pngs_of_the_asked_count_and_size(qwen_app, files):
    outputs, meta = call(qwen_app, {"mode": "generate", "num_images": 3, "width": 48, "height": 32})
    assert meta["pipeline"] == "QwenImagePipeline"
    assert [image.size for image in decoded(outputs)] == [(48, 32)] * 3

    outputs, meta = call(qwen_app, {"mode": "edit", "width": 64, "height": 48}, [files["ref0"]])
    assert meta["pipeline"] == "QwenImageEditPipeline"
    assert [image.size for image in decoded(outputs)] == [(64, 48)]

    outputs, meta = call(qwen_app, {"mode": "edit", "num_images": 2, "match_input_size": True},
                         [files["ref0"], files["ref1"], files["ref2"]])
    assert meta["pipeline"] == "QwenImageEditPlusPipeline" and meta["references"] == 3
    assert [image.size for image in decoded(outputs)] == [(56, 40)] * 2
    with Image.open(outputs[0]) as image:
        assert json.loads(image.text["diffbox"])["params"]["seed"] == 3  # the recipe travels in the PNG


def test_inpaint_honours_the_mask(qwen_app, files):
    outputs, meta = call(qwen_app, {"mode": "inpaint", "match_input_size": True, "strength": 1.0},
                         [files["ref0"]], files["mask"])
    assert meta["pipeline"] == "QwenImageEditInpaintPipeline"
    out = np.asarray(decoded(outputs)[0])
    original = np.asarray(Image.open(files["ref0"]).convert("RGB"))
    inside = np.asarray(Image.open(files["mask"])) > 0
    assert np.array_equal(out[~inside], original[~inside])
    assert np.abs(out[inside].astype(int) - original[inside]).mean() > 10


@pytest.mark.parametrize("params, images, mask, field, words", [
    ({"mode": "edit"}, [], None, "images", "at least one reference image"),
    ({"mode": "generate"}, [], "mask", "mask", "needs an image"),
    ({"mode": "inpaint"}, ["ref0"], "ref0", "mask", "all black"),  # a noise image is mostly not white
    ({"mode": "edit"}, ["text"], None, "images[0]", "not a readable image"),
    ({"mode": "edit", "num_images": 9}, ["ref0"], None, "num_images", "between 1 and 4"),
])
def test_bad_input_is_a_clear_message(qwen_app, files, params, images, mask, field, words):
    if mask == "ref0":  # an all-black mask file
        Image.new("L", (56, 40), 0).save(files["mask"].with_name("black.png"))
        mask_path = files["mask"].with_name("black.png")
    else:
        mask_path = files.get(mask) if mask else None
    with pytest.raises(AppError) as caught:
        call(qwen_app, params, [files[name] for name in images], mask_path)
    assert field in str(caught.value) and words in str(caught.value)
