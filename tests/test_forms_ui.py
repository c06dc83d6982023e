"""The forms as a newcomer met them: what each box shows, sends and says, checked in the page.

Most of these bugs lived in the browser (Gradio's frontend turning an empty number into 0, a slider
clamping a typed 0, toasts dropped from unqueued events, error badges over the last results), so
they are driven with headless Chromium through one `python app.py --demo` for the module, the way
tests/test_browser.py does. The rest call the tab handlers in process on the tiny demo models.
"""

import json
import os
import shutil
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from conftest import make_demo_home
from test_app import start_app
from test_browser import CHROMIUM, CHROMIUM_ARGS, JOB_ID, media_duration, set_number

from diffbox.demo import DEMO_DEFAULTS
from diffbox.services import WORKFLOW_SPECS
from diffbox.ui.form import TIER_TITLES, component_for, fill_updates
from diffbox.ui.lora_rows import LoraRows
from diffbox.workflows.svi import ANCHOR_FILE

TAB_TITLES = {"i2v": "Image → Video", "svi": "SVI 2.0 Pro", "qwen_edit": "Qwen Image Edit"}
NULLABLE = [(workflow, param) for workflow, spec in WORKFLOW_SPECS.items() for param in spec.params
            if param.nullable]
SMALL_I2V = {"width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 1, "seed": 3}


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_models):
    home = make_demo_home(tmp_path_factory.mktemp("forms"), demo_models)
    process, url, _ = start_app(home)
    yield {"url": url, "home": home}
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def client(app):
    return Client(app["url"], verbose=False)


@pytest.fixture(scope="module")
def browser():
    if os.environ.get("DIFFBOX_SKIP_BROWSER") == "1":
        pytest.skip("DIFFBOX_SKIP_BROWSER=1: browser tests skipped on request")
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: apt-get install chromium (or DIFFBOX_SKIP_BROWSER=1)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app, tmp_path, request):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(app["url"])
    expect(page.locator("#i2v-generate")).to_be_visible()
    yield page
    page.screenshot(path=str(tmp_path / f"{request.node.name}.png"), full_page=True)
    context.close()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    Image.new("RGB", (64, 48), (30, 120, 220)).save(folder / "start.png")
    (folder / "notes.png").write_text("a shopping list, saved with the wrong name\n")
    (folder / "other.json").write_text(json.dumps({"hello": "not a diffbox file"}))
    return folder


# --- helpers ------------------------------------------------------------------------------------------

# The size of the picture an <img> really decoded.
NATURAL_SIZE = "img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])"
# How many lines the cell's text node holding `text` is laid out on.
LINES_OF_TEXT = """(cell, text) => {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
        if (!walker.currentNode.textContent.includes(text)) continue;
        const range = document.createRange();
        range.selectNodeContents(walker.currentNode);
        return new Set([...range.getClientRects()].map(box => Math.round(box.top))).size;
    }
    return 0;
}"""


def toast(page, text: str) -> str:
    """Waits for a toast holding `text` (Info, Warning or Error) and returns all it says."""
    from playwright.sync_api import expect

    found = page.locator(".toast-body").filter(has_text=text).first
    expect(found).to_be_visible(timeout=15_000)
    return found.inner_text()


def open_tab(page, workflow: str) -> None:
    page.get_by_role("tab", name=TAB_TITLES[workflow]).click()


def open_section(page, title: str) -> None:
    """Opens the accordion called `title` on the tab in view."""
    page.get_by_role("button", name=title).filter(visible=True).first.click()


def box(page, name: str):
    """The text field of form parameter `name` on the tab in view (a nullable number is a text box)."""
    return page.locator(f"#param-{name}").filter(visible=True).locator("input, textarea").first


def number(page, name: str):
    return page.locator(f"#param-{name} input[type=number]").filter(visible=True)


def finished_job(page, status: str) -> str:
    from playwright.sync_api import expect

    expect(page.locator(status)).to_contain_text("Done.", timeout=90_000)
    return JOB_ID.search(page.locator(status).inner_text()).group(0)


def saved_params(app, job: str) -> dict:
    return json.loads((app["home"] / "outputs" / job / "meta.json").read_text())["params"]


def shown(default) -> str:
    """What a nullable number's box shows for a value: nothing for "the model's own", else the number."""
    return "" if default is None else f"{default:g}"


def demo_spec(workflow: str):
    """The spec as `--demo` serves it (its defaults are the tiny models' sizes and steps)."""
    return WORKFLOW_SPECS[workflow].with_defaults(DEMO_DEFAULTS.get(workflow, {}))


def choose(page, dropdown_id: str, option: str) -> None:
    page.locator(f"#{dropdown_id} input").filter(visible=True).click()
    page.get_by_role("option", name=option, exact=True).click()


# --- nullable numbers ("empty = the model's own value") ---------------------------------------------

@pytest.mark.parametrize("workflow,param", NULLABLE, ids=[f"{w}.{p.name}" for w, p in NULLABLE])
def test_a_nullable_number_is_a_box_that_keeps_empty_empty(workflow, param):
    """Every nullable parameter of every spec: drawn empty for None, its number otherwise; what the box
    holds validates back to the same value, and a refill with None empties it again."""
    spec = WORKFLOW_SPECS[workflow]
    with gr.Blocks():
        component = component_for(param)
        rows = LoraRows(spec["loras"], lambda: [], elem_prefix="probe")
    assert component.value == shown(param.default)
    assert spec.validate({param.name: component.value})[param.name] == param.default
    assert spec.validate({param.name: ""})[param.name] is None
    fields = {param.name: component}
    for saved in (None, param.minimum, (param.minimum + param.maximum) / 2):  # boundary_ratio's minimum is 0
        assert fill_updates(fields, rows, {param.name: saved})[0] == shown(saved)
        assert spec.validate({param.name: shown(saved)})[param.name] == saved
    with pytest.raises(ValueError, match=f"{param.name}: must be a number, got 'abc'"):
        spec.validate({param.name: "abc"})


def test_opening_expert_sends_the_models_own_boundary(page, app, pictures):
    """Expert opened on every tab: each nullable box shows its default, not 0; an I2V job then switches
    experts where the model says (t = 900) and records boundary_ratio null."""
    from playwright.sync_api import expect

    for workflow in ("svi", "qwen_edit", "i2v"):  # ends on I2V, which runs the job
        open_tab(page, workflow)
        nullable = [p for p in demo_spec(workflow).params if p.nullable]
        for tier in sorted({p.tier for p in nullable} - {"basic"}):
            open_section(page, TIER_TITLES[tier])
        for param in nullable:
            expect(box(page, param.name)).to_have_value(shown(param.default))
    page.set_input_files("#i2v-image input[type=file]", str(pictures / "start.png"))
    page.click("#i2v-generate")
    job = finished_job(page, "#i2v-status")
    expect(page.locator("#i2v-status")).to_contain_text("switch at t = 900")
    params = saved_params(app, job)
    assert params["boundary_ratio"] is None and params["flow_shift"] == 5.0


def test_presets_history_and_dropped_files_refill_the_nullable_box_as_saved(page, app, client, pictures):
    from playwright.sync_api import expect

    start = handle_file(str(pictures / "start.png"))
    _, models_own = client.predict(SMALL_I2V, start, None, api_name="/i2v")
    _, half = client.predict({**SMALL_I2V, "boundary_ratio": 0.5}, start, None, api_name="/i2v")
    open_section(page, "Expert")
    boundary = box(page, "boundary_ratio")

    boundary.fill("0.3")
    page.set_input_files("#i2v-settings-file input[type=file]",
                         str(app["home"] / "outputs" / models_own["job_id"] / "meta.json"))
    toast(page, "Settings loaded from the file.")
    expect(boundary).to_have_value("")
    expect(box(page, "flow_shift")).to_have_value("5")

    open_section(page, "Presets")
    choose(page, "i2v-preset-choice", "Wan 2.2 quality 40 steps (shipped)")
    page.click("#i2v-preset-load")
    expect(page.locator("#i2v-preset-note")).to_contain_text("Loaded")
    expect(boundary).to_have_value("0.9")
    boundary.fill("")
    page.locator("#i2v-preset-name input, #i2v-preset-name textarea").first.fill("model boundary")
    page.click("#i2v-preset-save")
    expect(page.locator("#i2v-preset-note")).to_contain_text("Saved preset")
    boundary.fill("0.3")
    page.click("#i2v-preset-load")
    expect(boundary).to_have_value("")

    for job, expected in ((models_own["job_id"], ""), (half["job_id"], "0.5")):
        boundary.fill("0.3")
        page.get_by_role("tab", name="History").click()
        page.click("#history-refresh")
        page.locator("#history-table").get_by_role("gridcell").filter(visible=True).filter(has_text=job).first.click()
        expect(page.locator("#history-details")).to_contain_text(job)
        page.click("#history-use-settings")
        expect(page.get_by_role("tab", name=TAB_TITLES["i2v"])).to_have_attribute("aria-selected", "true")
        expect(boundary).to_have_value(expected)


# --- typed numbers, refusals, toasts, uploads -----------------------------------------------------------

def test_typed_numbers_are_refused_by_name_and_the_last_video_stays(page, app, pictures):
    """Out-of-range or fractional numbers are not clamped or rounded in the box: the spec refuses them
    naming the field and its range, in a toast and the status line, and the video on screen stays."""
    from playwright.sync_api import expect

    page.set_input_files("#i2v-image input[type=file]", str(pictures / "start.png"))
    page.click("#i2v-generate")
    finished_job(page, "#i2v-status")
    video = page.locator("#i2v-video video")
    open_section(page, "Advanced")
    open_section(page, "Expert")
    status = page.locator("#i2v-status")
    typed = [("num_inference_steps", "0", "num_inference_steps: must be between 1 and 200, got 0"),
             ("seed", "1.5", "seed: must be a whole number, got 1.5"),
             ("boundary_ratio", "abc", "boundary_ratio: must be a number, got 'abc'")]
    for name, value, message in typed:
        if name == "boundary_ratio":
            box(page, name).fill(value)
        else:
            set_number(page, f"param-{name}", value)
        page.click("#i2v-generate")
        assert message in toast(page, message)
        expect(status).to_contain_text("Not started.")
        expect(status).to_contain_text(f"Please fix: {message}")
        expect(box(page, name)).to_have_value(value)  # not clamped to 1, rounded to 2 or blanked
        expect(video).to_be_visible()
        assert media_duration(video) > 0 and "Error" not in page.locator("#i2v-video").inner_text()
        if name == "boundary_ratio":
            box(page, name).fill("")
        else:
            set_number(page, f"param-{name}", demo_spec("i2v")[name].default)


def test_info_and_warnings_reach_the_page(page, pictures):
    page.click("#i2v-stop")
    toast(page, "Nothing to stop")
    page.set_input_files("#i2v-settings-file input[type=file]", str(pictures / "other.json"))
    toast(page, "That file holds no diffbox Image → Video settings.")
    open_tab(page, "qwen_edit")
    page.click("#qwen-send-to-input")
    toast(page, "No result yet")
    open_section(page, "Mask (inpaint mode): paint the area to repaint")
    page.set_input_files("#qwen-mask-file input[type=file]", str(pictures / "notes.png"))
    text = toast(page, "Mask file: is not a readable image")
    assert "/tmp" not in text and "gradio" not in text  # no internal upload folder in the message


def test_a_file_that_is_no_image_is_taken_out_with_a_toast_naming_its_box(page, client, pictures):
    from playwright.sync_api import expect

    notes, start = str(pictures / "notes.png"), str(pictures / "start.png")
    page.set_input_files("#i2v-image input[type=file]", notes)
    toast(page, "Start image: is not a readable image")
    expect(page.locator("#i2v-image input[type=file]")).to_be_attached()  # the box is empty again
    expect(page.locator("#i2v-image img")).to_have_count(0)

    open_tab(page, "qwen_edit")
    page.set_input_files("#qwen-images input[type=file]", [start, notes])
    toast(page, "Left out: Reference image 2: is not a readable image")
    expect(page.locator("#qwen-images .thumbnail-item img, #qwen-images .grid-wrap img")).to_have_count(1)
    open_section(page, "Control image (generate mode with a ControlNet)")
    page.set_input_files("#qwen-control-image input[type=file]", notes)
    toast(page, "Control image: is not a readable image")
    expect(page.locator("#qwen-control-image img")).to_have_count(0)

    with pytest.raises(AppError, match="image: is not a readable image"):  # the API keeps its sentence
        client.predict(SMALL_I2V, handle_file(notes), None, api_name="/i2v")


# --- SVI: distill, preview, a refused Extend, Extend at another size ------------------------------------

def test_svi_previews_keeps_its_results_after_a_typo_and_extends_at_the_videos_size(page, app, pictures):
    from playwright.sync_api import expect

    open_tab(page, "svi")
    open_section(page, "Advanced")
    steps = number(page, "num_inference_steps").input_value()
    page.click("#svi-distill-preset")  # the demo library holds no distill LoRA
    toast(page, "needs a distill LoRA")
    assert number(page, "num_inference_steps").input_value() == steps

    page.set_input_files("#svi-image input[type=file]", str(pictures / "start.png"))
    set_number(page, "param-num_clips", 1)
    set_number(page, "param-preview_every", 1)
    page.click("#svi-generate")
    job = finished_job(page, "#svi-status")
    expect(page.locator("#svi-preview img")).to_be_visible()

    open_section(page, "Extend an earlier video")
    extend_job = page.locator("#svi-extend-job input, #svi-extend-job textarea").first
    extend_job.fill(job + "x")
    page.click("#svi-extend")
    toast(page, f"no SVI job '{job}x'")
    expect(page.locator("#svi-status")).to_contain_text("Not started.")
    expect(page.locator("#svi-video video")).to_be_visible()
    expect(page.locator("#svi-clips video")).to_have_count(1)
    for kept in ("#svi-video", "#svi-clips", "#svi-stream"):
        assert "Error" not in page.locator(kept).inner_text(), kept

    width = int(number(page, "width").input_value())
    set_number(page, "param-width", width - 16)
    extend_job.fill(job)
    page.click("#svi-extend")
    extended = finished_job(page, "#svi-status")
    assert extended != job and saved_params(app, extended)["width"] == width


def test_the_distill_button_picks_a_distill_lora_or_changes_nothing(services, demo_models):
    from diffbox.ui.svi_tab import build_svi_tab
    from diffbox.workflows import svi

    with gr.Blocks() as blocks:
        build_svi_tab(services)
    distill = next(f.fn for f in blocks.fns.values() if f.api_name == "ui_svi_distill")
    with pytest.warns(UserWarning, match="needs a distill LoRA"):
        assert all(update == gr.skip() for update in distill(""))

    lightning = services.settings.models_dir / "loras" / "Wan2.2-Lightning-high.safetensors"
    lightning.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(demo_models["wan-lora-high"], lightning)
    *numbers, lora = distill("")
    assert numbers == list(svi.DISTILL_PRESET.values()) and lora == "loras/Wan2.2-Lightning-high.safetensors"
    assert distill("demo/loras/wan-lora-low.safetensors")[-1] == "demo/loras/wan-lora-low.safetensors"


# --- the 200-step status line ---------------------------------------------------------------------------

def test_a_200_step_status_line_stays_short():
    """The job log keeps all 200 timesteps; the status box shows the first, the last and the count."""
    from diffusers import UniPCMultistepScheduler

    from diffbox.engine.tuning import describe_timesteps
    from diffbox.ui.jobs import job_status, status_note

    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    scheduler.set_timesteps(200)
    timesteps = [float(t) for t in scheduler.timesteps]
    note = "unipc scheduler, " + describe_timesteps(timesteps, 0.9)
    assert len(note) > 1000
    line = status_note(note)
    first, last = f"{timesteps[0]:g}", f"{timesteps[-1]:g}"
    assert line.startswith(f"unipc scheduler, timesteps: {first} … {last} (200 in all; high-noise expert ")
    assert line.endswith("switch at t = 900)") and len(line) < 160
    assert "200 in all" in job_status("20260101-000000-abcdef", "Done.", [note])
    eight = "unipc scheduler, " + describe_timesteps(timesteps[::25], 0.9)
    assert status_note(eight) == eight  # a short list is shown whole


# --- History and layout ---------------------------------------------------------------------------------

def test_history_shows_qwen_images_and_brings_back_the_svi_anchor(page, app, client, pictures):
    from playwright.sync_api import expect

    images, qwen = client.predict({"mode": "generate", "prompt": "a moon", "num_inference_steps": 2}, [], None,
                                  api_name="/qwen_edit")
    _, svi = client.predict({"num_clips": 1, "num_inference_steps": 1, "prompts": ["a square"]},
                            handle_file(str(pictures / "start.png")), api_name="/svi")
    page.get_by_role("tab", name="History").click()
    page.click("#history-refresh")
    cells = page.locator("#history-table").get_by_role("gridcell").filter(visible=True)
    expect(cells.filter(has_text=qwen["job_id"]).first).to_be_visible()
    for text in (qwen["job_id"], "qwen_edit"):  # neither breaks mid-word
        lines = cells.filter(has_text=text).first.evaluate(LINES_OF_TEXT, text)
        assert lines == 1, text

    cells.filter(has_text=qwen["job_id"]).first.click()
    picture = page.locator("#history-images img").first
    expect(picture).to_be_visible()
    with Image.open(images[0]) as made:
        assert picture.evaluate(NATURAL_SIZE) == list(made.size)

    cells.filter(has_text=svi["job_id"]).first.click()
    expect(page.locator("#history-details")).to_contain_text(svi["job_id"])
    page.click("#history-use-settings")
    expect(page.get_by_role("tab", name=TAB_TITLES["svi"])).to_have_attribute("aria-selected", "true")
    anchor = page.locator("#svi-image img")
    expect(anchor).to_be_visible()
    with Image.open(app["home"] / "outputs" / svi["job_id"] / ANCHOR_FILE) as saved:
        assert anchor.evaluate(NATURAL_SIZE) == list(saved.size)
    open_section(page, "Extend an earlier video")
    expect(page.locator("#svi-extend-job input, #svi-extend-job textarea").first).to_have_value(svi["job_id"])


def test_the_presets_bar_is_above_each_form_and_inpaint_matches_the_input_size(page):
    from playwright.sync_api import expect

    first_input = {"i2v": "#i2v-image", "svi": "#svi-image", "qwen_edit": "#qwen-images"}
    for workflow, selector in first_input.items():
        open_tab(page, workflow)
        bar = page.locator(f"#{workflow}-presets").bounding_box()
        assert bar["y"] + bar["height"] <= page.locator(selector).bounding_box()["y"], workflow
    match = page.locator("#param-match_input_size input").filter(visible=True)
    expect(match).not_to_be_checked()
    choose(page, "param-mode", "inpaint")
    expect(match).to_be_checked()
