"""The model catalog against local fake hubs holding thousands of models across pages: a refresh within the
rate limits, a second one that stores only what changed, a cut connection that resumes, malformed pages
skipped with a logged reason, and offline search afterwards."""

from __future__ import annotations

import json
import logging
import random
import time
from urllib.parse import urlencode

import pytest

from fake_hubs import RateLimit, fakes, hub_settings, start_hub  # noqa: F401 - fixtures

HF_COUNT, CIVITAI_COUNT = 2300, 2450  # pages of 500 (HF) and 100 (Civitai)
FAST = {"civitai": 0.02}  # Civitai advertises no limit: the fake's allows 10 per 0.2 s


@pytest.fixture
def filled(fakes):
    fakes.hf.add_listing(HF_COUNT)
    fakes.civitai.add_listing(CIVITAI_COUNT)
    fakes.hf.rate_limit = RateLimit(40, 1.0)       # advertised: the walk paces itself to 25 ms
    fakes.civitai.rate_limit = RateLimit(10, 0.2)  # not advertised: 429 + Retry-After past it
    return fakes


@pytest.fixture
def hub(start_hub, hub_settings):
    return start_hub(hub_settings, catalog_intervals=FAST)


def listing_requests(server, since: int = 0):
    return [r for r in server.log[since:] if r.path in ("/api/models", "/api/v1/models")]


def test_a_refresh_fetches_every_model_within_the_rate_limits(filled, hub):
    report = hub.catalog.refresh(timeout=120)
    assert report["errors"] == [] and report["models"] == report["added"] == HF_COUNT + CIVITAI_COUNT
    hf, civitai = report["sources"]["hf"], report["sources"]["civitai"]
    assert (hf["state"], civitai["state"]) == ("done", "done")
    assert hf["models"] == HF_COUNT and civitai["models"] == CIVITAI_COUNT
    assert civitai["pages"] >= CIVITAI_COUNT // 100 and hf["pages"] >= HF_COUNT // 500
    assert filled.hf.rate_limit.refused == 0 and filled.civitai.rate_limit.refused == 0  # never over a limit
    assert hf["rate_limited"] == civitai["rate_limited"] == 0
    assert set(report) >= {"sources", "models", "added", "updated", "errors"}
    assert hub.catalog.completed_at() is not None and not hub.catalog.due(24 * 3600)
    progress = hub.catalog.progress()
    assert not progress["running"] and progress["models"] == HF_COUNT + CIVITAI_COUNT


def test_a_second_refresh_adds_and_updates_only_what_changed(filled, hub):
    hub.catalog.refresh(timeout=120)
    model = filled.civitai.models[7]
    model["description"] = "<p>now with a new word: zephyrine</p>"
    filled.civitai.models[8]["stats"]["downloadCount"] += 1000
    next(iter(filled.hf.repos.values()))["likes"] += 5
    filled.civitai.add_listing(2, start_id=900000)
    filled.hf.add_listing(3, owner="newcomer")
    report = hub.catalog.refresh(timeout=120)
    assert (report["added"], report["updated"], report["errors"]) == (5, 3, [])
    assert report["models"] == HF_COUNT + CIVITAI_COUNT + 5
    [found] = hub.search("zephyrine", live=False).results
    assert found["id"] == str(model["id"])


def test_a_hub_over_its_limit_is_waited_for_not_hammered(filled, start_hub, hub_settings):
    hub = start_hub(hub_settings, catalog_intervals={"civitai": 0.0})  # ignores the limit until told by a 429
    report = hub.catalog.refresh(timeout=120)
    civitai = report["sources"]["civitai"]
    assert report["errors"] == [] and civitai["state"] == "done" and civitai["models"] == CIVITAI_COUNT
    assert civitai["rate_limited"] == filled.civitai.rate_limit.refused > 0
    # Each 429 waited the Retry-After: at most one refusal per window of 10 requests.
    assert filled.civitai.rate_limit.refused <= civitai["pages"] // 10 + 2


@pytest.mark.parametrize("source", ["hf", "civitai"])
def test_a_cut_connection_resumes_where_the_walk_stopped(filled, hub, source):
    server = getattr(filled, source)
    server.faults.pages[2] = ["cut"] * 3  # as many as the test hub's tries: this refresh gives up there
    first = hub.catalog.refresh(timeout=120)
    stats = first["sources"][source]
    assert stats["state"] == "stopped" and any("resumes" in e for e in first["errors"])
    per_page = 500 if source == "hf" else 100
    assert hub.catalog.store.count(source) == 2 * per_page  # the two pages before the cut, stored
    assert hub.catalog.due(24 * 3600)  # unfinished: still due
    before = len(server.log)
    second = hub.catalog.refresh(timeout=120)
    assert second["sources"][source]["state"] == "done" and second["errors"] == []
    count = HF_COUNT if source == "hf" else CIVITAI_COUNT
    assert hub.catalog.store.count(source) == count and second["added"] == count - 2 * per_page
    resumed = listing_requests(server, before)[0]
    cursor = resumed.arg("cursor")
    assert cursor is not None and (int(bytes.fromhex(cursor).decode()) if source == "hf" else int(cursor)) \
        == 2 * per_page  # page three first: pages one and two were not asked for again


def test_one_cut_is_retried_within_the_refresh(filled, hub):
    filled.civitai.faults.pages[4] = ["cut"]
    filled.hf.faults.pages[1] = [503]
    report = hub.catalog.refresh(timeout=120)
    assert report["errors"] == [] and report["models"] == HF_COUNT + CIVITAI_COUNT
    assert report["sources"]["civitai"]["retries"] == 1 and report["sources"]["hf"]["retries"] == 1


def test_a_malformed_page_is_skipped_with_a_logged_reason(filled, hub, caplog):
    filled.hf.faults.pages[1] = ["garbage"]       # not JSON; its Link header still names page three
    filled.civitai.faults.pages[3] = ["broken"]   # three items that are not models
    with caplog.at_level(logging.WARNING, logger="diffbox.hub.catalog"):
        report = hub.catalog.refresh(timeout=120)
    assert report["sources"]["hf"]["state"] == report["sources"]["civitai"]["state"] == "done"
    assert hub.catalog.store.count("hf") == HF_COUNT - 500  # only the malformed page is missing
    assert hub.catalog.store.count("civitai") == CIVITAI_COUNT - 3
    assert report["sources"]["civitai"]["skipped"] == 3 and report["sources"]["hf"]["skipped"] == 1
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "not a JSON list" in logged and "its id is not a number" in logged and "no published version" in logged
    assert any("not a JSON list" in e for e in report["errors"])


def test_with_the_hubs_stopped_search_finds_any_model_by_a_word_of_its_description(filled, hub):
    hub.catalog.refresh(timeout=120)
    for server in (filled.hf, filled.civitai, filled.files):
        server.close()
    rng = random.Random(5)
    for model in rng.sample(filled.civitai.models, 12):
        started = time.perf_counter()
        page = hub.search(f"civ{model['id']}x")  # a word only its description holds
        assert time.perf_counter() - started < 5  # the hubs refuse at once; nothing waits for a deadline
        assert [r["id"] for r in page.results] == [str(model["id"])]
        assert page.results[0]["cached"] and not page.results[0]["stale"]
        assert any("unreachable" in n for n in page.notes)
    for repo in rng.sample(list(filled.hf.repos.values()), 6):  # by its trigger word (the card's instance_prompt)
        [found] = hub.search(repo["cardData"]["instance_prompt"], "hf", live=False).results
        assert found["id"] == repo["id"] and found["kind"] == "lora" and found["base_model"] == "wan2.2-i2v"
    page = hub.search("orbit", "civitai", "lora", "wan2.2-i2v", limit=30, live=False)
    assert len(page.results) == 30 and page.cursors["catalog"] == "30"
    assert [r["downloads"] for r in page.results] == sorted((r["downloads"] for r in page.results), reverse=True)
    more = hub.search("orbit", "civitai", "lora", "wan2.2-i2v", limit=30, live=False, cursors=page.cursors)
    assert not {r["id"] for r in more.results} & {r["id"] for r in page.results}


def test_refresh_this_model_asks_its_hub_now(filled, hub):
    hub.catalog.refresh(timeout=120)
    model = filled.civitai.models[0]
    model["name"] = "Renamed on Civitai"
    assert hub.catalog.store.get("civitai", str(model["id"]))["name"] != "Renamed on Civitai"
    fresh = hub.catalog.refresh_model("civitai", f"{model['id']}@{model['modelVersions'][0]['id']}")
    assert fresh["name"] == "Renamed on Civitai" and fresh["cached"] and not fresh["stale"]
    repo = next(iter(filled.hf.repos.values()))
    repo["cardData"]["instance_prompt"] = "brandnewtrigger"
    assert hub.catalog.refresh_model("hf", repo["id"])["trained_words"] == ["brandnewtrigger"]
    assert [r["id"] for r in hub.search("brandnewtrigger", live=False).results] == [repo["id"]]
    filled.hf.add_repo("studio/carded-lora", {"README.md": b"---\nlicense: mit\n---\n# Carded\nA quixotic orbit.\n"},
                       tags=["lora"])
    carded = hub.catalog.refresh_model("hf", "studio/carded-lora")  # its model card's text becomes searchable
    assert "A quixotic orbit." in carded["description"] and "license" not in carded["description"]
    assert [r["id"] for r in hub.search("quixotic", live=False).results] == ["studio/carded-lora"]


def test_the_app_refreshes_at_start_when_the_catalog_is_older_than_a_day(filled, start_hub, hub_settings):
    first = start_hub(hub_settings, catalog_hours=24, catalog_intervals=FAST)
    for _ in range(600):  # started by the schedule, not by the test
        if first.catalog.last_report:
            break
        time.sleep(0.1)
    assert first.catalog.last_report["models"] == HF_COUNT + CIVITAI_COUNT
    first.close()
    before = len(filled.hf.log) + len(filled.civitai.log)
    again = start_hub(hub_settings, catalog_hours=24, catalog_intervals=FAST)  # a restart the same day
    time.sleep(0.5)
    assert len(filled.hf.log) + len(filled.civitai.log) == before and again.catalog.last_report is None
    assert again.search("orbit", live=False).results  # the catalog from before the restart


def test_a_listing_that_never_ends_or_is_refused_is_left_and_the_rest_is_walked(filled, hub):
    filled.civitai.faults.pages[0] = [400]  # the first Civitai listing refused outright
    original = filled.hf._list

    def looping(request):  # page two of every HF listing names itself as the next page
        reply = original(request)
        if request.arg("cursor"):
            query = urlencode([(k, v) for k, values in request.query.items() for v in values])
            reply.headers["Link"] = f'<{filled.hf.url}/api/models?{query}>; rel="next"'
        return reply

    filled.hf.routes = [(m, pattern, looping if fn == original else fn) for m, pattern, fn in filled.hf.routes]
    report = hub.catalog.refresh(timeout=120)
    assert any("does not end" in e for e in report["errors"]) and any("HTTP 400" in e for e in report["errors"])
    assert report["sources"]["civitai"]["state"] == report["sources"]["hf"]["state"] == "partial"
    assert hub.catalog.store.count("civitai") == 0 and hub.catalog.store.count("hf") == 1000  # pages one and two
    assert hub.catalog.completed_at() is not None  # both walks ended (with their errors): no endless retrying
    again = hub.catalog.refresh(timeout=120)  # a refused listing starts over next time (page one, not a cursor)
    assert again["sources"]["civitai"]["state"] == "done" and hub.catalog.store.count("civitai") == CIVITAI_COUNT


def test_a_full_disk_fails_the_refresh_with_a_sentence_and_keeps_the_catalog(filled, hub, monkeypatch):
    import errno

    hub.catalog.refresh(timeout=120)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hub.catalog.store, "add", full)
    report = hub.catalog.refresh(timeout=120)
    assert report["sources"]["hf"]["state"] == report["sources"]["civitai"]["state"] == "failed"
    assert all("could not be stored" in e and "disk is full" in e for e in report["errors"]), report["errors"]
    monkeypatch.undo()
    assert hub.catalog.store.count() == HF_COUNT + CIVITAI_COUNT and hub.search("orbit", live=False).results


def _models(count: int) -> list[dict]:
    return [{"source": "civitai", "id": str(n), "name": f"LoRA {n}", "author": "maker", "kind": "lora",
             "base_model": "wan2.2-i2v", "downloads": (n * 7919) % 5003, "description": f"common words w{n}x",
             "nsfw": n % 9 == 0} for n in range(count)]


def test_a_word_in_thousands_of_models_pages_in_the_same_order_as_a_plain_match(tmp_path, monkeypatch):
    from diffbox.hub.catalog_store import CatalogStore

    store = CatalogStore(tmp_path / "catalog.sqlite3")
    store.add(_models(2600))
    assert store._matches_many('"common"*')  # the downloads-index walk is the plan taken
    walked = [store.search("common", limit=40, offset=o)[0] for o in (0, 40, 2500)]
    monkeypatch.setattr(store, "_matches_many", lambda expression: False)  # the plain join
    joined = [store.search("common", limit=40, offset=o)[0] for o in (0, 40, 2500)]
    assert [[r["id"] for r in page] for page in walked] == [[r["id"] for r in page] for page in joined]
    assert len(walked[0]) == 40 and not any(r["nsfw"] for page in walked for r in page)
    store.close()


def test_a_catalog_from_before_prefix_indexes_is_indexed_again_and_still_found(tmp_path):
    import sqlite3

    from diffbox.hub.catalog_store import CatalogStore

    store = CatalogStore(tmp_path / "catalog.sqlite3")
    store.add(_models(50))
    store.close()
    db = sqlite3.connect(tmp_path / "catalog.sqlite3")  # as the first version made it: no prefix = '2 3'
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'catalog_search'").fetchone()[0]
    db.executescript("DROP TABLE catalog_search;" + sql.replace(", prefix = '2 3'", "") + ";"
                     "INSERT INTO catalog_search (catalog_search) VALUES ('rebuild');")
    db.close()
    store = CatalogStore(tmp_path / "catalog.sqlite3")
    assert [r["id"] for r in store.search("w17x")[0]] == ["17"] and len(store.search("comm", limit=100)[0]) == 44
    declared = store._db.execute("SELECT sql FROM sqlite_master WHERE name = 'catalog_search'").fetchone()[0]
    assert "prefix" in declared
    store.close()


def test_a_429_asking_for_years_stops_that_hub_at_once_and_the_other_is_walked(filled, hub):
    filled.civitai.rate_limit = RateLimit(0, 99_999_999)  # every request refused, "come back in three years"
    started = time.monotonic()
    report = hub.catalog.refresh(timeout=60)
    assert time.monotonic() - started < 30
    assert report["sources"]["civitai"]["state"] == "stopped" and report["sources"]["hf"]["state"] == "done"
    assert any("asked to wait 1,157 days" in e and "resumes" in e for e in report["errors"]), report["errors"]


def test_an_advertised_limit_of_hours_per_request_stops_that_hub_too(filled, hub):
    filled.hf.rate_limit = RateLimit(3, 100_000)  # "3 requests per 28 hours": a pace of 9 h per request
    started = time.monotonic()
    report = hub.catalog.refresh(timeout=60)
    assert time.monotonic() - started < 30 and report["sources"]["hf"]["state"] == "stopped"
    assert any("a request every 9 h" in e for e in report["errors"]), report["errors"]
    assert report["sources"]["civitai"]["state"] == "done"


def test_a_hub_that_pages_forever_stops_near_its_last_complete_size(filled, hub):
    hub.catalog.refresh(timeout=120)
    last_pages = hub.catalog.store.walk("civitai:base:Wan Video 2.2 I2V-A14B")["pages"]  # 25 pages of 100
    original = filled.civitai._search

    def endless(request):  # past the real models: two new made-up ones per page, and always a next page
        start = int(request.arg("cursor") or 0)
        if start + 100 < CIVITAI_COUNT or request.arg("baseModels") != "Wan Video 2.2 I2V-A14B":
            return original(request)
        filled.civitai.add_listing(2, start_id=5_000_000 + start)
        reply = original(request)
        reply.body = reply.body.replace(b'"metadata": {}', f'"metadata": {{"nextCursor": "{start + 100}"}}'.encode())
        return reply

    filled.civitai.faults.pages[0] = ["cut"] * 3  # a refresh that fails on page one: the cap must not forget 25
    assert hub.catalog.refresh(timeout=120)["sources"]["civitai"]["state"] == "stopped"
    filled.civitai.routes = [(m, pattern, endless if fn == original else fn) for m, pattern, fn in filled.civitai.routes]
    report = hub.catalog.refresh(timeout=300)
    walk = hub.catalog.store.walk("civitai:base:Wan Video 2.2 I2V-A14B")
    assert walk["pages"] == 2 * last_pages + 50 and any("does not end" in e for e in report["errors"])


def test_stop_keeps_what_was_stored_and_the_next_refresh_resumes(filled, start_hub, hub_settings):
    hub = start_hub(hub_settings, catalog_intervals={"civitai": 0.3})
    first = hub.catalog.refresh(timeout=120)
    assert first["sources"]["civitai"]["state"] == "done"
    future = hub.catalog.start_refresh()
    time.sleep(1.5)
    during = hub.catalog.progress()
    assert during["running"] and during["completed_at"] is not None  # "last complete refresh" stays shown
    assert hub.catalog.stop_refresh()
    stopped = future.result(timeout=30)
    assert stopped["sources"]["civitai"]["state"] == "stopped by you"
    assert hub.catalog.progress()["completed_at"] is not None  # the last complete refresh still counts
    assert not hub.catalog.stop_refresh()  # nothing running now


def test_models_no_hub_listed_for_a_month_are_pruned_after_a_complete_walk(filled, hub):
    old = {"source": "civitai", "id": "424242", "name": "Long gone", "kind": "lora", "base_model": "wan2.2-i2v"}
    hub.catalog.store.add([old], now=time.time() - 31 * 86400)
    hub.catalog.store.add([{**old, "source": "hf", "id": "gone/recently"}], now=time.time() - 2 * 86400)
    report = hub.catalog.refresh(timeout=120)
    assert report["sources"]["civitai"]["pruned"] == 1 and report["sources"]["hf"]["pruned"] == 0
    assert hub.catalog.store.get("civitai", "424242") is None
    assert hub.catalog.store.get("hf", "gone/recently")["stale"]  # kept, marked stale


def test_search_folds_case_accents_and_full_width_letters(tmp_path):
    from diffbox.hub.catalog_store import CatalogStore

    store = CatalogStore(tmp_path / "catalog.sqlite3")
    store.add([{"source": "civitai", "id": "1", "name": "ＯＲＢＩＴ Café shot", "kind": "lora"},
               {"source": "civitai", "id": "2", "name": "plain dolly", "kind": "lora"}])
    for query in ("orbit", "ｏｒｂｉｔ", "CAFE", "café", "orb caf"):
        assert [r["id"] for r in store.search(query)[0]] == ["1"], query
    assert [r["id"] for r in store.search("ｄｏｌｌｙ")[0]] == ["2"]
    store.close()


def test_a_civitai_page_with_only_next_page_is_followed_by_its_cursor_never_its_host(filled, hub):
    original = filled.civitai._search

    def next_page_only(request):  # metadata.nextPage alone, on another host: its cursor is taken, not its URL
        reply = original(request)
        data = json.loads(reply.body)
        cursor = data["metadata"].pop("nextCursor", None)
        if cursor:
            data["metadata"]["nextPage"] = f"http://169.254.169.254/api/v1/models?limit=100&cursor={cursor}"
        reply.body = json.dumps(data).encode()
        reply.headers.pop("Content-Length", None)
        return reply

    filled.civitai.routes = [(m, pattern, next_page_only if fn == original else fn)
                             for m, pattern, fn in filled.civitai.routes]
    report = hub.catalog.refresh(timeout=120)
    assert report["errors"] == [] and hub.catalog.store.count("civitai") == CIVITAI_COUNT
