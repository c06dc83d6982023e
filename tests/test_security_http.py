"""The public surface, attacked from outside: what the file routes serve, which file arguments are opened,
which of Gradio's routes answer without a login and what they do, and what a crafted path does to the
server's output.

One launched app, bound to 127.0.0.1 (file routes, file arguments, the fuzz test, one-time exports, /pin,
DNS rebinding, Gradio's open routes): loopback Host and peer, as behind a local reverse proxy, is where
Gradio's run history would use the server's own HF_TOKEN. Everything goes through HTTP or gradio_client,
as an attacker's script would; the login, the throttle and other sites' pages are in
test_security_pod.py and test_security_browser.py.
"""

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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

from test_app import app_env, start_app

from conftest import make_demo_home

HF_CANARY = "hf_" + "Cn4ry" * 8
EXPORT_CANARY = "hf_" + "0ldExp0rt" * 4
CONFIG_CANARY = "canary-preset-7f3a"
SERVER_TOKEN = "hf_" + "S3rverT0ken" * 3  # the server's HF_TOKEN
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


class HubRecorder(BaseHTTPRequestHandler):
    """A Hugging Face endpoint that knows nothing (404) and notes every request's path."""

    def answer(self):
        self.server.seen.append(self.path)
        self.send_response(404)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_HEAD = answer

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def fake_hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubRecorder)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_models, outside, fake_hub):
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
    env = app_env(GRADIO_TEMP_DIR=str(upload_dir), DIFFBOX_ALLOWED_ORIGINS=STUDIO_ORIGIN, HF_TOKEN=SERVER_TOKEN,
                  HF_ENDPOINT=f"http://127.0.0.1:{fake_hub.server_address[1]}")
    process, url, output = start_app(home, env=env)
    yield {"url": url, "home": home, "output": output, "upload_dir": upload_dir, "pid": process.pid}
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
    """The Download button's first export is a private UI event; no page-load refresh of a table or status line
    (Gradio's /lambda_N for a component whose value is a function) is an endpoint either."""
    endpoints = httpx.get(app["url"] + "gradio_api/info").json()["named_endpoints"]
    assert not [name for name in endpoints if name.startswith("/lambda")], sorted(endpoints)
    assert {"/i2v", "/models_search", "/catalog_refresh", "/prompt_library", "/history_search"} <= set(endpoints)
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
# Gradio's routes that answer without a login, crafted paths, exports piling up, private files' modes
# --------------------------------------------------------------------------------------------

def test_gradio_run_history_is_off_and_cannot_use_the_servers_token(app, fake_hub):
    """Gradio 6.31's run history took the server's HF_TOKEN for a loopback Host and peer (a local reverse
    proxy): anyone could list the owner's buckets, read their records and create buckets."""
    http = httpx.Client(timeout=10)
    before = len(fake_hub.seen)
    answers = [http.get(app["url"] + path).status_code for path in (
        "gradio_api/runs", "gradio_api/runs/", "gradio_api/run-history/buckets",
        "gradio_api/run-history/records?bucket_id=owner/private-bucket",
        "gradio_api/run-history/records/e/r/assets/a?bucket_id=owner/private-bucket", "gradio_api//run-history/buckets")]
    answers.append(http.post(app["url"] + "gradio_api/run-history/connect", json={"bucket_id": "owner/new-bucket"},
                             headers={"Authorization": f"Bearer {SERVER_TOKEN}"}).status_code)
    assert answers == [404] * 7
    assert fake_hub.seen[before:] == []  # nothing reached the hub, with the server's token or any other
    page = http.get(app["url"]).text
    assert '"run_history": false' in page.replace("'", '"') or '"run_history":false' in page


def test_custom_component_paths_print_nothing(app):
    """Gradio printed this route's path parameters to stdout before any check, where the generated password
    is printed: escape codes and fake lines, 60 KB a request, no login needed."""
    marker = "FAKE-PASSWORD-LINE"
    before = app["output"].stat().st_size
    for index in range(20):
        payload = quote(f"\x1b[2J{marker} user 'diffbox', password 'x{index}'" + "A" * 200, safe="")
        response = httpx.get(f"{app['url']}gradio_api/custom_component/{payload}/client/{payload}/{payload}")
        assert response.status_code == 404
    assert app["output"].stat().st_size - before < 200 and marker not in app["output"].read_text()


@pytest.mark.parametrize("path", [
    "gradio_api/file=/x%00y", "gradio_api/file/x%00y", pytest.param("gradio_api/file=" + "x" * 300, id="file-long-name"),
    pytest.param("static/" + "x" * 300, id="static-long-name"), pytest.param("assets/" + "y/" * 2100, id="long-path"),
    "gradio_api/heartbeat/%1b%5b31mred",
])
def test_a_path_no_file_has_gets_404_and_no_traceback(app, path):
    """The OS (or httpx) raised on these: 500, and some 2.5 KB of traceback in the server's output per request."""
    before = app["output"].read_text().count("Traceback")
    try:
        response = httpx.get(app["url"] + path, timeout=3)
        assert response.status_code == 404 and "Traceback" not in response.text, response.status_code
    except httpx.ReadTimeout:  # a heartbeat that was accepted streams on; the client goes away as a script would
        pytest.fail("the crafted heartbeat path was served")
    time.sleep(0.3)
    assert app["output"].read_text().count("Traceback") == before


def threads_of(pid: int) -> int:
    return int(re.search(r"Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))


def test_exports_that_are_never_downloaded_do_not_pile_up(app):
    """Each export used to start a 10-minute timer thread and keep its folder: 500 exports, 420 threads."""
    from diffbox.ui.handover import MAX_PENDING, PREFIX

    http = httpx.Client(timeout=30)
    threads = threads_of(app["pid"])
    for _ in range(MAX_PENDING + 16):
        assert call(app["url"], "config_export", False, http=http)[0] == "complete"
    assert threads_of(app["pid"]) <= threads + 8  # one sweeper (and a worker or two), not one per export
    assert len(list(app["upload_dir"].glob(PREFIX + "*"))) <= MAX_PENDING
    newest = call(app["url"], "config_export", False, http=http)[1][0]
    assert httpx.get(newest["url"]).status_code == 200  # the newest is still handed over


def test_the_job_database_and_the_log_are_the_owners_alone(app):
    """Under umask 022 db/jobs.sqlite3 and logs/diffbox.log were world-readable; tokens.json was already 0600."""
    home = app["home"]
    for folder in (home / "db", home / "logs"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    for path in (home / "db" / "jobs.sqlite3", home / "logs" / "diffbox.log"):
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))
