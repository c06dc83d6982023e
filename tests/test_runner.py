"""The job runner on the real tiny Wan pipeline: lock, cancel within one step, history records."""

import threading
import time

import pytest
from PIL import Image

from conftest import read_frames

from diffbox.engine.runner import Cancelled, FinishedEvent, JobResult, ProgressEvent
from diffbox.params import InvalidParams
from diffbox.store import CANCELLED, DONE, FAILED

SMALL = {"width": 32, "height": 32, "num_frames": 5, "seed": 3, "prompt": "a red square drifting"}


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "start.png"
    Image.new("RGB", (48, 40), (200, 30, 30)).save(path)
    return str(path)


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_i2v_job_writes_a_decodable_video_and_records_everything(services, image):
    job = services.submit_i2v({**SMALL, "num_frames": 9, "num_inference_steps": 3}, image)
    events = list(job.events(timeout=120))
    finished = events[-1]
    assert isinstance(finished, FinishedEvent) and finished.status == DONE, finished.error
    steps = [(e.step, e.total) for e in events if isinstance(e, ProgressEvent) and e.stage == "denoising"]
    assert steps == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert any(e.eta_s is not None for e in events if isinstance(e, ProgressEvent))
    video = finished.result.outputs[0]
    frames = read_frames(video)
    assert len(frames) == 9 and frames[0].shape == (32, 32, 3)
    record = services.history.get(job.id)
    assert record["status"] == DONE and record["outputs"] == [video]
    assert record["params"]["seed"] == 3 and record["params"]["model"] == "demo/wan22-i2v"
    assert record["started_at"] <= record["finished_at"] and record["steps_done"] == 3
    assert (services.settings.outputs_dir / job.id / "meta.json").is_file()


def test_invalid_input_is_refused_before_any_job_exists(services, image, tmp_path):
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    with pytest.raises(InvalidParams) as caught:
        services.submit_i2v({"num_frames": 8}, str(not_an_image))
    assert set(caught.value.errors) == {"num_frames"}  # params are checked first
    with pytest.raises(InvalidParams) as caught:
        services.submit_i2v(SMALL, str(not_an_image))
    assert "image" in caught.value.errors and "not a readable image" in caught.value.errors["image"]
    with pytest.raises(InvalidParams, match="model"):
        services.submit_i2v({**SMALL, "model": "nowhere/else"}, image)
    assert services.history.list() == []


def test_concurrent_jobs_never_overlap_on_the_gpu(services, image):
    jobs = [services.submit_i2v({**SMALL, "num_inference_steps": 4}, image) for _ in range(3)]
    for job in jobs:
        assert job.wait(120).status == DONE
    records = sorted((services.history.get(j.id) for j in jobs), key=lambda r: r["started_at"])
    for earlier, later in zip(records, records[1:]):
        assert later["started_at"] >= earlier["finished_at"]


def test_cancel_stops_within_one_step_and_frees_the_lock_for_the_next_job(services, image):
    long_job = services.submit_i2v({**SMALL, "num_inference_steps": 200}, image)
    next_job = services.submit_i2v({**SMALL, "num_inference_steps": 2}, image)
    wait_for(lambda: long_job.steps_done >= 3)
    long_job.cancel()
    assert long_job.wait(60).status == CANCELLED
    assert next_job.wait(60).status == DONE
    first, second = services.history.get(long_job.id), services.history.get(next_job.id)
    assert first["status"] == CANCELLED and first["error"] == "stopped by the user"
    assert first["steps_done"] - first["steps_at_cancel"] <= 1
    assert first["steps_done"] < 200
    assert not (services.settings.outputs_dir / long_job.id / "video.mp4").exists()  # no decode after Stop
    assert second["started_at"] >= first["finished_at"]


def test_a_job_cancelled_while_waiting_never_starts(services, image):
    gate = threading.Event()

    def blocking(ctx):
        gate.wait(30)
        return JobResult()

    holder = services.runner.submit("test", {}, blocking)
    waiting = services.submit_i2v(SMALL, image)
    time.sleep(0.2)
    waiting.cancel()
    assert waiting.wait(10).status == CANCELLED
    gate.set()
    assert holder.wait(10).status == DONE
    record = services.history.get(waiting.id)
    assert record["status"] == CANCELLED and record["started_at"] is None


def test_a_failing_job_records_its_error_and_releases_the_lock(services, image):
    def broken(ctx):
        ctx.progress("thinking", 1, 2)
        raise RuntimeError("the GPU caught fire")

    failed = services.runner.submit("test", {"x": 1}, broken)
    assert failed.wait(10).status == FAILED
    record = services.history.get(failed.id)
    assert record["error"] == "RuntimeError: the GPU caught fire" and record["steps_done"] == 1
    assert services.submit_i2v(SMALL, image).wait(60).status == DONE


def test_cancelled_is_raised_from_the_step_callback(services):
    def work(ctx):
        callback = ctx.step_callback(10)
        callback(None, 0, 999, {})
        ctx.job.cancel()
        with pytest.raises(Cancelled):
            callback(None, 1, 998, {})
        raise Cancelled()

    job = services.runner.submit("test", {}, work)
    assert job.wait(10).status == CANCELLED
    assert services.history.get(job.id)["steps_done"] == 2


def test_waiting_jobs_start_first_come_first_served_and_health_shows_their_place(services):
    gate, started = threading.Event(), []

    def blocking(ctx):
        gate.wait(30)
        return JobResult()

    def noting(ctx):
        started.append(ctx.job_id)
        return JobResult()

    holder = services.runner.submit("test", {}, blocking)
    wait_for(lambda: holder.state == "running")
    line = [services.runner.submit("test", {"n": n}, noting) for n in range(4)]
    time.sleep(0.2)  # every waiting thread has polled the lock by now
    assert services.runner.waiting() == line
    queue = services.health()["queue"]
    assert queue["running"] == 1 and queue["waiting"] == 4
    assert {j["id"]: j["position"] for j in queue["jobs"]} == {holder.id: None, **{j.id: n + 1 for n, j in
                                                                                    enumerate(line)}}
    gate.set()
    for job in line:
        assert job.wait(10).status == DONE
    assert started == [job.id for job in line]
    records = [services.history.get(job.id) for job in line]
    assert [r["started_at"] for r in records] == sorted(r["started_at"] for r in records)
    assert all(r["timings"]["wait_s"] > 0.1 for r in records)  # the wait for the holder is measured


def test_a_full_line_refuses_the_next_job_with_a_sentence(services):
    from diffbox.engine.runner import JobRunner, QueueFull

    runner = JobRunner(services.history, services.settings.outputs_dir, gpu_lock=threading.Lock(), max_waiting=2)
    gate = threading.Event()
    holder = runner.submit("test", {}, lambda ctx: (gate.wait(30), JobResult())[1])
    wait_for(lambda: holder.state == "running")
    waiting = [runner.submit("test", {}, lambda ctx: JobResult()) for _ in range(2)]
    before = len(services.history.list())
    with pytest.raises(QueueFull, match="^2 jobs are already waiting for the GPU; try again when one has finished$"):
        runner.submit("test", {}, lambda ctx: JobResult())
    assert len(services.history.list()) == before  # a refused job leaves no record
    gate.set()
    assert [job.wait(10).status for job in [holder, *waiting]] == [DONE] * 3


def test_disk_errors_read_as_a_sentence_without_their_folder():
    import errno

    from diffbox.engine.runner import describe_error
    from diffbox.store import WriteFailed

    full = OSError(errno.ENOSPC, "No space left on device", "/tmp/gradio/3f2a/outputs/meta.json")
    assert describe_error(full) == "meta.json: the disk is full"
    assert describe_error(OSError(errno.EROFS, "Read-only file system")) == "the disk is read-only"
    assert describe_error(WriteFailed("could not write video.mp4: the disk is full")) == \
        "could not write video.mp4: the disk is full"


def test_a_handler_cancelled_while_its_input_is_checked_cancels_the_job_it_submits(services):
    import asyncio

    from diffbox.ui.jobs import submit_or_explain

    submitted = []

    def slow_start():
        time.sleep(0.5)  # decoding a large image, in the worker thread
        job = services.runner.submit("test", {}, lambda ctx: JobResult())
        submitted.append(job)
        return job

    async def handler_cancelled_at_once():
        task = asyncio.create_task(submit_or_explain(slow_start))
        await asyncio.sleep(0.1)
        task.cancel()  # what Gradio does when the page or the client goes away
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(handler_cancelled_at_once())
    wait_for(lambda: submitted, timeout=10)
    assert submitted[0].cancel_requested.is_set()
    assert submitted[0].wait(10).status in (CANCELLED, DONE)  # it may have started before the cancel landed
