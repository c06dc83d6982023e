"""A pod (bound to 0.0.0.0) attacked from outside: who must log in, how fast a password can be guessed,
and what another site's page — or another pod's, the same *site* on proxy.runpod.net — may do with the
owner's login in the owner's browser.

Two launched apps: `open_pod` (no --auth: a generated password, the login throttle, cross-site and
same-site requests, cookies, /health, the upload limit and cleaner) and one with --no-auth. Everything
goes through HTTP or gradio_client, as an attacker's script would; a real browser on another pod's page
is in test_security_browser.py, the file routes and file arguments in test_security_http.py.
"""

import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from test_app import ROOT, app_env, start_app

from conftest import make_demo_home

# The tests talk from 127.0.0.1, which stands for the RunPod proxy: the app tells uvicorn to trust no
# forwarded headers, so the throttle sees that address and reads X-Forwarded-For itself.
POD_HOST = "abcd1234-7860.proxy.runpod.net"
EVIL_ORIGIN = "https://evil.example"


@pytest.fixture(scope="module")
def open_pod(tmp_path_factory, demo_models):
    root = tmp_path_factory.mktemp("sec-pod")
    home = make_demo_home(root, demo_models)
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
    home = make_demo_home(tmp_path, demo_models)
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


# --------------------------------------------------------------------------------------------
# Another pod's page: the same site as the owner's pod (proxy.runpod.net is no public suffix)
# --------------------------------------------------------------------------------------------

ATTACKS = [("same-site", "navigate", "iframe"), ("same-site", "no-cors", "image"), ("same-site", "no-cors", "script"),
           ("same-site", "cors", "empty"), ("cross-site", "navigate", "frame"), ("cross-site", "no-cors", "video")]


def fetch_metadata(site: str, mode: str, dest: str) -> dict:
    return {"Host": POD_HOST, "Sec-Fetch-Site": site, "Sec-Fetch-Mode": mode, "Sec-Fetch-Dest": dest}


def test_every_answer_says_no_other_site_may_frame_it(open_pod):
    http = authed_http(open_pod)
    answers = [http.get(open_pod["url"] + path) for path in ("", "config", "health", "gradio_api/info",
                                                             "gradio_api/file=/nothing/here.png", "no-such-page")]
    answers.append(http.post(open_pod["url"] + "gradio_api/call/history", json={"data": [1]},
                             headers={"Origin": EVIL_ORIGIN}))  # a refusal too
    answers.append(httpx.get(open_pod["url"]))  # and the login page
    for response in answers:
        assert response.headers.get("x-frame-options") == "SAMEORIGIN", (response.url, response.headers)
        assert "frame-ancestors 'self'" in response.headers.get("content-security-policy", ""), response.url


def test_a_page_on_another_pod_gets_nothing_but_a_link(open_pod, tmp_path):
    """Its frames and <img>/<script> GETs carry the owner's Lax cookie and no Origin: all refused alike,
    for a file that exists and one that does not (no load/error oracle); a link still opens the app."""
    http = authed_http(open_pod)
    image = tmp_path / "mine.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(image)
    (stored,) = http.post(open_pod["url"] + "gradio_api/upload", files={"files": ("mine.png", image.read_bytes())}).json()
    existing, missing = (f"{open_pod['url']}gradio_api/file={path}" for path in (stored, stored + ".nothing"))
    # Uploads here live 4 s (DIFFBOX_UPLOAD_TTL_HOURS): the file is read at once. The app's own page and
    # clients that send no fetch metadata (gradio_client, curl) get it.
    assert http.get(existing, headers=fetch_metadata("same-origin", "no-cors", "image")).content == image.read_bytes()
    assert http.get(existing, headers={"Host": POD_HOST}).content == image.read_bytes()
    for headers in (fetch_metadata(*attack) for attack in ATTACKS):
        answers = [http.get(url, headers=headers) for url in (existing, missing, open_pod["url"])]
        assert [a.status_code for a in answers] == [403] * 3, (headers, [a.status_code for a in answers])
        assert len({a.content for a in answers}) == 1 and image.read_bytes() not in answers[0].content
    # A link (from the RunPod console, another pod, a bookmark) opens the app, still logged in.
    for site in ("cross-site", "same-site", "none"):
        page = http.get(open_pod["url"], headers=fetch_metadata(site, "navigate", "document"))
        assert page.status_code == 200 and "i2v-generate" in page.text, site
    client = Client(open_pod["url"], auth=("diffbox", open_pod["password"]), verbose=False)
    assert isinstance(client.predict(1, api_name="/history"), list)


def test_health_names_no_job_to_a_caller_without_the_login(open_pod, tmp_path):
    """Job ids are output folder names: /health keeps its counts for everyone, the list for the owner."""
    image = tmp_path / "start.png"
    Image.new("RGB", (32, 32), (30, 120, 220)).save(image)
    client = Client(open_pod["url"], auth=("diffbox", open_pod["password"]), verbose=False)
    job = client.submit({"width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 200, "seed": 1},
                        handle_file(str(image)), None, api_name="/i2v")
    owner = authed_http(open_pod)
    try:
        deadline = time.monotonic() + 90
        while not (jobs := owner.get(open_pod["url"] + "health").json()["queue"].get("jobs")):
            assert time.monotonic() < deadline and not job.done(), f"the job never showed up: {job.status()}"
            time.sleep(0.1)
        job_id = jobs[0]["id"]
        stranger = httpx.get(open_pod["url"] + "health")
        assert stranger.status_code == 200 and job_id not in stranger.text
        health = stranger.json()
        assert health["ok"] and {"version", "device", "vram_total_mb", "vram_free_mb", "models_loaded"} <= set(health)
        assert health["queue"]["running"] + health["queue"]["waiting"] == 1 and "jobs" not in health["queue"]
    finally:
        job.cancel()
    deadline = time.monotonic() + 60
    while owner.get(open_pod["url"] + "health").json()["queue"]["jobs"]:
        assert time.monotonic() < deadline, "the job did not stop"
        time.sleep(0.2)
