"""Searching the job history: the full-text index over each job's words, kept in step with every write,
built once for a database from before search, and `/history_search` on a launched app."""

import json
import sqlite3
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from conftest import make_demo_home
from diffbox import store
from diffbox.store import DONE, FAILED, RUNNING, JobHistory
from test_app import app_env, start_app

FOX = {"prompt": "A red fox runs through deep snow", "negative_prompt": "blurry, watermark", "seed": 90210,
       "model": "Wan2.2-I2V-A14B", "loras": [{"name": "fox_fur_detail_v2", "weight_high": 1.0, "weight_low": 0.5}]}
CAFE = {"prompt": "a café on a rainy night", "seed": 7, "model": "Qwen-Image-Edit-2509", "loras": ["neon-glow"]}
SVI = {"prompt": "a lighthouse at dawn", "seed": 31337, "svi_lora_high": "SVI_Wan2.2-I2V_high_v2", "loras": []}


def ids(records):
    return [r["id"] for r in records]


@pytest.fixture
def history(tmp_path):
    history = JobHistory(tmp_path / "jobs.json")
    yield history
    history.close()


def test_words_of_the_prompt_lora_model_and_seed_find_the_job(history):
    fox = history.create("i2v", FOX)
    cafe = history.create("qwen_edit", CAFE)
    svi = history.create("svi", SVI)
    history.update(fox, status=DONE)
    for query in ("fox", "SNOW Fox", "fox*", "fur", "lora:fox", '"fox_fur_detail_v2"', "a14b", "model:wan2",
                  '"Wan2.2-I2V-A14B"', "90210", "seed:90210", "watermark", "negative:blurry", "status:done"):
        assert ids(history.search(query)) == [fox], query
    assert ids(history.search("cafe")) == [cafe]  # accents folded both ways
    assert ids(history.search("neon")) == [cafe]
    assert ids(history.search("lighthouse")) == [svi]
    assert ids(history.search("svi_wan2")) == [svi]  # SVI's named LoRA parameters count as LoRAs
    assert ids(history.search("qwen_edit")) == [cafe]
    assert ids(history.search("fox OR neon OR lighthouse")) == [svi, cafe, fox]  # newest first
    assert ids(history.search("fox OR neon", limit=1)) == [cafe]
    assert ids(history.search("seed:7")) == [cafe]  # a column narrows: 7 is no other job's seed
    assert history.search("otter") == []
    assert ids(history.search("")) == ids(history.list())


def test_a_change_after_the_job_is_written_is_searchable_and_the_old_words_are_gone(history):
    job = history.create("i2v", FOX)
    assert ids(history.search("status:queued")) == [job]
    history.update(job, status=RUNNING, started_at=time.time())
    history.update(job, status=FAILED, error="out of memory on the GPU")
    assert history.search("status:queued") == []
    assert ids(history.search("failed memory")) == [job]
    later = history.create("i2v", {**FOX, "prompt": "a grey wolf howling"})
    assert ids(history.search("wolf")) == [later]
    assert ids(history.search("prompt:fox")) == [job]


def test_a_malformed_query_says_which_field_and_why(history):
    history.create("i2v", FOX)
    for bad in ('"unclosed', "fox AND", "wan2.2-i2v", "nosuchfield:fox", "(fox"):
        with pytest.raises(ValueError, match=r"^query: .*double quotes"):
            history.search(bad)
    assert len(history.search("fox")) == 1  # the history keeps answering


def old_database(path, records):
    """A job database as versions before search wrote it: the jobs table only."""
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE jobs (id TEXT PRIMARY KEY, created_at REAL NOT NULL, workflow TEXT NOT NULL, "
                     "status TEXT NOT NULL, record TEXT NOT NULL);")
    db.executemany("INSERT INTO jobs VALUES (?, ?, ?, ?, ?)",
                   [(r["id"], r["created_at"], r["workflow"], r["status"], json.dumps(r)) for r in records])
    db.commit()
    db.close()


def old_records(count):
    return [{"id": f"20240101-000000-{n:06x}", "workflow": "i2v", "status": DONE, "created_at": 1_700_000_000.0 + n,
             "params": {**FOX, "prompt": f"old clip number{n}", "seed": n}, "outputs": [f"{n}.mp4"]}
            for n in range(count)]


def test_an_old_database_gains_the_index_at_start_and_keeps_every_record(tmp_path):
    records = old_records(500)
    old_database(tmp_path / "jobs.sqlite3", records)
    history = JobHistory(tmp_path / "jobs.json")
    try:
        assert history.count() == 500
        assert {r["id"]: r for r in history.list(limit=1000)} == {r["id"]: r for r in records}
        assert ids(history.search("number123")) == [records[123]["id"]]
        assert len(history.search("fox", limit=1000)) == 500
        new = history.create("svi", SVI)
        assert ids(history.search("lighthouse")) == [new]
    finally:
        history.close()
    # A second start finds the index in step and leaves it alone.
    again = JobHistory(tmp_path / "jobs.json")
    try:
        assert again.count() == 501 and ids(again.search("number499")) == [records[499]["id"]]
    finally:
        again.close()


def test_rows_an_older_version_wrote_after_the_index_are_indexed_at_the_next_start(tmp_path):
    history = JobHistory(tmp_path / "jobs.json")
    job = history.create("i2v", FOX)
    history.close()
    # Older versions wrote with INSERT OR REPLACE, which gives the row a new rowid and adds none to the index.
    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    row = json.loads(db.execute("SELECT record FROM jobs WHERE id = ?", (job,)).fetchone()[0])
    db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?)",
               (job, row["created_at"], "i2v", DONE, json.dumps({**row, "status": DONE, "error": "otterly"})))
    db.commit()
    db.close()
    reopened = JobHistory(tmp_path / "jobs.json")
    try:
        assert ids(reopened.search("otterly")) == [job] and ids(reopened.search("fox")) == [job]
    finally:
        reopened.close()


def test_without_a_search_index_the_history_still_works_and_search_says_why(tmp_path, monkeypatch):
    records = old_records(5)
    old_database(tmp_path / "jobs.sqlite3", records)
    monkeypatch.setattr(store, "_SEARCH_SCHEMA", "CREATE VIRTUAL TABLE IF NOT EXISTS job_search USING nosuchmodule (a)")
    history = JobHistory(tmp_path / "jobs.json")  # as with a SQLite built without FTS5
    try:
        job = history.create("i2v", FOX)
        history.update(job, status=DONE)
        assert history.count() == 6 and history.get(job)["status"] == DONE
        with pytest.raises(ValueError, match="^query: search is unavailable.*no such module"):
            history.search("fox")
    finally:
        history.close()
    monkeypatch.undo()
    again = JobHistory(tmp_path / "jobs.json")  # the next start builds it, the job written meanwhile included
    try:
        assert ids(again.search("fox", limit=10)) == [job, *reversed(ids(records))]
    finally:
        again.close()


# -- from outside: gradio_client against a launched `app.py --demo` -----------------------------------------


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_models):
    """An app started on a home whose job database is from before search."""
    home = make_demo_home(tmp_path_factory.mktemp("history-search"), demo_models)
    (home / "db").mkdir()
    old_database(home / "db" / "jobs.sqlite3", old_records(30))
    process, url, output = start_app(home, env=app_env())
    yield {"url": url, "output": output}
    process.terminate()
    process.wait(30)


def test_history_search_over_http_finds_old_jobs_newest_first_and_explains_a_bad_query(app):
    client = Client(app["url"], verbose=False)
    found = client.predict("number7 OR number21", 10, api_name="/history_search")
    assert ids(found) == ["20240101-000000-000015", "20240101-000000-000007"]
    assert found[0]["params"]["loras"][0]["name"] == "fox_fur_detail_v2"
    assert len(client.predict("lora:fox", 1000, api_name="/history_search")) == 30
    assert len(client.predict("", 5, api_name="/history_search")) == 5
    with pytest.raises(AppError, match=r"query: .*double quotes") as refused:
        client.predict('"wan2.2', 10, api_name="/history_search")
    assert "Traceback" not in str(refused.value)
    with pytest.raises(AppError, match="limit: must be a whole number"):
        client.predict("fox", "many", api_name="/history_search")
    assert len(client.predict("fox", 3, api_name="/history_search")) == 3  # still serving


def test_the_history_tab_table_shows_the_hits_with_the_job_id_its_selection_reads(history):
    from types import SimpleNamespace

    from diffbox.ui.history_tab import COLUMNS, history_rows

    fox = history.create("i2v", FOX)
    history.create("qwen_edit", CAFE)
    services = SimpleNamespace(history=history)
    rows = history_rows(services, "fur")
    assert len(rows) == 1 and len(rows[0]) == len(COLUMNS)
    assert rows[0][0] == fox and rows[0][COLUMNS.index("seed")] == 90210  # show() opens the job by rows[i][0]
    assert len(history_rows(services)) == 2
    with pytest.raises(ValueError, match="^query: "):
        history_rows(services, "fox AND")


def test_the_history_tab_search_box_fills_the_table_and_a_hit_refills_its_form(app, browser_page):
    """Headless Chromium, as tests/test_browser.py drives it: search, pick the hit, Use these settings."""
    from playwright.sync_api import expect

    page = browser_page
    page.goto(app["url"])
    expect(page.locator("#i2v-generate")).to_be_visible()
    page.get_by_role("tab", name="History").click()
    table = page.locator("#history-table")
    expect(table).to_contain_text("20240101-000000-00001d")  # every job before a search
    box = page.locator("#history-search textarea, #history-search input").first
    box.fill("number12")
    box.press("Enter")
    cells = table.get_by_role("gridcell").filter(visible=True)
    expect(cells.filter(has_text="20240101-000000-")).to_have_count(1)
    expect(table).to_contain_text("20240101-000000-00000c")
    cells.filter(has_text="20240101-000000-00000c").first.click()
    expect(page.locator("#history-details")).to_contain_text("old clip number12")
    page.click("#history-use-settings")
    prompt = page.locator("#param-prompt textarea").filter(visible=True)
    expect(prompt).to_have_value("old clip number12")
    page.get_by_role("tab", name="History").click()
    box.fill('"wan2.2')
    box.press("Enter")
    refused = page.locator(".toast-body").filter(has_text="query:").first
    expect(refused).to_be_visible(timeout=15_000)
    assert "double quotes" in refused.inner_text()
    # The last results stay on top: no error badge laid over them.
    hit = cells.filter(has_text="20240101-000000-00000c").first.bounding_box()
    on_top = page.evaluate("([x, y]) => document.elementFromPoint(x, y).innerText || ''",
                           [hit["x"] + hit["width"] / 2, hit["y"] + hit["height"] / 2])
    assert "20240101-000000-00000c" in on_top, on_top


def test_a_minus_word_leaves_jobs_out_and_sqlite_words_never_reach_the_user(history):
    snow = history.create("i2v", {"prompt": "a fox in deep snow"})
    rain = history.create("i2v", {"prompt": "a fox in the rain"})
    assert [r["id"] for r in history.search("fox -snow")] == [rain]
    assert [r["id"] for r in history.search("fox -rain")] == [snow]
    assert {r["id"] for r in history.search('fox "wan2.2-i2v" OR fox')} == {snow, rain}  # a quoted hyphen stays
    for query, says in (("fox -", "need a word on each side"), ("NOT fox", "need a word on each side"),
                        ("colour:red", "uses colour: as a field")):
        with pytest.raises(ValueError) as refused:
            history.search(query)
        assert str(refused.value).startswith("query: ") and says in str(refused.value), str(refused.value)
        assert "fts5" not in str(refused.value) and "no such column" not in str(refused.value)
