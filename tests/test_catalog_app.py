"""The catalog from outside: /catalog_refresh, /catalog_status, /catalog_refresh_model and /models_search over
gradio_client, then the Models tab in Chromium answering from the catalog with both hubs unreachable."""

from __future__ import annotations

import os

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from fake_hubs import RateLimit, fakes  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def hubs():
    from fake_hubs import FakeCivitai, FakeHF, FileHost

    files = FileHost("localhost")
    civitai, hf = FakeCivitai(files), FakeHF()
    hf.add_listing(1200)            # three pages of 500
    civitai.add_listing(250)        # three pages of 100
    hf.rate_limit = RateLimit(200, 1.0)  # advertised: the walk paces itself to it
    yield hf, civitai, files
    for server in (files, civitai, hf):
        try:
            server.close()
        except OSError:
            pass


@pytest.fixture(scope="module")
def app(hubs, tmp_path_factory, demo_models):
    from diffbox.services import Services
    from diffbox.settings import Settings, prepare_home
    from diffbox.ui.app import build_app

    hf, civitai, _ = hubs
    home = tmp_path_factory.mktemp("catalog-home")
    saved = {k: os.environ.get(k) for k in ("HF_ENDPOINT", "DIFFBOX_CIVITAI_URL")}
    os.environ.update(HF_ENDPOINT=hf.url, DIFFBOX_CIVITAI_URL=civitai.url)
    settings = Settings(home=home, demo=True)
    prepare_home(settings, env={})
    services = Services.start(settings)
    gradio_app = build_app(services)
    _, url, _ = gradio_app.launch(prevent_thread_lock=True, quiet=True)
    try:
        yield {"url": url, "client": Client(url, verbose=False), "services": services}
    finally:
        gradio_app.close()
        services.hub.close()
        services.history.close()
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def test_catalog_refresh_reports_in_the_issue_shape_and_search_answers_from_it(app, hubs):
    client = app["client"]
    before = client.predict(api_name="/catalog_status")
    assert before["models"] == 0 and before["completed_at"] is None and not before["running"]
    report = client.predict(api_name="/catalog_refresh")
    assert set(report) >= {"sources", "models", "added", "updated", "errors"}
    assert set(report["sources"]) == {"hf", "civitai"} and report["errors"] == []
    assert report["models"] == report["added"] == 1450 and report["updated"] == 0
    assert report["sources"]["hf"]["pages"] >= 3 and report["sources"]["civitai"]["pages"] >= 3
    status = client.predict(api_name="/catalog_status")
    assert status["models"] == 1450 and status["completed_at"] and status["last_report"]["added"] == 1450
    found = client.predict("civ100042x", "all", "any", "any", "downloads", False, False, api_name="/models_search")
    assert [(r["source"], r["id"], r["cached"], r["stale"]) for r in found] == [("civitai", "100042", True, False)]
    again = client.predict(api_name="/catalog_refresh")  # nothing changed on the hubs
    assert (again["added"], again["updated"], again["models"]) == (0, 0, 1450)


def test_refresh_one_model_over_the_api(app, hubs):
    hf, civitai, _ = hubs
    app["client"].predict(api_name="/catalog_refresh")
    civitai.models[3]["name"] = "Brand new name"
    fresh = app["client"].predict("civitai", str(civitai.models[3]["id"]), api_name="/catalog_refresh_model")
    assert fresh["name"] == "Brand new name"
    with pytest.raises(AppError, match="model_id"):
        app["client"].predict("civitai", "../../etc", api_name="/catalog_refresh_model")
    with pytest.raises(AppError, match="no model"):
        app["client"].predict("hf", "nobody/nothing", api_name="/catalog_refresh_model")


def test_models_tab_search_with_the_hubs_unreachable_returns_catalogued_results(app, hubs, browser_page):
    from playwright.sync_api import expect

    page = browser_page
    app["client"].predict(api_name="/catalog_refresh")
    for server in hubs:
        server.close()  # both hubs (and the file host) gone: connections are refused
    page.goto(app["url"])
    page.get_by_role("tab", name="Models").click()
    expect(page.locator("#hub-catalog-status")).to_contain_text("1,450 models")
    box = page.locator("#hub-query textarea, #hub-query input").first
    box.fill("civ100117x")  # a word only one model's description holds
    box.press("Enter")
    cards = page.locator("#hub-cards")
    expect(cards).to_contain_text("Civitai neon 100117", timeout=10_000)  # before any hub answered
    expect(cards).to_contain_text("catalogued")
    expect(page.locator("#hub-search-status")).to_contain_text("unreachable", timeout=30_000)
    expect(cards).to_contain_text("Civitai neon 100117")  # still there once the hubs failed
    page.locator(".hub-card-refresh").first.click()  # "refresh this model" with its hub gone: says so
    expect(page.locator(".toast-body").filter(has_text="cannot reach Civitai").first).to_be_visible(
        timeout=15_000)
    expect(cards).to_contain_text("Civitai neon 100117")  # the catalogued card stays
    box.fill("hft7k")  # an HF LoRA's trigger word (its card's instance_prompt)
    box.press("Enter")
    expect(cards).to_contain_text("wan-fog-lora-7", timeout=10_000)
