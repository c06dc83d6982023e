"""Finishing a result: History's "Send to …" buttons and the tabs' "Finish with" step (diffbox.ui.chain),
in headless Chromium against one `python app.py --demo` for the module, plus the registry-derived rules."""

import json
import os
import re
from pathlib import Path

import imageio.v2 as imageio
import pytest
from gradio_client import Client, handle_file

from conftest import make_demo_home
from test_app import start_app
from test_browser import JOB_ID, browser, page, set_number, start_png  # noqa: F401 (fixtures)

from diffbox.params import InvalidParams
from diffbox.services import WORKFLOW_SPECS
from diffbox.ui import chain
from diffbox.workflows.registry import WORKFLOWS

browser_test = pytest.mark.skipif(os.environ.get("DIFFBOX_SKIP_BROWSER") == "1",
                                  reason="DIFFBOX_SKIP_BROWSER=1: browser tests skipped on request")
I2V_PARAMS = {"width": 32, "height": 32, "num_frames": 9, "num_inference_steps": 2, "seed": 5, "prompt": "a square"}


def test_who_takes_what_comes_from_the_inputs_kinds():
    assert [w.name for w in chain.takers("video")] == ["upscale", "interpolate"]
    assert [w.name for w in chain.takers("image")] == ["i2v", "svi", "upscale"]  # I2V's end image is optional
    assert chain.takers(None) == []
    assert [w.name for w in WORKFLOWS.values() if chain.offers_finish(w)] == ["i2v", "svi"]


def test_finish_offers_each_amount_and_refuses_two_of_one_workflow():
    options = chain.finish_options(WORKFLOW_SPECS)
    assert options == {"Upscale ×2": ("upscale", {"scale": 2}), "Upscale ×4": ("upscale", {"scale": 4}),
                       "Interpolate ×2": ("interpolate", {"factor": 2}),
                       "Interpolate ×4": ("interpolate", {"factor": 4})}
    # Tab order, whatever order they were ticked in: upscale first, then interpolate.
    assert chain.finish_steps(["Interpolate ×4", "Upscale ×2"], WORKFLOW_SPECS) == [
        ("Upscale ×2", "upscale", {"scale": 2}), ("Interpolate ×4", "interpolate", {"factor": 4})]
    assert chain.finish_steps([], WORKFLOW_SPECS) == []
    with pytest.raises(InvalidParams) as twice:
        chain.finish_steps(["Interpolate ×2", "Interpolate ×4"], WORKFLOW_SPECS)
    assert "finish" in twice.value.errors and "Interpolate" in twice.value.errors["finish"]
    with pytest.raises(InvalidParams) as unknown:
        chain.finish_steps(["Sharpen ×9"], WORKFLOW_SPECS)
    assert "Sharpen" in unknown.value.errors["finish"]


def test_the_main_output_is_the_first_video_then_the_first_image():
    assert chain.main_output(["a/video.mp4", "a/clip_000.mp4", "a/state.pt"]) == "a/video.mp4"
    assert chain.main_output(["a/state.pt", "a/out_1.PNG", "a/out_2.png"]) == "a/out_1.PNG"
    assert chain.main_output(["a/state.pt"]) is None


# ---------------------------------------------------------------------------------------------- in a browser

@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_models):
    home = make_demo_home(tmp_path_factory.mktemp("chain"), demo_models)
    process, url, _ = start_app(home)
    yield {"url": url, "home": home, "client": Client(url, verbose=False)}
    process.terminate()
    process.wait(30)


def frame_count(path: Path) -> int:
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return sum(1 for _ in reader)


def records(app) -> dict:
    return {job["id"]: job for job in app["client"].predict(50, api_name="/history")}


def job_ids(text: str) -> list[str]:
    return JOB_ID.findall(text)


@browser_test
def test_history_sends_an_i2v_video_to_interpolate_which_doubles_its_frames(page, app, start_png):
    from playwright.sync_api import expect

    video, metadata = app["client"].predict(I2V_PARAMS, handle_file(start_png), None, api_name="/i2v")
    source = metadata["job_id"]
    assert frame_count(Path(video["video"] if isinstance(video, dict) else video)) == 9

    page.get_by_role("tab", name="History").click()
    page.click("#history-refresh")
    table = page.locator("#history-table")
    expect(table).to_contain_text(source)
    expect(page.locator("#history-send-interpolate")).to_be_hidden()  # nothing chosen yet
    table.get_by_role("gridcell").filter(visible=True).filter(has_text=source).first.click()
    expect(page.locator("#history-details")).to_contain_text(source)
    # A video goes to the workflows whose input takes a video; not to those that start from an image.
    expect(page.locator("#history-send-upscale")).to_be_visible()
    expect(page.locator("#history-send-i2v")).to_be_hidden()
    page.click("#history-send-interpolate")

    held = page.locator("#interpolate-video video")
    expect(held).to_be_visible()  # the Interpolate tab is open and its input holds the job's video
    assert held.get_attribute("src").endswith("/video.mp4")
    page.click("#interpolate-generate")
    status = page.locator("#interpolate-status")
    expect(status).to_contain_text("Done.", timeout=90_000)
    expect(page.locator("#interpolate-interpolated video")).to_be_visible()

    follow_up = job_ids(status.inner_text())[0]
    assert frame_count(app["home"] / "outputs" / follow_up / "video.mp4") == (9 - 1) * 2 + 1
    record = records(app)[follow_up]
    assert record["workflow"] == "interpolate" and record["status"] == "done"
    assert record["params"]["factor"] == 2
    meta = json.loads((app["home"] / "outputs" / follow_up / "meta.json").read_text())
    assert meta["source"]["frames"] == 9 and meta["source"]["recipe"]["job_id"] == source  # that very file


@browser_test
def test_i2v_finished_with_interpolate_x2_ends_with_the_doubled_video_and_two_records(page, app, start_png):
    from playwright.sync_api import expect

    page.set_input_files("#i2v-image input[type=file]", start_png)
    page.locator("#param-prompt textarea").filter(visible=True).fill("a blue square drifting")
    set_number(page, "param-width", 32)
    set_number(page, "param-height", 32)
    page.locator("#i2v-finish").get_by_label("Interpolate ×2").check()
    page.click("#i2v-generate")
    status = page.locator("#i2v-status")
    expect(status).to_contain_text("Then Interpolate ×2", timeout=90_000)
    expect(status).to_contain_text("Done.", timeout=90_000)

    source, follow_up = job_ids(status.inner_text())
    frames = 17  # the demo's default num_frames
    assert frame_count(app["home"] / "outputs" / source / "video.mp4") == frames
    assert frame_count(app["home"] / "outputs" / follow_up / "video.mp4") == (frames - 1) * 2 + 1
    expect(page.locator("#i2v-video video")).to_be_visible()
    page.get_by_role("button", name="Metadata").filter(visible=True).click()
    shown = page.locator("#i2v-metadata").inner_text()  # the tab shows the last step's result
    assert re.search(rf'"job_id"\s*:\s*"{follow_up}"', shown) and re.search(r'"frames"\s*:\s*33\b', shown)
    jobs = records(app)
    assert jobs[source]["workflow"] == "i2v" and jobs[source]["status"] == "done"
    assert jobs[follow_up]["workflow"] == "interpolate" and jobs[follow_up]["status"] == "done"
    assert jobs[follow_up]["params"]["source_job"] == source and jobs[follow_up]["params"]["factor"] == 2
    meta = (app["home"] / "outputs" / follow_up / "meta.json").read_text()
    assert re.search(rf'"source_job"\s*:\s*"{source}"', meta)


@browser_test
def test_two_amounts_of_one_step_are_refused_before_anything_runs(page, app, start_png):
    from playwright.sync_api import expect

    before = set(records(app))
    page.set_input_files("#i2v-image input[type=file]", start_png)
    finish = page.locator("#i2v-finish")
    finish.get_by_label("Interpolate ×2").check()
    finish.get_by_label("Interpolate ×4").check()
    page.click("#i2v-generate")
    status = page.locator("#i2v-status")
    expect(status).to_contain_text("Not started")
    expect(status).to_contain_text("choose one amount of Interpolate")
    assert set(records(app)) == before
