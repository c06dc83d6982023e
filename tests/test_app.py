"""`python app.py --demo` as a user starts it, driven through gradio_client and plain HTTP."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from conftest import make_demo_home, read_frames

ROOT = Path(__file__).resolve().parents[1]
HF_SECRET = "hf_" + "Zx9" * 12
CIVITAI_SECRET = "c1v17a1" + "9f" * 12
PASSWORD_SECRET = "pw-" + "s3cr3t" * 3
UNREACHABLE_CONFIG = "http://127.0.0.1:9/diffbox-config.json"
SMALL = {"width": 32, "height": 32, "num_frames": 9, "seed": 11, "prompt": "a red square drifting"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIFFBOX_", "HF_", "CIVITAI_"))}
    env.update(GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", **extra)
    return env


def start_app(home: Path, *args: str, env: dict | None = None):
    port = free_port()
    log = open(home.parent / f"app-{port}.out", "w")
    process = subprocess.Popen([sys.executable, "app.py", "--demo", "--home", str(home), "--port", str(port), *args],
                               cwd=ROOT, env=env or app_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, Path(log.name).read_text()
        try:
            if httpx.get(url + "health", timeout=2).status_code == 200:
                return process, url, Path(log.name)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise AssertionError("app did not come up:\n" + Path(log.name).read_text())


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_models):
    """One app for the module, started on a home whose job database is corrupt (it must cope)."""
    home = make_demo_home(tmp_path_factory.mktemp("app"), demo_models)
    (home / "db").mkdir()
    (home / "db" / "jobs.json").write_text('{"jobs": {"1": {"id": "trunc')
    # An unreachable --config must not stop the app (a log line says why).
    env = app_env(HF_TOKEN=HF_SECRET, CIVITAI_TOKEN=CIVITAI_SECRET, DIFFBOX_CONFIG=UNREACHABLE_CONFIG)
    process, url, output = start_app(home, env=env)
    yield {"url": url, "home": home, "output": output}
    process.terminate()
    process.wait(30)


@pytest.fixture
def client(app):
    return Client(app["url"], verbose=False)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "start.png"
    Image.new("RGB", (64, 48), (30, 120, 220)).save(path)
    return str(path)


def history(client, limit=50):
    return {job["id"]: job for job in client.predict(limit, api_name="/history")}


def test_health_answers_json(app):
    health = httpx.get(app["url"] + "health").json()
    assert health["ok"] is True and health["version"] == "0.1.0" and health["device"] == "cpu"
    assert {"vram_total_mb", "vram_free_mb", "models_loaded", "queue"} <= set(health)
    assert health["queue"]["running"] == 0


def test_a_corrupt_database_was_moved_aside_and_the_app_started(app):
    aside = list((app["home"] / "db").glob("jobs.corrupt-*.json"))
    assert len(aside) == 1 and aside[0].read_text().startswith('{"jobs"')


def test_i2v_over_the_api_returns_a_decodable_mp4(client, image):
    video, metadata = client.predict(SMALL, handle_file(image), None, api_name="/i2v")
    frames = read_frames(video)
    assert len(frames) == 9 and frames[0].shape == (32, 32, 3)
    assert metadata["params"]["seed"] == 11 and metadata["frames"] == 9 and metadata["model"] == "demo/wan22-i2v"
    record = history(client)[metadata["job_id"]]
    assert record["status"] == "done" and record["params"] == metadata["params"]


def test_the_demo_model_takes_the_largest_sides_the_form_allows(client, image):
    """Its rotary table once held 32 positions per axis (side / 16): every side over 512 px crashed."""
    specs = {p["name"]: p for p in client.predict(api_name="/specs")["i2v"]}
    widest = {"width": specs["width"]["maximum"], "height": specs["height"]["minimum"]}
    tallest = {"width": specs["width"]["minimum"], "height": specs["height"]["maximum"]}
    assert widest["width"] > 512 and tallest["height"] > 512
    for size in (widest, tallest):
        video, metadata = client.predict({**SMALL, **size, "num_frames": 5, "num_inference_steps": 1},
                                         handle_file(image), None, api_name="/i2v")
        frames = read_frames(video)
        assert len(frames) == 5 and frames[0].shape == (size["height"], size["width"], 3)


def test_random_seed_is_recorded(client, image):
    _, metadata = client.predict({**SMALL, "seed": -1, "num_inference_steps": 1}, handle_file(image), None,
                                 api_name="/i2v")
    assert 0 <= metadata["params"]["seed"] < 2**32
    assert history(client)[metadata["job_id"]]["params"]["seed"] == metadata["params"]["seed"]


def test_invalid_params_get_one_clear_message_and_the_app_keeps_serving(app, client, image):
    with pytest.raises(AppError) as caught:
        client.predict({"width": 33, "num_frames": 8, "colour": "red"}, handle_file(image), None, api_name="/i2v")
    message = str(caught.value)
    assert "width: must be a multiple of 16" in message and "num_frames: must be 4n+1" in message
    assert "unknown parameter colour" in message and "Traceback" not in message
    bad_file = Path(image).with_suffix(".txt")
    bad_file.write_text("not an image")
    with pytest.raises(AppError, match="image: is not a readable image"):
        client.predict(SMALL, handle_file(str(bad_file)), None, api_name="/i2v")
    assert httpx.get(app["url"] + "health").json()["ok"]


def test_two_concurrent_jobs_run_one_after_the_other(client, image):
    jobs = [client.submit({**SMALL, "num_inference_steps": 6}, handle_file(image), None, api_name="/i2v")
            for _ in range(2)]
    ids = [job.result(timeout=120)[1]["job_id"] for job in jobs]
    records = sorted((history(client)[i] for i in ids), key=lambda r: r["started_at"])
    assert records[1]["started_at"] >= records[0]["finished_at"]


def test_cancel_stops_the_job_within_one_step_and_the_next_starts_after(app, client, image):
    long_job = client.submit({**SMALL, "num_inference_steps": 200}, handle_file(image), None, api_name="/i2v")
    deadline = time.monotonic() + 60
    while True:
        running = [j for j in httpx.get(app["url"] + "health").json()["queue"]["jobs"] if j["state"] == "running"]
        if running and running[0]["step"] >= 2:
            break
        assert time.monotonic() < deadline, "the long job never started"
        time.sleep(0.05)
    long_id = running[0]["id"]
    # Another user's job, waiting behind the long one.
    next_job = Client(app["url"], verbose=False).submit({**SMALL, "num_inference_steps": 2}, handle_file(image),
                                                        None, api_name="/i2v")
    time.sleep(0.3)  # let the second request reach the server's queue
    long_job.cancel()
    _, metadata = next_job.result(timeout=120)
    records = history(client)
    cancelled, after = records[long_id], records[metadata["job_id"]]
    assert cancelled["status"] == "cancelled"
    assert cancelled["steps_done"] - cancelled["steps_at_cancel"] <= 1 and cancelled["steps_done"] < 200
    assert after["status"] == "done" and after["started_at"] >= cancelled["finished_at"]


def idle(app, timeout=60):
    """Waits until the server runs and queues nothing (Gradio's queue included, via /health)."""
    deadline = time.monotonic() + timeout
    while (queue := httpx.get(app["url"] + "health").json()["queue"])["running"] or queue["waiting"]:
        assert time.monotonic() < deadline, queue
        time.sleep(0.1)


def wait_running(app, step=0, timeout=60) -> str:
    """The id of the running job once it has done `step` steps."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = httpx.get(app["url"] + "health").json()["queue"]["jobs"]
        running = [j for j in jobs if j["state"] == "running" and j["step"] >= step]
        if running:
            return running[0]["id"]
        assert time.monotonic() < deadline, f"no job reached step {step}: {jobs}"
        time.sleep(0.05)


def test_cancel_right_after_submit_stops_the_job_on_the_server(app, client, image):
    """README's `job = client.submit(...); job.cancel()`: the cancel leaves before the client knows its
    event id; the server must still stop that job within a step (or never start it)."""
    idle(app)
    before = set(history(client))
    job = client.submit({**SMALL, "num_inference_steps": 200}, handle_file(image), None, api_name="/i2v")
    assert job.cancel()
    time.sleep(1)  # the client's late /reset (the first moment it knows the event id) has reached the server
    idle(app, timeout=20)  # 200 steps take far longer than this
    new = [record for job_id, record in history(client).items() if job_id not in before]
    assert len(new) <= 1, new  # none: it was taken out of Gradio's queue before it started
    for record in new:
        assert record["status"] == "cancelled"
        assert record["steps_done"] - record["steps_at_cancel"] <= 1 and record["steps_done"] < 200
    time.sleep(1)
    assert set(history(client)) - before == {record["id"] for record in new}  # nothing started later


def test_cancelling_one_of_a_clients_jobs_leaves_its_others_running(app, client, image):
    """Gradio's own cancel stops a client's every job on an endpoint and ends only the named one: the
    others' job.result() waited forever. Here each cancel stops exactly its job."""
    idle(app)
    before = set(history(client))
    long_job = client.submit({**SMALL, "num_inference_steps": 200}, handle_file(image), None, api_name="/i2v")
    long_id = wait_running(app, step=1)
    dropped = client.submit({**SMALL, "num_inference_steps": 2, "seed": 1}, handle_file(image), None, api_name="/i2v")
    kept = client.submit({**SMALL, "num_inference_steps": 2, "seed": 2}, handle_file(image), None, api_name="/i2v")
    deadline = time.monotonic() + 30
    while httpx.get(app["url"] + "health").json()["queue"]["waiting"] < 2:
        assert time.monotonic() < deadline, "the two short jobs never reached the queue"
        time.sleep(0.05)
    assert dropped.cancel()  # a waiting job
    assert long_job.cancel()  # the running one
    _, metadata = kept.result(timeout=60)
    records = history(client)
    assert records[long_id]["status"] == "cancelled" and records[long_id]["steps_done"] < 200
    assert records[metadata["job_id"]]["status"] == "done" and metadata["params"]["seed"] == 2
    idle(app)
    new = {r["params"]["seed"]: r for job_id, r in history(client).items() if job_id not in before}
    assert new[2]["status"] == "done" and new[11]["status"] == "cancelled"
    if 1 in new:  # the dropped job was still waiting for the runner's GPU lock: cancelled there, unstarted
        assert new[1]["status"] == "cancelled" and new[1]["steps_done"] == 0 and new[1]["started_at"] is None


def test_a_script_that_cancels_one_of_two_jobs_exits(app, image, tmp_path):
    script = tmp_path / "cancel_one.py"
    script.write_text(f"""
import time, httpx
from gradio_client import Client, handle_file
client = Client({app["url"]!r}, verbose=False)
first = client.submit({{**{SMALL!r}, "num_inference_steps": 200}}, handle_file({image!r}), None, api_name="/i2v")
second = client.submit({{**{SMALL!r}, "num_inference_steps": 2}}, handle_file({image!r}), None, api_name="/i2v")
while not [j for j in httpx.get({app["url"]!r} + "health").json()["queue"]["jobs"] if j["step"] >= 1]:
    time.sleep(0.05)
first.cancel()
print("second:", second.result()[1]["frames"])
""")
    idle(app)
    result = subprocess.run([sys.executable, str(script)], env=app_env(), capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "second: 9" in result.stdout


def test_secrets_never_reach_the_logs(app, client, image):
    with pytest.raises(AppError):
        client.predict({**SMALL, "model": f"https://example.invalid/m?token={CIVITAI_SECRET}&x={HF_SECRET}"},
                       handle_file(image), None, api_name="/i2v")
    log_file = app["home"] / "logs" / "diffbox.log"
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any("request refused" in line["message"] for line in lines)  # the line was logged, redacted
    everything = log_file.read_text() + app["output"].read_text()
    for secret in (HF_SECRET, CIVITAI_SECRET):
        assert secret not in everything


def test_unknown_flag_is_refused_with_usage(tmp_path):
    result = subprocess.run([sys.executable, "app.py", "--turbo"], cwd=ROOT, env=app_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unrecognized arguments: --turbo" in result.stderr
    assert "usage: app.py" in result.stderr


def test_unwritable_home_is_refused_with_a_message(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=app_env(DIFFBOX_HOME=str(blocker / "home")),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "home folder" in result.stderr and "DIFFBOX_HOME" in result.stderr and "Traceback" not in result.stderr


def test_auth_protects_the_api(tmp_path, demo_models):
    home = make_demo_home(tmp_path, demo_models)
    process, url, output = start_app(home, "--auth", f"ann:{PASSWORD_SECRET}")
    try:
        with pytest.raises(Exception):
            Client(url, verbose=False).predict(1, api_name="/history")
        authed = Client(url, auth=("ann", PASSWORD_SECRET), verbose=False)
        assert authed.predict(1, api_name="/history") == []
    finally:
        process.terminate()
        process.wait(30)
    assert PASSWORD_SECRET not in output.read_text() + (home / "logs" / "diffbox.log").read_text()


def test_an_unreachable_config_is_logged_and_the_app_serves(app):
    lines = [json.loads(line) for line in (app["home"] / "logs" / "diffbox.log").read_text().splitlines()]
    refused = [line["message"] for line in lines if "--config/DIFFBOX_CONFIG not applied" in line["message"]]
    assert len(refused) == 1 and "cannot fetch http://127.0.0.1:9/diffbox-config.json" in refused[0]


def test_config_export_and_import_over_the_api(client, tmp_path):
    plain = json.loads(Path(client.predict(False, api_name="/config_export")).read_text())
    assert plain["version"] == 1 and "tokens" not in plain and set(plain["defaults"]) >= {"i2v"}
    with_tokens = Path(client.predict(True, api_name="/config_export")).read_text()
    assert json.loads(with_tokens)["tokens"] == {"hf": HF_SECRET, "civitai": CIVITAI_SECRET}

    refused = tmp_path / "refused.json"
    refused.write_text(json.dumps({"version": 1, "presets": [{"workflow": "i2v", "name": "../up"}]}))
    with pytest.raises(AppError, match=r"presets\[0\]\.name: must not contain /"):
        client.predict(handle_file(str(refused)), api_name="/config_import")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"version": 1, "presets": [{"workflow": "i2v", "name": "API preset",
                                                           "params": {"num_inference_steps": 3}}]}))
    preview = client.predict(handle_file(str(good)), api_name="/config_preview")
    assert preview["presets"]["added"] == ["i2v/API preset"] and not preview["applied"]
    report = client.predict(handle_file(str(good)), api_name="/config_import")
    assert report["applied"] and report["changes"] == 1
    assert client.predict(handle_file(str(good)), api_name="/config_import")["changes"] == 0
    presets = client.predict("i2v", api_name="/presets")
    assert presets[0]["name"] == "API preset" and any(p.get("shipped") for p in presets)


def test_share_without_auth_requires_a_generated_login_and_applies_config_at_start(tmp_path, demo_models):
    home = make_demo_home(tmp_path, demo_models)
    config = tmp_path / "pod.json"
    config.write_text(json.dumps({"version": 1, "defaults": {"i2v": {"num_inference_steps": 6}}}))
    # No internet for the share tunnel, deterministically: every outgoing request meets a closed port.
    offline = app_env(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
                      NO_PROXY="127.0.0.1,localhost", RUNPOD_POD_ID="pod7xyz")
    process, url, output = start_app(home, "--share", "--host", "0.0.0.0", "--config", str(config), env=offline)
    try:
        # Bound to every interface, Gradio's own URL (localhost) opens only on the server: the start line
        # names the pod's proxy address first. The login page says whose login it asks for.
        port = url.rstrip("/").rsplit(":", 1)[1]
        ready = next(line for line in output.read_text().splitlines() if line.startswith("diffbox ready:"))
        assert ready.startswith(f"diffbox ready: https://pod7xyz-{port}.proxy.runpod.net/")
        login_page = httpx.get(url).text
        assert "User: diffbox" in login_page and "printed once in the terminal" in login_page
        with pytest.raises(Exception):
            Client(url, verbose=False).predict(1, api_name="/history")
        printed = output.read_text()
        password = re.search(r"user 'diffbox', password '([^']+)'", printed).group(1)
        authed = Client(url, auth=("diffbox", password), verbose=False)
        specs = {p["name"]: p for p in authed.predict(api_name="/specs")["i2v"]}
        assert specs["num_inference_steps"]["default"] == 6  # --config applied at start
    finally:
        process.terminate()
        process.wait(30)
    printed = output.read_text()
    assert printed.count(password) == 1 and "could not create a Gradio share link" in printed
    assert password not in (home / "logs" / "diffbox.log").read_text()


def test_cancel_falls_back_to_gradios_route_when_its_internals_are_gone():
    """event_cancel reaches into Gradio 6.31's queue; this Gradio still has every piece, and an app
    without them gets Gradio's own route, the body untouched."""
    import asyncio

    import gradio as gr
    from gradio.routes import App

    from diffbox.ui.event_cancel import EventCancel, internals_present

    with gr.Blocks() as blocks:
        gr.Textbox()
    blocks.queue()
    assert internals_present(App.create_app(blocks))

    passed_on = []

    async def gradio_route(scope, receive, send):
        passed_on.append((await receive())["body"])

    body = b'{"event_id": "abc", "session_hash": "s", "fn_index": 0}'
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/gradio_api/cancel", "app": object()}
    asyncio.run(EventCancel(gradio_route)(scope, receive, None))
    assert passed_on == [body]

    class ChangedQueue:  # every name is there, but the events table is no longer a dict
        event_ids_to_events = pending_messages_per_session = pending_event_ids_session = None

        async def remove_from_queue(self, event_id):
            pass

    class ChangedApp:
        iterators, lock, iterators_to_reset = {}, None, set()

        def get_blocks(self):
            return type("Blocks", (), {"_queue": ChangedQueue()})()

    messages.append({"type": "http.request", "body": body, "more_body": False})
    asyncio.run(EventCancel(gradio_route)({**scope, "app": ChangedApp()}, receive, None))
    assert passed_on == [body, body]


def test_a_refused_request_prints_one_line_not_a_traceback(app, client, image, tmp_path):
    """The terminal is where the generated password was printed once: refusals must not scroll it away."""
    idle(app)
    printed_before = len(app["output"].read_text())
    bad_config = tmp_path / "bad.json"
    bad_config.write_text('{"version": 1, "colour": "red"}')
    for args, api_name in [(({"width": 33}, handle_file(image), None), "/i2v"),
                           ((handle_file(str(bad_config)),), "/config_import"),
                           (("ftp", "x", ""), "/download")]:
        with pytest.raises(AppError):
            client.predict(*args, api_name=api_name)
    time.sleep(0.5)
    printed = app["output"].read_text()[printed_before:]
    assert "Traceback" not in printed and printed.count("request refused") == 3, printed


def test_on_all_interfaces_the_start_line_and_the_login_page_say_where_and_who(tmp_path, demo_models):
    home = make_demo_home(tmp_path, demo_models)
    process, url, output = start_app(home, "--host", "0.0.0.0", env=app_env(RUNPOD_POD_ID="pod7xyz"))
    try:
        port = url.rstrip("/").rsplit(":", 1)[1]
        ready = next(line for line in output.read_text().splitlines() if line.startswith("diffbox ready:"))
        assert ready.startswith(f"diffbox ready: https://pod7xyz-{port}.proxy.runpod.net/")
        login_page = httpx.get(url).text
        assert "User: diffbox" in login_page and "printed once in the terminal" in login_page
    finally:
        process.terminate()
        process.wait(30)
