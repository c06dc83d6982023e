"""Interpolate: n frames → (n−1)·k + 1 at k× fps, read back from the written mp4; the original frames stay
at positions 0, k, 2k…; a bad upload is refused naming `video`; Stop leaves nothing behind."""

import os
import re
import subprocess

import imageio.v2 as imageio
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from conftest import make_demo_home, read_frames
from test_app import start_app
from test_browser import CHROMIUM, CHROMIUM_ARGS, media_duration

from diffbox.engine import interpolate as interpolation
from diffbox.engine.runner import Cancelled, FinishedEvent, Job, JobContext, ProgressEvent
from diffbox.params import InvalidParams
from diffbox.store import DONE
from diffbox.workflows import interpolate
from diffbox.workflows.outputs import read_metadata, write_video

WIDTH, HEIGHT, FPS, FRAMES = 72, 40, 16, 9  # sides that are not multiples of 16 must survive as they are
SQUARE, STEP = 8, 4  # a white square moving STEP pixels right per frame on grey


def moving_square(frames: int = FRAMES) -> np.ndarray:
    video = np.full((frames, HEIGHT, WIDTH, 3), 40, dtype=np.uint8)
    for i in range(frames):
        x = 4 + i * STEP
        video[i, 16:16 + SQUARE, x:x + SQUARE] = 255
    return video


def centre_x(frame: np.ndarray) -> float:
    """Where the bright square is, horizontally (brightness-weighted)."""
    weight = np.clip(frame[..., 0].astype(float) - 40, 0, None)
    return float((weight.sum(axis=0) * np.arange(frame.shape[1])).sum() / weight.sum())


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 9-frame 16 fps mp4 written by the app itself, carrying a recipe of its own."""
    path = tmp_path_factory.mktemp("source") / "clip.mp4"
    write_video(moving_square(), path, FPS, {"workflow": "i2v", "params": {"seed": 7}}, macro_block_size=2)
    return path


def run_job(tmp_path, job, on_event=None):
    record = Job("job-1", "interpolate")
    if on_event is not None:
        record.subscribe(lambda event: on_event(record, event))
    outdir = tmp_path / "job-1"
    outdir.mkdir()
    return interpolate.run(JobContext(record, outdir), None, job), outdir, record


@pytest.mark.parametrize("factor,method", [(2, "minterpolate"), (4, "blend")])
def test_n_frames_become_n_minus_1_times_k_plus_1_at_k_times_the_fps(tmp_path, source, factor, method):
    job = interpolate.prepare({"factor": factor, "method": method}, video=str(source))
    result, outdir, record = run_job(tmp_path, job)

    video = outdir / "video.mp4"
    assert result.outputs == [str(video)]
    frames = read_frames(video)
    assert len(frames) == (FRAMES - 1) * factor + 1
    assert frames[0].shape == (HEIGHT, WIDTH, 3)
    with imageio.get_reader(video) as reader:
        assert reader.get_meta_data()["fps"] == FPS * factor
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                            "stream=nb_read_frames,r_frame_rate", "-of", "csv=p=0", str(video)],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert probe == f"{FPS * factor}/1,{(FRAMES - 1) * factor + 1}"

    originals = read_frames(source)
    for i, original in enumerate(originals):  # kept where they were, within the codec's tolerance
        assert np.abs(frames[i * factor].astype(int) - original.astype(int)).mean() < 3
    # Per-pair progress: one step per original interval, ending at n−1.
    steps = [e.step for e in record._events if isinstance(e, ProgressEvent) and e.stage == "interpolating"]
    assert steps == list(range(FRAMES))

    meta = read_metadata(video)
    assert meta["params"] == {"factor": factor, "method": method}
    assert (meta["frames"], meta["fps"], meta["width"], meta["height"]) == ((FRAMES - 1) * factor + 1,
                                                                            FPS * factor, WIDTH, HEIGHT)
    assert meta["source"]["frames"] == FRAMES and meta["source"]["recipe"]["params"] == {"seed": 7}
    assert (outdir / "meta.json").is_file()


def test_new_frames_lie_between_their_neighbours():
    """minterpolate moves the square half way; blend cross-fades (two half-bright squares)."""
    video = moving_square(5)
    moved = interpolation.interpolate(video, 2, "minterpolate")
    faded = interpolation.interpolate(video, 2, "blend")
    for pair in range(4):
        middle = (centre_x(video[pair]) + centre_x(video[pair + 1])) / 2
        average = (video[pair].astype(int) + video[pair + 1]) / 2
        assert abs(centre_x(moved[2 * pair + 1]) - middle) < 1.0
        assert np.abs(moved[2 * pair + 1] - average).max() > 30  # moved, not cross-faded
        assert np.abs(faded[2 * pair + 1] - average).max() < 4
    assert len(interpolation.interpolate(video[:2], 4, "minterpolate")) == 5  # the shortest video too


def test_a_single_frame_or_a_non_video_is_refused_naming_the_field(tmp_path):
    still = tmp_path / "still.mp4"
    write_video(moving_square(1), still, FPS, macro_block_size=2)
    with pytest.raises(InvalidParams) as refused:
        interpolate.prepare({}, video=str(still))
    assert set(refused.value.errors) == {"video"} and "1 frame" in refused.value.errors["video"]

    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(InvalidParams) as refused:
        interpolate.prepare({}, video=str(text))
    assert set(refused.value.errors) == {"video"} and "not a readable video" in refused.value.errors["video"]

    with pytest.raises(InvalidParams) as refused:
        interpolate.prepare({"factor": 3}, video=None)
    assert set(refused.value.errors) == {"factor"}
    with pytest.raises(InvalidParams) as refused:
        interpolate.prepare({}, video=None)
    assert set(refused.value.errors) == {"video"}


def test_stop_between_pairs_leaves_nothing_half_written(tmp_path, source):
    job = interpolate.prepare({"factor": 4}, video=str(source))

    def stop_at_pair_3(record, event):
        if isinstance(event, ProgressEvent) and event.stage == "interpolating" and event.step == 3:
            record.cancel()

    with pytest.raises(Cancelled):
        run_job(tmp_path, job, stop_at_pair_3)
    assert list((tmp_path / "job-1").iterdir()) == []


def test_a_queued_job_runs_without_a_model_and_keeps_its_recipe(services, source):
    """Through services and the runner, as the API and the tab submit it: no library model is needed."""
    job = services.queue(interpolate.WORKFLOW, interpolate.prepare({"factor": 2, "method": "blend"}, video=str(source)))
    finished = list(job.events(timeout=120))[-1]
    assert isinstance(finished, FinishedEvent) and finished.status == DONE, finished.error
    video = finished.result.outputs[0]
    assert len(read_frames(video)) == (FRAMES - 1) * 2 + 1
    record = services.history.get(job.id)
    assert record["status"] == DONE and record["outputs"] == [video]
    assert interpolate.SPEC.validate(read_metadata(video)["params"]) == {"factor": 2, "method": "blend"}


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_models):
    process, url, _ = start_app(make_demo_home(tmp_path_factory.mktemp("interpolate-app"), demo_models))
    yield url
    process.terminate()
    process.wait(30)


def test_the_api_interpolates_an_upload_and_refuses_a_single_frame(app, source, tmp_path):
    client = Client(app, verbose=False)
    video, meta = client.predict({"factor": 4}, handle_file(str(source)), api_name="/interpolate")
    path = video["video"] if isinstance(video, dict) else video
    assert len(read_frames(path)) == (FRAMES - 1) * 4 + 1
    assert (meta["frames"], meta["fps"], meta["params"]) == ((FRAMES - 1) * 4 + 1, FPS * 4,
                                                             {"factor": 4, "method": "minterpolate"})

    still = tmp_path / "still.mp4"
    write_video(moving_square(1), still, FPS, macro_block_size=2)
    with pytest.raises(AppError, match="video: has 1 frame"):
        client.predict({"factor": 2}, handle_file(str(still)), api_name="/interpolate")


@pytest.mark.skipif(os.environ.get("DIFFBOX_SKIP_BROWSER") == "1", reason="DIFFBOX_SKIP_BROWSER=1: skipped on request")
def test_the_tab_interpolates_an_upload_and_the_video_plays(app, source, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        try:
            page.goto(app)
            page.get_by_role("tab", name="Interpolate").click()
            page.set_input_files("#interpolate-video input[type=file]", str(source))
            page.locator("#param-factor input").filter(visible=True).click()  # ×2 / ×4: a dropdown
            page.get_by_role("option", name="4", exact=True).click()
            page.click("#interpolate-generate")
            video = page.locator("#interpolate-interpolated video")
            expect(page.locator("#interpolate-status")).to_contain_text("Done.", timeout=90_000)
            expect(video).to_be_visible()
            assert media_duration(video) == pytest.approx(((FRAMES - 1) * 4 + 1) / (FPS * 4), abs=0.05)
            page.get_by_role("button", name="Metadata").filter(visible=True).click()
            metadata = page.locator("#interpolate-metadata").inner_text()
            assert re.search(r'"factor"\s*:\s*4\b', metadata) and re.search(r'"frames"\s*:\s*33\b', metadata)
        finally:
            page.screenshot(path=str(tmp_path / "interpolate-tab.png"), full_page=True)
            browser.close()
