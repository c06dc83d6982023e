"""The hub endpoints over gradio_client, on an app whose HF_ENDPOINT / DIFFBOX_CIVITAI_URL point at fakes."""

import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from fake_hubs import fakes, wan_lora  # noqa: F401 (fixture)

WAN_TAG = "base_model:adapter:Wan-AI/Wan2.2-I2V-A14B"


@pytest.fixture
def client(fakes, demo_home, monkeypatch):
    from diffbox.services import Services
    from diffbox.settings import Settings, prepare_home
    from diffbox.ui.app import build_app

    monkeypatch.setenv("HF_ENDPOINT", fakes.hf.url)
    monkeypatch.setenv("DIFFBOX_CIVITAI_URL", fakes.civitai.url)
    settings = Settings(home=demo_home, demo=True)
    prepare_home(settings, env={})
    services = Services.start(settings)
    app = build_app(services)
    _, url, _ = app.launch(prevent_thread_lock=True, quiet=True)
    try:
        yield Client(url, verbose=False)
    finally:
        app.close()
        services.hub.close()
        services.history.close()


def wait_done(client, download_id, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        state = next(d for d in client.predict(api_name="/downloads") if d["id"] == download_id)
        if state["state"] not in ("queued", "downloading", "verifying"):
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.1)


def test_search_download_library_and_pin_over_the_api(client, fakes):
    fakes.hf.add_repo("studio/wan-orbit-lora", {"orbit.safetensors": wan_lora(0.05)}, tags=["lora", WAN_TAG])
    fakes.civitai.add_model(1, 11, "Wan dolly zoom", {"dolly.safetensors": wan_lora(0.05, 1)})
    results = client.predict("", "all", "lora", "wan2.2-i2v", api_name="/models_search")
    assert {(r["source"], r["id"]) for r in results} == {("hf", "studio/wan-orbit-lora"), ("civitai", "1")}
    assert all(r["base_model"] == "wan2.2-i2v" and r["kind"] == "lora" for r in results)

    hf_id = client.predict("hf", "studio/wan-orbit-lora", "orbit.safetensors", api_name="/download")
    civitai_id = client.predict("civitai", "1", "", api_name="/download")
    for download_id in (hf_id, civitai_id):
        state = wait_done(client, download_id)
        assert state["state"] == "done" and state["bytes_done"] == state["bytes_total"] > 0
        assert {"id", "file", "bytes_done", "bytes_total", "state", "error"} <= set(state)

    library = {m["name"]: m for m in client.predict(api_name="/library")}
    assert library["loras/orbit.safetensors"]["source"] == "hf"
    assert library["loras/dolly.safetensors"]["model_id"] == "1" and library["demo/wan22-i2v"]["kind"] == "diffusers"
    pin = client.predict("civitai", "1", True, api_name="/pin")
    assert pin["pinned"] and pin["in_library"] == ["loras/dolly.safetensors"]
    assert {m["name"] for m in client.predict(api_name="/library") if m["pinned"]} == {"loras/dolly.safetensors"}
    assert client.predict(api_name="/variants") == []  # a demo folder and two LoRAs: no variant yet
    sha = fakes.hf.repos["studio/wan-orbit-lora"]["sha"]  # model@version, as /download takes it, on both hubs
    assert client.predict("hf", f"studio/wan-orbit-lora@{sha}", True, api_name="/pin")["revision"] == sha
    assert client.predict("civitai", "1@11", True, api_name="/pin")["revision"] == "11"
    with pytest.raises(AppError, match="model_id must be owner/name"):
        client.predict("hf", "studio/wan-orbit-lora@../main", True, api_name="/pin")


def test_user_fixable_errors_are_sentences_and_the_app_keeps_serving(client, fakes):
    fakes.civitai.add_model(1, 11, "Locked", {"locked.safetensors": wan_lora(0.05)}, needs_token=True)
    fakes.civitai.add_model(2, 22, "Old", {"old.ckpt": b"\x80\x04"}, fmt="PickleTensor")
    state = wait_done(client, client.predict("civitai", "1", "", api_name="/download"))
    assert state["state"] == "failed" and "needs a Civitai token" in state["error"]
    for args, message in [(("civitai", "2", ""), "pickles"), (("hf", "nobody/none", ""), "has no model"),
                          (("ftp", "x", ""), "unknown source")]:
        with pytest.raises(AppError, match=message) as caught:
            client.predict(*args, api_name="/download")
        assert "Traceback" not in str(caught.value)
    with pytest.raises(AppError, match="unknown kind"):
        client.predict("", "all", "sdxl-thing", "any", api_name="/models_search")
    assert client.predict(api_name="/library")  # still serving


def test_result_cards_escape_what_strangers_wrote_and_the_tab_renders_them():
    import gradio as gr
    from types import SimpleNamespace

    from diffbox.ui.models_tab import build_models_tab, card_html, download_rows

    hostile = {"source": "civitai", "id": "1", "version_id": "11", "name": "<script>alert(1)</script>",
               "author": "<b>x</b>", "downloads": 5, "rating": 1, "size": 2048, "base_model": "wan2.2-i2v",
               "kind": "lora", "thumbnail": "javascript:alert(1)", "nsfw": False, "url": "javascript:alert(2)",
               "files": [{"name": "a.safetensors"}, {"name": "b.safetensors"}],
               "description": "<img src=x onerror=alert(3)>", "cached": True, "stale": True, "catalogued_at": 1.0}
    card = card_html(hostile)
    assert "<script>" not in card and "javascript:" not in card and "&lt;script&gt;" in card
    assert "<img src=x" not in card and "&lt;img src=x onerror=alert(3)&gt;" in card
    assert "catalogued · stale, last confirmed" in card
    assert "2 KB" in card
    download = {"id": "d1", "file": "f.safetensors", "source": "hf", "state": "downloading", "bytes_done": 512,
                "bytes_total": 2048, "speed": 1024.0, "eta_s": 90.0, "error": None}
    hub = SimpleNamespace(downloads=SimpleNamespace(list=lambda: [download]),
                          library=SimpleNamespace(models=lambda: [], variants=lambda: []), tokens=SimpleNamespace(status=lambda s: "not set"),
                          catalog=SimpleNamespace(progress=lambda: {"models": 0, "completed_at": None, "running": False,
                                                                    "sources": {}, "last_report": None}))
    services = SimpleNamespace(hub=hub)
    assert download_rows(services) == [["d1", "f.safetensors", "hf", "downloading", "25%", "512 B / 2 KB",
                                        "1 KB/s", "00:01:30", ""]]
    with gr.Blocks() as tab:
        build_models_tab(services)
    [cards] = tab.renderables
    with gr.Blocks() as rendered:
        cards.fn([hostile, {**hostile, "source": "hf", "id": "o/n", "files": []}])
    assert sum(isinstance(b, gr.Button) for b in rendered.blocks.values()) == 6  # Download, Pin, Refresh per card
