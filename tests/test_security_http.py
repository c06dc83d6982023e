"""The public surface, attacked from outside as on a pod: what the file routes serve, which file
arguments are opened, who must log in, how fast a password can be guessed, and what another site's
page may do with the owner's login.

Three launched apps: `app` (bound to 127.0.0.1: file routes, file arguments, the fuzz test, one-time
exports, /pin, DNS rebinding), `open_pod` (bound to 0.0.0.0 with no --auth: a generated password,
the login throttle, cross-site requests and cookies, the upload limit and cleaner) and one with
--no-auth. Everything goes through HTTP or gradio_client, as an attacker's script would; a browser
from another site is in test_security_browser.py.
"""

import json
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from test_app import ROOT, app_env, start_app

from conftest import make_demo_home

HF_CANARY = "hf_" + "Cn4ry" * 8
EXPORT_CANARY = "hf_" + "0ldExp0rt" * 4
CONFIG_CANARY = "canary-preset-7f3a"
# The one sentence every refused file argument gets, whatever the path is (or is not).
REFUSED = "must be a file uploaded to this app (or one of its own outputs)"
SMALL_I2V = {"width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 1, "seed": 5,
             "prompt": "a square drifting"}
SMALL_SVI = {"width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 1, "num_clips": 1}
STUDIO_ORIGIN = "https://studio.example:8443"  # DIFFBOX_ALLOWED_ORIGINS of the loopback app: a local proxy's name
QWEN_INPAINT = {"mode": "inpaint", "num_inference_steps": 1, "seed": 3, "prompt": "repaint", "strength": 1.0,
                "match_input_size": True}


def canary_pixels() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """Private files outside the home, as other users' files on a shared box."""
    folder = tmp_path_factory.mktemp("outside")
    Image.fromarray(canary_pixels()).save(folder / "canary.png")
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (0, 0, 8, 8))
    mask.save(folder / "mask.png")
    (folder / "canary.json").write_text(json.dumps(
        {"version": 1, "presets": [{"workflow": "i2v", "name": CONFIG_CANARY, "params": {"seed": 1}}]}))
    (folder / "subdir").mkdir()
    return folder


def make_home(root: Path, demo_models) -> Path:
    home = make_demo_home(root, demo_models)
    return home


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_models, outside):
    root = tmp_path_factory.mktemp("sec-app")
    home = make_home(root, demo_models)
    (home / "tokens.json").write_text(json.dumps({"hf": HF_CANARY}))
    (home / "tokens.json").chmod(0o600)
    exports = home / "cache" / "exports"  # what an earlier version kept: a with-token export
    exports.mkdir(parents=True)
    (exports / "diffbox-config-20250101-000000-with-tokens.json").write_text(json.dumps({"tokens": {"hf": EXPORT_CANARY}}))
    outputs = home / "outputs"
    (outputs / "manual").mkdir(parents=True)
    Image.new("RGB", (40, 40), (10, 200, 30)).save(outputs / "manual" / "start.png")  # an output, for chaining
    (outputs / "leak-tokens.json").symlink_to(home / "tokens.json")
    (outputs / "leak.png").symlink_to(outside / "canary.png")
    upload_dir = root / "gradio-tmp"
    env = app_env(GRADIO_TEMP_DIR=str(upload_dir), DIFFBOX_ALLOWED_ORIGINS=STUDIO_ORIGIN)
    process, url, output = start_app(home, env=env)
    yield {"url": url, "home": home, "output": output, "upload_dir": upload_dir}
    process.terminate()
    process.wait(30)


def call(url: str, api_name: str, *data, http: httpx.Client | None = None, timeout: float = 120):
    """One call through Gradio's HTTP API: ("complete", outputs) or ("error", message)."""
    http = http or httpx.Client(timeout=timeout)
    started = http.post(f"{url}gradio_api/call/{api_name}", json={"data": list(data)})
    if started.status_code != 200:
        return "http", started.status_code
    event_id = started.json()["event_id"]
    stream = http.get(f"{url}gradio_api/call/{api_name}/{event_id}", timeout=timeout).text
    kind, payload = re.findall(r"event: (\w+)\ndata: (.*)", stream)[-1]
    payload = json.loads(payload)
    return kind, (payload or {}).get("error") if kind == "error" else payload


def private_files(app) -> dict[str, Path]:
    home = app["home"]
    files = {"tokens": home / "tokens.json", "log": home / "logs" / "diffbox.log"}
    files.update({f"db/{p.name}": p for p in (home / "db").glob("*.json")})
    return files


def route_variants(app, target: Path) -> list[str]:
    """Every way of naming `target` to Gradio's file routes that we know of."""
    home, outputs = app["home"], app["home"] / "outputs"
    relative = target.relative_to(home)
    return [
        f"gradio_api/file={target}",
        f"gradio_api/file/{target}",
        f"file={target}",
        f"gradio_api/file={outputs}/../{relative}",
        f"gradio_api/file={outputs}/%2e%2e/{relative}",
        f"gradio_api/file={quote(str(target), safe='')}",
        f"gradio_api/file={app['upload_dir']}/../{'../' * 12}{str(target).lstrip('/')}",
        f"gradio_api/file=file://{target}",
        f"gradio_api/proxy=file://{target}",
        f"static/{'../' * 12}{str(target).lstrip('/')}",
        f"assets/{'..%2f' * 12}{str(target).lstrip('/')}",
    ]


def test_private_files_are_never_served_whatever_the_route(app):
    http = httpx.Client(timeout=10)
    served = []
    for name, target in private_files(app).items():
        assert target.is_file(), name
        secret = target.read_bytes()[:200]
        for route in route_variants(app, target):
            response = http.get(app["url"] + route)
            if response.status_code == 200 or (secret and secret in response.content):
                served.append((name, route))
    for link in ("leak-tokens.json", "leak.png"):  # symlinks in outputs/ pointing out of it
        response = http.get(f"{app['url']}gradio_api/file={app['home'] / 'outputs' / link}")
        if response.status_code == 200:
            served.append((link, "symlink"))
    assert not served
    everything = b"".join(http.get(app["url"] + r).content for r in ("", "config", "health", "gradio_api/info"))
    assert HF_CANARY.encode() not in everything and EXPORT_CANARY.encode() not in everything


def test_an_old_export_with_tokens_is_removed_at_start(app):
    assert not list((app["home"] / "cache").rglob("diffbox-config-*.json"))


def test_outputs_are_still_served(app):
    """The positive control: what a user fetches (a job's video) comes through."""
    client = Client(app["url"], verbose=False)
    video, meta = client.predict(SMALL_I2V, handle_file(str(app["home"] / "outputs" / "manual" / "start.png")), None,
                                 api_name="/i2v")
    assert Path(video).stat().st_size > 0 and meta["frames"] == 5
    record = next(j for j in client.predict(10, api_name="/history") if j["id"] == meta["job_id"])
    output = Path(record["outputs"][0])
    assert httpx.get(f"{app['url']}gradio_api/file={output}").content == output.read_bytes()


def test_the_home_path_is_not_shown_in_the_header_or_health(app):
    home = str(app["home"])
    if not httpx.get(app["url"] + "health").json()["models_loaded"]:  # a loaded model is where a path could show
        start = str(app["home"] / "outputs" / "manual" / "start.png")
        assert call(app["url"], "i2v", SMALL_I2V, start, None)[0] == "complete"
    health = httpx.get(app["url"] + "health")
    assert home not in health.text
    assert health.json()["models_loaded"] == ["demo/wan22-i2v"]  # the library's name, relative to models/
    config = httpx.get(app["url"] + "config").json()
    header = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "diffbox-header")
    assert "diffbox" in header["props"]["value"] and home not in header["props"]["value"]


def test_a_with_token_export_is_handed_over_once_and_not_kept(app):
    kind, outputs = call(app["url"], "config_export", True)
    assert kind == "complete"
    url, path = outputs[0]["url"], Path(outputs[0]["path"])
    first = httpx.get(url)
    assert first.status_code == 200 and json.loads(first.content)["tokens"]["hf"] == HF_CANARY
    assert httpx.get(url).status_code != 200 and not path.exists()
    assert not list(app["home"].rglob("diffbox-config-*.json"))  # nothing kept under the home


def test_a_handed_over_export_cannot_be_read_in_pieces(app):
    """HEAD and Range requests must not read the file while leaving it for another full download."""
    kind, outputs = call(app["url"], "config_export", True)
    assert kind == "complete"
    url, path = outputs[0]["url"], Path(outputs[0]["path"])
    head = httpx.head(url)
    assert head.status_code == 405 and path.exists()
    tail = httpx.get(url, headers={"Range": "bytes=21-"})
    assert tail.status_code == 200 and json.loads(tail.content)["tokens"]["hf"] == HF_CANARY  # all of it, once
    assert httpx.get(url, headers={"Range": "bytes=0-20"}).status_code not in (200, 206)
    deadline = time.monotonic() + 5  # deleted once the server has finished sending it
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not path.exists()


def test_no_public_endpoint_writes_an_export_but_config_export(app):
    """The Download button's first export is a private UI event, not /lambda_N in the API."""
    endpoints = httpx.get(app["url"] + "gradio_api/info").json()["named_endpoints"]
    for name, info in endpoints.items():
        if name.startswith("/lambda") and not info["parameters"]:
            kind, result = call(app["url"], name.lstrip("/"))
            assert "diffbox-config" not in json.dumps(result), (name, result)
    config = httpx.get(app["url"] + "config").json()
    button = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "config-download")
    writers = [d for d in config["dependencies"] if button in d["outputs"]]
    assert writers and all(d["api_name"].startswith("ui_config_") and d["api_visibility"] == "private"
                           for d in writers), [(d["api_name"], d["api_visibility"]) for d in writers]


@pytest.mark.parametrize("source,model_id", [
    ("hf", "../../x"), pytest.param("hf", "x" * 5000, id="hf-5000-chars"), ("hf", "x<img src=x onerror=alert(1)>/y"),
    ("hf", "a/b/c"), ("hf", "owner/name/../../etc"), ("civitai", "12a"), ("civitai", "1@x"), ("civitai", "../1"),
])
def test_pin_takes_only_ids_a_config_import_accepts(app, source, model_id):
    kind, message = call(app["url"], "pin", source, model_id, True)
    assert kind == "error" and "model_id" in message, message
    assert len(message) < 300 and "<img" not in message


def test_a_pinned_model_exports_into_a_config_that_imports(app, tmp_path):
    """A Civitai model_id is model[@version] on /pin as everywhere; the export lists it as id and revision."""
    client = Client(app["url"], verbose=False)
    try:
        for source, model_id in (("hf", "studio/wan-orbit_lora.v2"), ("civitai", "827184@2514310")):
            assert client.predict(source, model_id, True, api_name="/pin")["pinned"]
        export = tmp_path / "export.json"
        export.write_bytes(httpx.get(call(app["url"], "config_export", False)[1][0]["url"]).content)
        models = {(m["id"], m["revision"]) for m in json.loads(export.read_text())["models"]}
        assert {("studio/wan-orbit_lora.v2", ""), ("827184", "2514310")} <= models
        report = client.predict(handle_file(str(export)), api_name="/config_preview")
        assert report["version"] == 1
    finally:
        for source, model_id in (("hf", "studio/wan-orbit_lora.v2"), ("civitai", "827184")):
            client.predict(source, model_id, False, api_name="/pin")


def test_a_rebinding_host_name_is_refused_on_a_loopback_bind(app):
    """A DNS-rebinding page (its own name pointed at 127.0.0.1) is same-origin with itself: only Host tells."""
    port = httpx.URL(app["url"]).port
    for host in (f"rebind.attacker.example:{port}", "rebind.attacker.example", f"192.168.1.20:{port}"):
        page = httpx.get(app["url"] + "config", headers={"Host": host})
        assert page.status_code == 403, host
        export = httpx.post(app["url"] + "gradio_api/call/config_export", json={"data": [True]},
                            headers={"Host": host, "Origin": f"http://{host}"})
        assert export.status_code == 403 and HF_CANARY not in export.text, host
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "studio.example:8443"):
        assert httpx.get(app["url"] + "config", headers={"Host": host}).status_code == 200, host


def test_an_allowed_origin_and_the_apps_own_origin_may_call_it(app):
    port = httpx.URL(app["url"]).port
    for origin, host in ((f"http://127.0.0.1:{port}", f"127.0.0.1:{port}"),
                         (f"http://localhost:{port}", f"localhost:{port}"),
                         (STUDIO_ORIGIN, f"127.0.0.1:{port}"), (STUDIO_ORIGIN, "studio.example:8443")):
        response = httpx.post(app["url"] + "gradio_api/call/history", json={"data": [1]},
                              headers={"Host": host, "Origin": origin})
        assert response.status_code == 200, (origin, host)
    refused = httpx.post(app["url"] + "gradio_api/call/history", json={"data": [1]},
                         headers={"Origin": f"http://localhost:{port + 1}"})  # another port is another origin
    assert refused.status_code == 403


def refusals(app, api_name: str, make_args, values) -> list[str]:
    messages = []
    for value in values:
        kind, message = call(app["url"], api_name, *make_args(value))
        assert kind == "error", (api_name, value, message)
        messages.append(message)
    return messages


def bare_values(app, outside: Path) -> list:
    outputs = app["home"] / "outputs"
    return [str(outside / "canary.png"), str(outside / "missing.png"), str(outside / "subdir"),
            str(outside / "canary.json"), str(outputs / "leak.png"), f"{outputs}/../../../{outside.name}/canary.png",
            str(app["home"] / "tokens.json"), {"path": str(outside / "canary.png")},
            {"url": f"file://{outside / 'canary.png'}"}, f"file://{outside / 'canary.png'}"]


@pytest.mark.parametrize("api_name,field,make_args", [
    ("i2v", "image", lambda v: (SMALL_I2V, v, None)),
    ("i2v", "end_image", lambda v: (SMALL_I2V, None, v)),
    ("svi", "image", lambda v: (SMALL_SVI, v)),
    ("qwen_edit", "images", lambda v: ({"mode": "edit"}, [v], None, None)),
    ("qwen_edit", "mask", lambda v: (QWEN_INPAINT, [], v, None)),
    ("qwen_edit", "control_image", lambda v: ({"mode": "generate"}, [], None, v)),
    ("config_import", "file", lambda v: (v,)),
    ("config_preview", "file", lambda v: (v,)),
])
def test_a_bare_server_path_is_refused_with_one_sentence(app, outside, api_name, field, make_args):
    values = bare_values(app, outside)
    if api_name == "i2v" and field == "end_image":
        good = {"path": str(app["home"] / "outputs" / "manual" / "start.png")}
        make_args = lambda v: (SMALL_I2V, good, v)  # noqa: E731 - the start image is fine, the end image is not
    messages = refusals(app, api_name, make_args, values)
    assert len(set(messages)) == 1, set(messages)
    assert REFUSED in messages[0] and field in messages[0]
    assert CONFIG_CANARY not in messages[0] and "/" not in messages[0].replace(REFUSED, "")


def test_inpaint_never_returns_a_server_files_pixels(app, outside):
    """The probe's worst case: an inpaint job over a server file handed back its pixels outside the mask."""
    canary, editor = str(outside / "canary.png"), {"background": str(outside / "canary.png"),
                                                    "layers": [str(outside / "mask.png")], "composite": None}
    for images, mask in (([canary], str(outside / "mask.png")), ([canary], editor),
                         ([{"path": canary}], {"path": str(outside / "mask.png")})):
        kind, result = call(app["url"], "qwen_edit", QWEN_INPAINT, images, mask, None)
        if kind == "complete":
            with Image.open(result[0][0][0]["path"]) as image:
                pixels = np.asarray(image.convert("RGB").resize((64, 48)), dtype=np.int16)
            assert np.abs(pixels - canary_pixels())[16:, 16:].mean() > 20, "the server file's pixels came back"
        assert kind == "error" and REFUSED in result, result


def test_an_output_of_this_app_can_be_chained_by_path(app):
    kind, result = call(app["url"], "i2v", SMALL_I2V, str(app["home"] / "outputs" / "manual" / "start.png"), None)
    assert kind == "complete" and result[0][1]["frames"] == 5


def test_a_config_cannot_aim_a_model_or_lora_outside_models(app, tmp_path):
    doc = {"version": 1, "defaults": {"i2v": {"model": "/etc"}, "svi": {"svi_lora_high": "../../x.safetensors"}},
           "presets": [{"workflow": "qwen_edit", "name": "p", "params": {"loras": [{"name": "/root/x.safetensors"}]}},
                       {"workflow": "i2v", "name": "q", "params": {"model": "demo/wan22-i2v"}}]}
    path = tmp_path / "escaping.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(AppError) as caught:
        Client(app["url"], verbose=False).predict(handle_file(str(path)), api_name="/config_preview")
    message = str(caught.value)
    for field in ("defaults.i2v.model", "defaults.svi.svi_lora_high", "presets[0].params.loras"):
        assert f"{field}: must name a model inside models/" in message, message
    assert "presets[1]" not in message  # a name inside models/ is fine


def test_the_upload_route_keeps_files_inside_its_folder(app):
    response = httpx.post(app["url"] + "gradio_api/upload",
                          files={"files": ("../../../../evil.png", b"\x89PNG not really", "image/png")})
    assert response.status_code == 200
    (stored,) = response.json()
    assert Path(stored).resolve().is_relative_to(app["upload_dir"].resolve())


# Building blocks of file arguments an attacker might try: paths in every spelling, URLs, dicts.
def fuzz_values(app, outside: Path):
    home, outputs, uploads = app["home"], app["home"] / "outputs", app["upload_dir"]
    targets = [outside / "canary.png", outside / "canary.json", home / "tokens.json", outside / "subdir",
               outside / "nothing-here.png"]
    paths = st.sampled_from(targets).flatmap(lambda t: st.sampled_from([
        str(t), f"{outputs}/../../{t.relative_to(t.parents[1])}", f"{uploads}/{'../' * 8}{str(t).lstrip('/')}",
        quote(str(t)), f"file://{t}", f"http://127.0.0.1:1/gradio_api/file={t}",
        f"{app['url']}gradio_api/file={t}", "../" * 6 + str(t).lstrip("/"), str(t).replace("/", "//"),
        f"{outputs}/leak.png", f"~/{t.name}", f" {t}", f"{t}\x00.png"]))
    text = st.one_of(paths, st.text(min_size=1, max_size=40))
    meta = st.sampled_from([{}, {"meta": {"_type": "gradio.FileData"}}, {"meta": {}}])
    dicts = st.builds(lambda key, value, extra: {key: value, **extra},
                      st.sampled_from(["path", "url", "background", "image"]), text, meta)
    single = st.one_of(text, dicts)
    return st.one_of(single, st.lists(single, min_size=1, max_size=3),
                     st.builds(lambda b, layer: {"background": b, "layers": [layer], "composite": b}, single, single))


ENDPOINTS = [("config_preview", lambda v: (v,)), ("i2v", lambda v: (SMALL_I2V, v, None)),
             ("qwen_edit", lambda v: ({"mode": "edit"}, v if isinstance(v, list) else [v], None, None)),
             ("qwen_edit", lambda v: (QWEN_INPAINT, [], v, None)), ("svi", lambda v: (SMALL_SVI, v))]


def test_fuzzed_file_arguments_open_nothing_outside_uploads_and_outputs(app, outside):
    canary_json = (outside / "canary.json").read_text()
    seen: set[str] = set()

    @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(range(len(ENDPOINTS))), fuzz_values(app, outside))
    def attack(endpoint, value):
        api_name, make_args = ENDPOINTS[endpoint]
        kind, result = call(app["url"], api_name, *make_args(value), timeout=60)
        assert kind in ("error", "http"), (api_name, value, result)  # never a job run on a server file
        text = json.dumps(result)
        assert CONFIG_CANARY not in text and HF_CANARY not in text and canary_json not in text
        if kind == "error" and result is not None:
            seen.add(result)

    attack()
    # Every answer is the one sentence after the field's name: nothing about the path leaks.
    one_sentence = re.compile(r"(Please fix: |config refused, nothing was applied: )\w+(\[\d+\])?: " + re.escape(REFUSED))
    assert seen and all(one_sentence.fullmatch(message) for message in seen), seen


# --------------------------------------------------------------------------------------------
# Login: generated on a public bind, throttled, and --no-auth is loud
# --------------------------------------------------------------------------------------------

# The tests talk from 127.0.0.1, which stands for the RunPod proxy: the app tells uvicorn to trust no
# forwarded headers, so the throttle sees that address and reads X-Forwarded-For itself.
POD_HOST = "abcd1234-7860.proxy.runpod.net"
EVIL_ORIGIN = "https://evil.example"


@pytest.fixture(scope="module")
def open_pod(tmp_path_factory, demo_models):
    root = tmp_path_factory.mktemp("sec-pod")
    home = make_home(root, demo_models)
    upload_dir = root / "gradio-tmp"
    env = app_env(GRADIO_TEMP_DIR=str(upload_dir), DIFFBOX_MAX_UPLOAD_MB="1", DIFFBOX_UPLOAD_TTL_HOURS="0.001")
    process, url, output = start_app(home, "--host", "0.0.0.0", env=env)
    match = re.search(r"user 'diffbox', password '([^']+)'", output.read_text())
    assert match, output.read_text()
    yield {"url": url, "home": home, "output": output, "password": match.group(1), "upload_dir": upload_dir}
    process.terminate()
    process.wait(30)


def login(pod, password: str, client_ip: str, *, forwarded: str | None = None,
          http: httpx.Client | None = None) -> tuple[int, float]:
    """One login through "the proxy": it appended `client_ip` to what the client sent (or sends `forwarded`)."""
    started = time.monotonic()
    headers = {"X-Forwarded-For": forwarded or f"198.51.100.99, {client_ip}"}
    response = (http or httpx).post(pod["url"] + "login", data={"username": "diffbox", "password": password},
                                    headers=headers, timeout=120)
    return response.status_code, time.monotonic() - started


def logins_at_once(pod, password: str, client_ips: list[str]) -> list[tuple[int, float]]:
    with ThreadPoolExecutor(len(client_ips)) as pool:
        return list(pool.map(lambda ip: login(pod, password, ip), client_ips))


def test_a_public_bind_without_auth_requires_a_generated_password_printed_once(open_pod):
    with pytest.raises(Exception):
        Client(open_pod["url"], verbose=False).predict(1, api_name="/history")
    assert httpx.get(open_pod["url"] + "gradio_api/info").status_code == 401
    authed = Client(open_pod["url"], auth=("diffbox", open_pod["password"]), verbose=False)
    assert isinstance(authed.predict(1, api_name="/history"), list)
    assert open_pod["output"].read_text().count(open_pod["password"]) == 1
    assert open_pod["password"] not in (open_pod["home"] / "logs" / "diffbox.log").read_text()


def test_wrong_passwords_take_growing_time_per_client_and_success_resets(open_pod):
    attacker, bystander = "203.0.113.7", "203.0.113.8"
    times = []
    for _ in range(8):
        status, took = login(open_pod, "wrong-password", attacker)
        assert status == 400
        times.append(took)
    assert max(times[:3]) < 0.4, times  # a typo or two costs nothing
    assert times[-1] > times[-2] > times[-3] >= 0.4, times  # then each guess waits longer than the last
    status, took = login(open_pod, "wrong-password", bystander)
    assert status == 400 and took < 0.4  # another client behind the same proxy is not slowed
    status, _ = login(open_pod, open_pod["password"], attacker)
    assert status == 200  # the right password still gets in (after the wait), and clears the count
    assert login(open_pod, "wrong-password", attacker)[1] < 0.4


def test_forged_forwarded_addresses_do_not_escape_the_throttle(open_pod):
    """From 127.0.0.1 (a proxy, or anyone on the pod) X-Forwarded-For says whatever the sender likes: a lone
    public address each time must not become a fresh client to uvicorn, nor to the throttle."""
    times = []
    for index in range(80):  # a fresh forged client address every time, in both shapes
        forged = f"8.8.{index // 200}.{index % 200}" if index % 2 else None
        status, took = login(open_pod, "wrong-password", f"203.0.113.{100 + index}", forwarded=forged)
        assert status == 400
        times.append(took)
        if len(times) >= 3 and times[-1] > times[-2] > times[-3] >= 0.4:
            break
    else:
        pytest.fail(f"forged addresses guessed without growing delay: {times[-10:]}")
    assert login(open_pod, open_pod["password"], "203.0.113.250")[0] == 200  # and the owner still gets in


def test_a_throttled_login_does_not_stall_the_server(open_pod):
    for _ in range(7):
        login(open_pod, "wrong-password", "203.0.113.66")
    slow = threading.Thread(target=login, args=(open_pod, "wrong-password", "203.0.113.66"))
    slow.start()
    time.sleep(0.1)
    started = time.monotonic()
    assert httpx.get(open_pod["url"] + "health", timeout=10).status_code == 200
    assert time.monotonic() - started < 0.3 and slow.is_alive()
    slow.join()
    login(open_pod, open_pod["password"], "203.0.113.66")


def test_a_flood_of_wrong_passwords_never_locks_the_owner_out(open_pod):
    """The probe: a shared pool past its allowance, 20 wrong attempts waiting at once, and the owner's right
    password half a second later. Nobody is answered 429; the owner's browser, which logged in before, gets in
    at once, and a newcomer with the right password gets in after the shared wait."""
    owner = httpx.Client(timeout=120)
    assert login(open_pod, open_pod["password"], "192.0.2.10", http=owner)[0] == 200
    assert "diffbox-device" in owner.cookies
    flood = logins_at_once(open_pod, "wrong-password", [f"192.0.2.{100 + i}" for i in range(52)])
    assert [status for status, _ in flood] == [400] * 52
    with ThreadPoolExecutor(22) as pool:
        waiting = [pool.submit(login, open_pod, "wrong-password", f"198.18.0.{i}") for i in range(20)]
        time.sleep(0.5)
        returning = pool.submit(login, open_pod, open_pod["password"], "192.0.2.10", http=owner)
        newcomer = pool.submit(login, open_pod, open_pod["password"], "192.0.2.11")
        assert returning.result()[0] == 200 and returning.result()[1] < 1.5, returning.result()
        assert newcomer.result()[0] == 200, newcomer.result()
        assert [w.result()[0] for w in waiting] == [400] * 20
    assert newcomer.result()[1] >= 1.5  # the shared pool (2 s after 52 failures) still slowed the cookie-less one


def test_addresses_of_one_ipv6_network_count_as_one_client(open_pod):
    """An IPv6 client has a whole /64 to pick addresses from; a new one per guess must not reset the delay."""
    times = [login(open_pod, "wrong-password", f"2001:db8:7:1::{i + 1:x}")[1] for i in range(7)]
    assert max(times[:3]) < 0.4 and times[-1] > times[-2] >= 0.4, times
    assert login(open_pod, "wrong-password", "2001:db8:7:2::1")[1] < 0.4  # the next /64 is another client
    assert login(open_pod, open_pod["password"], "2001:db8:7:1::99")[0] == 200


def test_another_site_cannot_call_the_pod_with_the_owners_login(open_pod):
    """Gradio answers any Origin with CORS allow headers when Host is not localhost (the pod's proxy URL):
    a page elsewhere could call the API with the owner's cookie and read the answers."""
    http = authed_http(open_pod)
    endpoint = open_pod["url"] + "gradio_api/call/config_export"
    preflight = httpx.options(endpoint, headers={"Host": POD_HOST, "Origin": EVIL_ORIGIN,
                                                 "Access-Control-Request-Method": "POST",
                                                 "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 403 and not cors_headers(preflight), preflight.headers
    for origin in (EVIL_ORIGIN, "null", f"http://{POD_HOST}.evil.example", f"https://{POD_HOST}:8443"):
        refused = http.post(endpoint, json={"data": [True]}, headers={"Host": POD_HOST, "Origin": origin})
        assert refused.status_code == 403 and not cors_headers(refused), origin
    # the pod's own page, a page behind a proxy that rewrote Host, and scripts (no Origin) still work
    for headers in ({"Host": POD_HOST, "Origin": f"https://{POD_HOST}"},
                    {"X-Forwarded-Host": "pod.test:8443", "Origin": "https://pod.test:8443"}, {}):
        assert http.post(endpoint, json={"data": [False]}, headers=headers).status_code == 200, headers


def cors_headers(response: httpx.Response) -> list[str]:
    return [name for name in response.headers if name.lower().startswith("access-control-allow")]


def test_the_login_cookies_stay_on_this_site_and_logout_needs_this_site(open_pod):
    response = httpx.post(open_pod["url"] + "login", data={"username": "diffbox", "password": open_pod["password"]})
    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) >= 2 and all(re.search(r"samesite=(lax|strict)", c, re.I) for c in cookies), cookies
    assert not any(re.search(r"samesite=none", c, re.I) for c in cookies), cookies
    http = httpx.Client(timeout=30, cookies=response.cookies)
    refused = http.get(open_pod["url"] + "logout", headers={"Sec-Fetch-Site": "cross-site"}, follow_redirects=False)
    assert refused.status_code == 403
    assert http.get(open_pod["url"] + "gradio_api/info").status_code == 200  # still logged in


def test_the_throttle_remembers_a_bounded_number_of_clients(monkeypatch):
    """An attacker with endless addresses cannot grow the table without bound (checked on the middleware)."""
    import asyncio

    from diffbox.ui import login_throttle

    monkeypatch.setattr(login_throttle, "MAX_TRACKED", 50)

    async def wrong_password(scope, receive, send):
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def noop(message):
        pass

    throttle = login_throttle.LoginThrottle(wrong_password)
    scopes = [{"type": "http", "method": "POST", "path": "/login", "client": (f"198.51.{i // 250}.{i % 250}", 1),
               "headers": []} for i in range(500)]

    async def attack():
        for scope in scopes:
            await throttle(scope, None, noop)

    asyncio.run(attack())
    assert len(throttle._records) <= 50


def authed_http(pod) -> httpx.Client:
    http = httpx.Client(timeout=30)
    assert http.post(pod["url"] + "login", data={"username": "diffbox", "password": pod["password"]}).status_code == 200
    return http


def test_uploads_are_capped_and_cleaned_up(open_pod):
    http = authed_http(open_pod)
    too_big = http.post(open_pod["url"] + "gradio_api/upload", files={"files": ("big.png", b"\0" * 1_100_000)})
    assert too_big.status_code == 413
    small = http.post(open_pod["url"] + "gradio_api/upload", files={"files": ("small.json", b"{}")})
    (stored,) = small.json()
    assert Path(stored).is_file()
    deadline = time.monotonic() + 30  # DIFFBOX_UPLOAD_TTL_HOURS=0.001: about 4 s
    while Path(stored).exists():
        assert time.monotonic() < deadline, "the upload was never cleaned up"
        time.sleep(0.5)


def test_no_auth_on_a_public_bind_is_loud_and_open(tmp_path, demo_models):
    home = make_home(tmp_path, demo_models)
    process, url, output = start_app(home, "--host", "0.0.0.0", "--no-auth", env=app_env())
    try:
        assert isinstance(Client(url, verbose=False).predict(1, api_name="/history"), list)
        printed = output.read_text()
        assert "WARNING" in printed and "--no-auth" in printed and "password '" not in printed
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.parametrize("args,env,names", [
    (["--port", "abc"], {}, "--port"),
    ([], {"DIFFBOX_PORT": "abc"}, "DIFFBOX_PORT"),
    (["--auth", "nocolon"], {}, "--auth"),
    ([], {"DIFFBOX_AUTH": "nocolon"}, "DIFFBOX_AUTH"),
    ([], {"DIFFBOX_AUTH": "diffbox:{{ RUNPOD_SECRET_diffbox_password }}"}, "DIFFBOX_AUTH"),
    ([], {"DIFFBOX_MAX_UPLOAD_MB": "lots"}, "DIFFBOX_MAX_UPLOAD_MB"),
    ([], {"DIFFBOX_ALLOWED_ORIGINS": "studio.example"}, "DIFFBOX_ALLOWED_ORIGINS"),
    ([], {"DIFFBOX_ALLOWED_ORIGINS": "https://studio.example/app"}, "DIFFBOX_ALLOWED_ORIGINS"),
    (["--auth", "a:b", "--no-auth"], {}, "--no-auth"),
])
def test_malformed_flags_and_env_end_in_one_line_and_exit_2(tmp_path, args, env, names):
    result = subprocess.run([sys.executable, "app.py", "--home", str(tmp_path / "home"), *args], cwd=ROOT,
                            env=app_env(**env), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffbox: ") and names in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
