"""The app as a user sees it: headless Chromium (Playwright) clicking through `python app.py --demo`.

Debian's /usr/bin/chromium is used (never `playwright install`). Without it these tests fail loudly,
so CI cannot go green by skipping them; DIFFBOX_SKIP_BROWSER=1 skips them on purpose.
One app for the module; each test leaves a full-page screenshot under its tmp dir.
"""

import json
import os
import re
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from test_app import start_app

from conftest import make_demo_home

pytestmark = pytest.mark.skipif(os.environ.get("DIFFBOX_SKIP_BROWSER") == "1",
                                reason="DIFFBOX_SKIP_BROWSER=1: browser tests skipped on request")

CHROMIUM = "/usr/bin/chromium"
# Without the networking flags Chromium keeps dialling Google services, which is slow on a closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
BLUE = (30, 120, 220)
JOB_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_models):
    home = make_demo_home(tmp_path_factory.mktemp("browser"), demo_models)
    process, url, _ = start_app(home)
    yield {"url": url, "home": home, "jobs": {}}
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: apt-get install chromium (or DIFFBOX_SKIP_BROWSER=1)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app, tmp_path, request):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(app["url"])
    expect(page.locator("#i2v-generate")).to_be_visible()
    yield page
    page.screenshot(path=str(tmp_path / f"{request.node.name}.png"), full_page=True)
    context.close()


@pytest.fixture(scope="module")
def start_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "start.png"
    Image.new("RGB", (64, 48), BLUE).save(path)
    return str(path)


def media_duration(video) -> float:
    """The <video>'s duration once its metadata loaded: the browser really decoded the file's header."""
    return video.evaluate("""v => new Promise((ok, fail) => {
        if (v.readyState >= 1) return ok(v.duration);
        v.addEventListener('loadedmetadata', () => ok(v.duration));
        v.addEventListener('error', () => fail(new Error('video error ' + (v.error && v.error.code))));
    })""")


def watch_text(page, *selectors) -> None:
    """Records every text the elements show from now on (progress flashes by faster than a poll)."""
    page.evaluate("""selectors => {
        window.seenTexts = [];
        const note = () => selectors.forEach(s => document.querySelectorAll(s).forEach(
            e => window.seenTexts.push(e.innerText)));
        new MutationObserver(note).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""", list(selectors))


def seen_texts(page) -> str:
    return "\n".join(page.evaluate("window.seenTexts"))


def job_id(page, selector) -> str:
    return JOB_ID.search(page.locator(selector).inner_text()).group(0)


def set_number(page, elem_id, value):
    from playwright.sync_api import expect

    box = page.locator(f"#{elem_id} input[type=number]").filter(visible=True)
    # The page-load events (model lists, presets, saved defaults) rewrite the form once, late on a busy
    # machine, and can overwrite a value typed before them: type again until the value stays put.
    for _ in range(10):
        box.fill(str(value))
        box.press("Enter")
        box.blur()  # a slider's number box commits its value on change, which blur guarantees
        time.sleep(0.5)
        if box.input_value() == str(value):
            break
    expect(box).to_have_value(str(value))


def test_i2v_upload_generate_and_the_video_plays(page, app, start_png):
    from playwright.sync_api import expect

    page.set_input_files("#i2v-image input[type=file]", start_png)
    page.locator("#param-prompt textarea").filter(visible=True).fill("a blue square drifting")
    set_number(page, "param-width", 32)
    set_number(page, "param-height", 32)
    page.locator("#param-seed input").filter(visible=True).fill("7")
    watch_text(page, "#i2v-status", "#i2v-video")
    page.click("#i2v-generate")
    video = page.locator("#i2v-video video")
    expect(video).to_be_visible(timeout=90_000)
    expect(page.locator("#i2v-status")).to_contain_text("Done.")
    progress = seen_texts(page)
    assert "waiting for the GPU" in progress and re.search(r"step \d+/8", progress), progress[-2000:]
    assert media_duration(video) > 0
    page.get_by_role("button", name="Metadata").filter(visible=True).click()
    metadata = page.locator("#i2v-metadata").inner_text()
    assert re.search(r'"seed"\s*:\s*7\b', metadata) and re.search(r'"width"\s*:\s*32\b', metadata)
    app["jobs"]["i2v"] = job_id(page, "#i2v-status")


def test_i2v_stop_ends_the_job_with_a_sentence_not_an_error(page, app, start_png):
    from playwright.sync_api import expect

    page.set_input_files("#i2v-image input[type=file]", start_png)
    # Big enough that 200 steps take many seconds on a CPU: Stop must land mid-run, however busy CI is.
    set_number(page, "param-width", 96)
    set_number(page, "param-height", 96)
    page.get_by_role("button", name="Advanced").filter(visible=True).first.click()
    set_number(page, "param-num_inference_steps", 200)
    set_number(page, "param-num_frames", 33)
    page.click("#i2v-generate")
    # The server's own word that denoising is under way (the progress overlay is drawn too briefly to
    # poll reliably on a loaded machine); then Stop must land mid-run.
    deadline = time.monotonic() + 60
    while not any(j["state"] == "running" and (j["step"] or 0) >= 2 and j["total"] == 200
                  for j in httpx.get(app["url"] + "health").json()["queue"]["jobs"]):
        assert time.monotonic() < deadline, "the 200-step job never got going"
        time.sleep(0.05)
    page.click("#i2v-stop")
    status = page.locator("#i2v-status")
    expect(status).to_contain_text("Stopped. Nothing after the current step was computed.", timeout=30_000)
    assert "Error" not in page.locator("#i2v-video").inner_text()


def test_qwen_sketch_a_mask_with_the_mouse_and_inpaint(page, app, start_png):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Qwen Image Edit").click()
    page.set_input_files("#qwen-images input[type=file]", start_png)
    expect(page.locator("#qwen-images img").first).to_be_visible()
    mode = page.locator("#param-mode input").filter(visible=True)
    mode.click()
    page.get_by_role("option", name="inpaint").click()
    page.locator("#param-prompt textarea").filter(visible=True).fill("a full moon")
    page.get_by_role("button", name="Mask (inpaint mode)").click()
    page.get_by_role("button", name="Brush", exact=True).click()
    canvas = page.locator("#qwen-mask-editor canvas").first
    expect(canvas).to_be_visible()
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 20, y)
    page.mouse.down()
    for i in range(10):
        page.mouse.move(x - 20 + 4 * i, y + i, steps=2)
    page.mouse.up()
    expect(page.locator("#qwen-mask-preview img")).to_be_visible()  # "Mask as it will be used" follows the brush
    page.click("#qwen-generate")
    # Inpaint refuses to start without a painted mask, so a result proves the sketch reached the server.
    result = page.locator("#qwen-results img").first
    expect(result).to_be_visible(timeout=90_000)
    expect(page.locator("#qwen-status")).to_contain_text("Done.")
    png = page.request.get(result.get_attribute("src")).body()
    path = Path(app["home"]).parent / "inpainted.png"
    path.write_bytes(png)
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        corner, centre = rgb.getpixel((1, 1)), rgb.getpixel((rgb.width // 2, rgb.height // 2))
    # Outside the stroke the original pixels are pasted back; inside the tiny random model repainted.
    assert max(abs(a - b) for a, b in zip(corner, BLUE)) <= 3, corner
    assert max(abs(a - b) for a, b in zip(centre, BLUE)) > 3, centre
    app["jobs"]["qwen_edit"] = job_id(page, "#qwen-status")


def test_svi_first_clip_shows_before_the_run_ends_and_stop_keeps_it(page, app, start_png, streaming_tools):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="SVI 2.0 Pro").click()
    page.set_input_files("#svi-image input[type=file]", start_png)
    page.locator("#svi-prompts textarea").fill("a square\nthe square turns")
    set_number(page, "param-num_clips", 8)
    page.click("#svi-generate")
    first_clip = page.locator("#svi-clips video").first
    expect(first_clip).to_be_attached(timeout=90_000)
    status = page.locator("#svi-status")
    assert "Done." not in status.inner_text()  # the first clip arrived while the run goes on
    page.click("#svi-stop")
    expect(status).to_contain_text("Stopped", timeout=60_000)
    expect(status).to_contain_text("kept and stitched")
    stitched = page.locator("#svi-video video")
    expect(stitched).to_be_visible()
    assert media_duration(stitched) > 0
    # The live player got the clips too: HLS through the system ffmpeg, loaded far enough to know its size.
    page.wait_for_function("() => document.querySelector('#svi-stream video')?.readyState >= 1", timeout=60_000)
    app["jobs"]["svi"] = job_id(page, "#svi-status")


def test_config_downloads_as_json_and_uploads_back(page, app, tmp_path):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Config").click()
    with page.expect_download() as download:
        page.click("#config-download")
    config = json.loads(Path(download.value.path()).read_text())
    assert config["version"] >= 1 and "tokens" not in config
    config.setdefault("defaults", {}).setdefault("i2v", {})["num_inference_steps"] = 5
    edited = tmp_path / "diffbox-config.json"
    edited.write_text(json.dumps(config))
    with page.expect_file_chooser() as chooser:
        page.click("#config-upload")
    chooser.value.set_files(str(edited))
    preview = page.locator("#config-preview")
    expect(preview).to_contain_text("i2v defaults")
    expect(preview).to_contain_text("num_inference_steps")
    page.click("#config-apply")
    expect(page.locator("#config-apply")).to_be_disabled()
    preferences = json.loads((app["home"] / "db" / "preferences.json").read_text())
    assert "num_inference_steps" in json.dumps(preferences)


def test_history_lists_every_job_and_shows_its_video(page, app):
    from playwright.sync_api import expect

    assert set(app["jobs"]) == {"i2v", "qwen_edit", "svi"}, "the workflow tests above did not all run"
    page.get_by_role("tab", name="History").click()
    page.click("#history-refresh")
    table = page.locator("#history-table")
    for workflow, job in app["jobs"].items():
        expect(table).to_contain_text(job)
    # Rows are virtual (divs with role=gridcell); a hidden <table> copy only sizes the columns.
    cells = table.get_by_role("gridcell").filter(visible=True)
    cells.filter(has_text=app["jobs"]["svi"]).first.click()
    details = page.locator("#history-details")
    expect(details).to_contain_text(app["jobs"]["svi"])
    assert re.search(r'"status"\s*:\s*"cancelled"', details.inner_text())
    cells.filter(has_text=app["jobs"]["i2v"]).first.click()
    video = page.locator("#history-video video")
    expect(video).to_be_visible()
    assert media_duration(video) > 0
    expect(page.locator("#history-use-settings")).to_be_enabled()


def test_a_phone_sees_the_whole_page_without_sideways_scrolling(browser, app, tmp_path):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(app["url"])
    expect(page.locator("#i2v-generate")).to_be_visible(timeout=30_000)
    for tab in ("Image → Video", "Qwen Image Edit", "History"):
        if page.get_by_role("tab", name=tab).count():
            page.get_by_role("tab", name=tab).click()
        else:  # tabs that do not fit sit behind Gradio's "More tabs" menu
            page.get_by_role("button", name="More tabs").click()
            page.locator(".overflow-dropdown button", has_text=tab).click()
        expect(page.get_by_role("tab", name=tab)).to_have_attribute("aria-selected", "true")
        if tab == "History":  # a fresh page lists the jobs at once (the auto-refresh ticks every 5 s)
            expect(page.locator("#history-table")).to_contain_text(app["jobs"]["i2v"], timeout=3_000)
        page.wait_for_timeout(300)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        page.screenshot(path=str(tmp_path / f"phone-{tab.split()[0]}.png"), full_page=True)
        assert overflow <= 1, f"{tab}: the page is {overflow}px wider than a phone screen"
    context.close()
