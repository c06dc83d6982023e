"""/svi and /svi_extend through gradio_client on `python app.py --demo`: clips arrive while the run
goes on, Stop keeps the finished clips and frees the GPU, Extend continues the video."""

import time

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from conftest import make_demo_home, read_frames
from test_app import start_app

SMALL = {"width": 32, "height": 32, "num_frames": 9, "num_inference_steps": 3, "seed": 21, "num_clips": 3,
         "prompts": ["a red square drifting", "it turns blue"]}


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_models):
    home = make_demo_home(tmp_path_factory.mktemp("svi-app"), demo_models)
    process, url, _ = start_app(home)
    yield url
    process.terminate()
    process.wait(30)


@pytest.fixture
def client(app):
    return Client(app, verbose=False)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("svi-img") / "anchor.png"
    Image.new("RGB", (48, 48), (200, 40, 90)).save(path)
    return str(path)


def follow(job, timeout=180):
    """Polls a gradio_client job; returns [(time first seen, output)] and the time it finished."""
    seen, deadline = [], time.monotonic() + timeout
    while not job.done():
        for output in job.outputs()[len(seen):]:
            seen.append((time.monotonic(), output))
        assert time.monotonic() < deadline, "the SVI job did not finish"
        time.sleep(0.02)
    ended = time.monotonic()
    seen += [(ended, output) for output in job.outputs()[len(seen):]]
    return seen, ended


def test_each_clip_is_delivered_before_the_run_ends_then_the_stitched_video(client, image):
    job = client.submit({**SMALL, "num_inference_steps": 10}, handle_file(image), api_name="/svi")
    seen, ended = follow(job)
    assert len(seen) == 4  # three clips, then the stitched video
    # The first clip was in the client's hands while the run went on (seen by polling before the job
    # ended, and before the last clip existed) — a delivery only at the end would see all four at once.
    first_clip_at, last_clip_at = seen[0][0], seen[2][0]
    assert first_clip_at < last_clip_at <= ended
    clips = [read_frames(path) for _, (path, _) in seen[:3]]
    assert [len(c) for c in clips] == [9, 4, 4]
    stitched, metadata = seen[3][1]
    assert np.array_equal(np.stack(read_frames(stitched)), np.concatenate(clips))
    assert metadata["clips"] == 3 and metadata["frames_added"] == 17
    assert [meta["clip"] for _, (_, meta) in seen[:3]] == [0, 1, 2]
    assert [meta["prompt"] for _, (_, meta) in seen[:3]] == SMALL["prompts"] + SMALL["prompts"][-1:]


def test_stop_after_clip_2_of_5_keeps_them_stitched_and_frees_the_gpu(app, client, image):
    job = client.submit({**SMALL, "num_clips": 5, "num_inference_steps": 8}, handle_file(image), api_name="/svi")
    deadline = time.monotonic() + 120
    while len(job.outputs()) < 2:
        assert time.monotonic() < deadline and not job.done(), "two clips never arrived"
        time.sleep(0.02)
    job_id = job.outputs()[0][1]["job_id"]
    job.cancel()
    deadline = time.monotonic() + 60
    while (record := {j["id"]: j for j in client.predict(20, api_name="/history")}[job_id])["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert record["status"] == "cancelled"
    stitched = record["outputs"][0]
    assert stitched.endswith("video.mp4") and record["metadata"]["clips"] in (2, 3)  # clip 3 may finish decoding
    assert len(read_frames(stitched)) == 9 + 4 * (record["metadata"]["clips"] - 1)
    assert httpx.get(app + "health").json()["queue"]["running"] == 0
    # The GPU lock was released: the next job runs to the end.
    _, metadata = client.predict({**SMALL, "num_clips": 1, "num_inference_steps": 1}, handle_file(image),
                                 api_name="/svi")
    assert metadata["clips"] == 1


def test_extend_continues_a_finished_video_with_new_prompts(client, image):
    first, metadata = client.predict({**SMALL, "num_clips": 2}, handle_file(image), api_name="/svi")
    job = client.submit(metadata["job_id"], {"prompts": ["now it flies away"], "num_clips": 2}, api_name="/svi_extend")
    seen, _ = follow(job)
    assert len(seen) == 3
    new_clips = [read_frames(path) for _, (path, _) in seen[:2]]
    assert [len(c) for c in new_clips] == [4, 4]
    stitched, extended = seen[2][1]
    whole = np.stack(read_frames(stitched))
    assert len(whole) == 13 + 8 and np.array_equal(whole[:13], np.stack(read_frames(first)))
    assert extended["resumed_from"] == metadata["job_id"] and extended["params"]["prompts"] == ["now it flies away"]
    assert extended["clip_seeds"] == [21 + k * 1_000_003 for k in (2, 3)]


def test_bad_params_name_the_field(client, image):
    with pytest.raises(AppError, match="num_motion_latents"):
        client.predict({**SMALL, "num_motion_latents": 3}, handle_file(image), api_name="/svi")
    with pytest.raises(AppError, match="job_id"):
        client.predict("no-such-job", {}, api_name="/svi_extend")
