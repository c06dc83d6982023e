"""Another site, opened in the owner's browser, must not use the owner's login (headless Chromium).

The owner logs in on the app (bound to 0.0.0.0 as on a pod) at http://127.0.0.1:P; a page served
from http://localhost:Q — another site to the browser — then runs a script that asks the app for a
config export with tokens and tries to download it, with the owner's cookies (`credentials:
"include"`). The same script run on the app's own page gets the tokens, which proves the script and
the login work; from the other site it gets nothing. The app also works when opened by a name that
is not localhost (http://pod.test:P, mapped to 127.0.0.1 inside Chromium), as behind a pod's proxy. The browser allows third-party cookies, as stock Chrome does for many users (Playwright's
default contexts behave like incognito windows, which block them and would hide the attack).
Another pod's page is worse: proxy.runpod.net is not on the Public Suffix List, so
https://<attacker>-8000.proxy.runpod.net is the *same site* as the owner's pod and its frames and
<img> requests carry the owner's cookies. Those tests open the app as http://victim-7860.proxy.runpod.net:P
and the attacker's page as http://attacker-8000.proxy.runpod.net:Q (both mapped to 127.0.0.1 inside
Chromium), and tell Chromium to treat both as secure, as the real https addresses are: Chromium sends
fetch metadata (Sec-Fetch-*) only to secure origins.
Values shown from an uploaded config must stay text: a pixel server notes any fetch they would cause.
One app for the module; DIFFBOX_SKIP_BROWSER=1 skips these tests as in test_browser.py.
"""

import json
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from test_app import app_env, start_app
from test_browser import CHROMIUM, CHROMIUM_ARGS

from conftest import make_demo_home

pytestmark = pytest.mark.skipif(os.environ.get("DIFFBOX_SKIP_BROWSER") == "1",
                                reason="DIFFBOX_SKIP_BROWSER=1: browser tests skipped on request")

HF_CANARY = "hf_" + "Br0wserCanary" * 3
OWNER = ("owner", "a-long-owner-password-1234")
PROXY_NAME = "pod.test"  # what a pod's proxy URL looks like to the app: a Host that is not localhost

# What a hostile page would run: start a tokens export with the owner's cookies, read its result, fetch the file.
STEAL = """async app => {
  const seen = {};
  try {
    const started = await fetch(app + "gradio_api/call/config_export", {method: "POST", credentials: "include",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({data: [true]})});
    seen.status = started.status;
    const {event_id} = await started.json();
    const stream = await fetch(app + "gradio_api/call/config_export/" + event_id, {credentials: "include"});
    seen.stream = await stream.text();
    const url = (seen.stream.match(/"url":\\s*"([^"]+)"/) || [])[1];
    if (url) seen.file = await (await fetch(url, {credentials: "include"})).text();
  } catch (error) {
    seen.error = String(error);
  }
  try {  // a "simple" request needs no preflight: the browser sends it, cookies and all, whatever CORS says
    const blind = await fetch(app + "gradio_api/call/config_export", {method: "POST", credentials: "include",
      mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: JSON.stringify({data: [true]})});
    seen.blind = blind.type;
  } catch (error) {
    seen.blind_error = String(error);
  }
  return seen;
}"""


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_models):
    root = tmp_path_factory.mktemp("browser-sec")
    home = make_demo_home(root, demo_models)
    upload_dir = root / "gradio-tmp"
    process, url, output = start_app(home, "--host", "0.0.0.0", "--auth", ":".join(OWNER),
                                     env=app_env(HF_TOKEN=HF_CANARY, GRADIO_TEMP_DIR=str(upload_dir)))
    yield {"url": url, "home": home, "output": output, "upload_dir": upload_dir}
    process.terminate()
    process.wait(30)


class Noting(SimpleHTTPRequestHandler):
    """Serves its folder and notes every path asked for (a pixel's fetch shows up here)."""

    def do_GET(self):
        self.server.seen.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def other_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("other-site")
    (folder / "evil.html").write_text("<!doctype html><title>elsewhere</title><p>nothing to see</p>")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Noting, directory=str(folder)))
    server.seen, server.folder = [], folder
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def other_site(other_server):
    """http://localhost:Q/evil.html: a page on another site (localhost is not 127.0.0.1 to a browser)."""
    return f"http://localhost:{other_server.server_address[1]}/evil.html"


def open_browser(profile: Path, *args: str):
    """A Chromium profile of its own (not incognito) whose settings let third-party cookies through."""
    from playwright.sync_api import sync_playwright

    (profile / "Default").mkdir(parents=True)
    (profile / "Default" / "Preferences").write_text(json.dumps({"profile": {"cookie_controls_mode": 0,
                                                                              "block_third_party_cookies": False}}))
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                                args=[*CHROMIUM_ARGS, *args])
        yield context
        context.close()


@pytest.fixture
def context(tmp_path):
    yield from open_browser(tmp_path / "profile", f"--host-resolver-rules=MAP {PROXY_NAME} 127.0.0.1")


@pytest.fixture
def pods(tmp_path, app, other_server):
    """The owner's pod and an attacker's pod, both on proxy.runpod.net, in one browser (see the docstring)."""
    victim = app["url"].replace("127.0.0.1", "victim-7860.proxy.runpod.net")
    attacker = f"http://attacker-8000.proxy.runpod.net:{other_server.server_address[1]}/"
    secure = ",".join(url.rstrip("/") for url in (victim, attacker))
    for context in open_browser(tmp_path / "profile", "--host-resolver-rules=MAP *.proxy.runpod.net 127.0.0.1",
                                f"--unsafely-treat-insecure-origin-as-secure={secure}"):
        yield context, victim, attacker


def log_in(page, url: str) -> None:
    page.goto(url)
    page.get_by_label("username").fill(OWNER[0])
    page.get_by_label("password").fill(OWNER[1])
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#i2v-generate")


def test_another_site_cannot_read_the_owners_tokens(context, app, other_site, tmp_path):
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        log_in(page, app["url"])
        own = page.evaluate(STEAL, app["url"])
        assert HF_CANARY in own.get("file", ""), own  # the script works where it belongs: the app's own page

        page.goto(other_site)
        stolen = page.evaluate(STEAL, app["url"])
        assert HF_CANARY not in json.dumps(stolen), stolen
        assert "file" not in stolen and "stream" not in stolen, stolen

        page.goto(app["url"])  # and the owner is still logged in
        page.wait_for_selector("#i2v-generate")
    finally:
        page.screenshot(path=str(tmp_path / "browser-security.png"), full_page=True)


def test_the_app_works_under_a_proxy_host_name(context, app, tmp_path):
    """Host pod.test: Gradio's own CORS echo applies there; the page's requests carry Origin http://pod.test:P."""
    page = context.new_page()
    page.set_default_timeout(30_000)
    url = app["url"].replace("127.0.0.1", PROXY_NAME)
    try:
        log_in(page, url)
        own = page.evaluate(STEAL, url)
        assert HF_CANARY in own.get("file", ""), own
    finally:
        page.screenshot(path=str(tmp_path / "proxy-host.png"), full_page=True)


# What another pod's page does (the tester's probe): frame the logged-in app, and use <img> load/error as an
# oracle for which output files exist.
POD_PAGE = """<!doctype html><title>another pod</title>
<iframe id=app src="{victim}" width=900 height=500></iframe>
<script>
window.probes = {{}};
for (const [name, path] of Object.entries({{existing: "{existing}", missing: "{missing}"}})) {{
  const image = new Image();
  image.onload = () => window.probes[name] = "loaded";
  image.onerror = () => window.probes[name] = "error";
  image.src = "{victim}gradio_api/file=" + path;
}}
</script>"""


def test_a_page_on_another_pod_can_neither_frame_the_app_nor_probe_its_files(pods, app, other_server, tmp_path):
    from playwright.sync_api import expect

    context, victim, attacker = pods
    secret = app["home"] / "outputs" / "probe" / "secret.png"
    secret.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (250, 0, 0)).save(secret)
    (other_server.folder / "pod.html").write_text(POD_PAGE.format(
        victim=victim, existing=secret, missing=secret.with_name("nothing.png")))
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        log_in(page, victim)
        own = page.evaluate("url => fetch(url).then(r => r.status)", f"{victim}gradio_api/file={secret}")
        assert own == 200  # the owner's page reads the file: the probe below would see it if it could

        evil = context.new_page()
        evil.goto(attacker + "pod.html")
        evil.wait_for_function("() => Object.keys(window.probes).length == 2")
        assert evil.evaluate("window.probes") == {"existing": "error", "missing": "error"}  # no oracle
        framed = evil.frame_locator("#app")
        expect(framed.locator("#i2v-generate")).to_have_count(0, timeout=5_000)  # not drawn, so nothing to click
        evil.screenshot(path=str(tmp_path / "another-pod.png"))

        page.reload()  # and the owner is still logged in, on the app's own page
        page.wait_for_selector("#i2v-generate")
    finally:
        page.screenshot(path=str(tmp_path / "owner.png"), full_page=True)


def test_a_page_load_writes_no_export_and_opening_the_config_tab_does(context, app, tmp_path):
    """Every page load used to write an export (a file waiting 10 minutes to be downloaded, and a thread)."""
    from playwright.sync_api import expect

    def exports() -> int:
        return len(list(app["upload_dir"].glob("diffbox-handover-*")))

    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        log_in(page, app["url"])
        before = exports()
        for _ in range(3):
            page.reload()
            page.wait_for_selector("#i2v-generate")
        page.wait_for_timeout(2_000)  # the page-load events have run by now
        assert exports() == before
        page.get_by_role("tab", name="Config").click()
        expect(page.locator("#config-download")).to_be_enabled()
        assert exports() == before + 1
        with page.expect_download() as download:
            page.click("#config-download")
        assert json.loads(Path(download.value.path()).read_text())["version"] >= 1
    finally:
        page.screenshot(path=str(tmp_path / "config-tab.png"), full_page=True)


def test_values_from_an_uploaded_config_are_shown_as_text(context, app, other_server, tmp_path):
    """A config's values rendered as Markdown: `![x](http://…)` in a prompt made the browser fetch the address
    just by previewing the file; a preset's description did the same when the preset was loaded."""
    from playwright.sync_api import expect

    pixel = f"http://localhost:{other_server.server_address[1]}/PIXEL"
    config = {"version": 1, "defaults": {"i2v": {"prompt": f"![x]({pixel}-PREVIEW) <img src={pixel}-HTML>"}},
              "presets": [{"workflow": "i2v", "name": "**loud** <b>preset", "params": {"seed": 7},
                           "description": f"![y]({pixel}-PRESET)"}]}
    upload = tmp_path / "shared-config.json"
    upload.write_text(json.dumps(config))
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        log_in(page, app["url"])
        page.get_by_role("tab", name="Config").click()
        with page.expect_file_chooser() as chooser:
            page.click("#config-upload")
        chooser.value.set_files(str(upload))
        preview = page.locator("#config-preview")
        expect(preview).to_contain_text(f"![x]({pixel}-PREVIEW)")  # shown as it is written
        expect(preview).to_contain_text("**loud** <b>preset")
        assert preview.locator("img, b").count() == 0
        page.click("#config-apply")
        expect(page.locator("#config-apply")).to_be_disabled()

        page.reload()  # the presets list is read on page load
        page.wait_for_selector("#i2v-generate")
        page.click("#i2v-presets")
        page.locator("#i2v-preset-choice input").click()
        page.get_by_role("option", name="**loud** <b>preset").click()
        page.click("#i2v-preset-load")
        note = page.locator("#i2v-preset-note")
        expect(note).to_contain_text(f"![y]({pixel}-PRESET)")
        assert note.locator("img, b").count() == 0 and "**loud**" in note.inner_text()
        page.wait_for_timeout(1_000)
        assert not [path for path in other_server.seen if path.startswith("/PIXEL")], other_server.seen
    finally:
        page.screenshot(path=str(tmp_path / "config-preview.png"), full_page=True)
