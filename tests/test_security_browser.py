"""Another site, opened in the owner's browser, must not use the owner's login (headless Chromium).

The owner logs in on the app (bound to 0.0.0.0 as on a pod) at http://127.0.0.1:P; a page served
from http://localhost:Q — another site to the browser — then runs a script that asks the app for a
config export with tokens and tries to download it, with the owner's cookies (`credentials:
"include"`). The same script run on the app's own page gets the tokens, which proves the script and
the login work; from the other site it gets nothing. The app also works when opened by a name that
is not localhost (http://pod.test:P, mapped to 127.0.0.1 inside Chromium), as behind a pod's proxy. The browser allows third-party cookies, as stock Chrome does for many users (Playwright's
default contexts behave like incognito windows, which block them and would hide the attack).
One app for the module; DIFFBOX_SKIP_BROWSER=1 skips these tests as in test_browser.py.
"""

import json
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

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
    home = make_demo_home(tmp_path_factory.mktemp("browser-sec"), demo_models)
    process, url, output = start_app(home, "--host", "0.0.0.0", "--auth", ":".join(OWNER),
                                     env=app_env(HF_TOKEN=HF_CANARY))
    yield {"url": url, "home": home, "output": output}
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def other_site(tmp_path_factory):
    """http://localhost:Q/evil.html: a page on another site (localhost is not 127.0.0.1 to a browser)."""
    folder = tmp_path_factory.mktemp("other-site")
    (folder / "evil.html").write_text("<!doctype html><title>elsewhere</title><p>nothing to see</p>")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{server.server_address[1]}/evil.html"
    server.shutdown()


@pytest.fixture
def context(tmp_path):
    """A Chromium profile of its own (not incognito) whose settings let third-party cookies through."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path / "profile"
    (profile / "Default").mkdir(parents=True)
    (profile / "Default" / "Preferences").write_text(json.dumps({"profile": {"cookie_controls_mode": 0,
                                                                              "block_third_party_cookies": False}}))
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True,
            args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {PROXY_NAME} 127.0.0.1"])
        yield context
        context.close()


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
