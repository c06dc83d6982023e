"""The prompt library: shipped and user snippets, their checks and atomic file, the config round trip, and
from outside: /prompt_library over gradio_client and the picker under the I2V prompt in Chromium."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from conftest import make_demo_home
from diffbox import config, portable, store
from diffbox.presets import PresetStore
from diffbox.prompt_library import PROMPT_CATEGORIES, PromptLibrary, SnippetError, insert, load_shipped
from diffbox.services import WORKFLOW_SPECS
from diffbox.workflows.i2v import WAN_NEGATIVE_PROMPT
from test_app import start_app

ROOT = Path(__file__).resolve().parents[1]
DOLLY = "the camera slowly dollies in toward the subject"  # shipped camera · Slow dolly-in


@pytest.fixture
def library(tmp_path):
    opened = PromptLibrary.open(tmp_path / "db")
    yield opened
    opened.close()


def user_file(library_dir: Path) -> dict:
    return json.loads((library_dir / "prompt_library.json").read_text())


# -- the store ------------------------------------------------------------------------------------


def test_the_shipped_library_covers_every_category_with_real_prompt_pieces():
    shipped = load_shipped()
    raw = json.loads((ROOT / "presets" / "prompts" / "prompt_library.json").read_text())
    assert len(shipped) == len(raw["snippets"])  # every entry passes the check, none is dropped
    for category in PROMPT_CATEGORIES:
        assert 8 <= sum(s["category"] == category for s in shipped) <= 15, category
    by_name = {(s["category"], s["name"]): s["text"] for s in shipped}
    assert by_name[("camera", "Slow dolly-in")] == DOLLY
    assert "orbit" in by_name[("camera", "Orbit shot")]
    assert "rim light" in by_name[("lighting", "Golden hour rim light")]
    assert by_name[("negative", "Wan default (Chinese)")] == WAN_NEGATIVE_PROMPT  # the one i2v defaults to
    assert by_name[("style", "Qwen-Image quality boost")] == "Ultra HD, 4K, cinematic composition."
    assert all(s["shipped"] for s in shipped)
    assert f"{len(shipped)} shipped" in (ROOT / "README.md").read_text()  # the feature list's count stays true


def test_your_snippets_join_the_shipped_ones_shadow_by_name_and_delete_back(library, tmp_path):
    library.save({"category": "camera", "name": "My push-in", "text": "slow push-in, 35mm lens"})
    library.save({"category": "camera", "name": "slow DOLLY-in", "text": "my own dolly"})  # shadows the shipped one
    cameras = library.list("camera")
    assert [s["name"] for s in cameras if not s["shipped"]] == ["My push-in", "slow DOLLY-in"]
    assert library.get("camera", "Slow dolly-in") == {"category": "camera", "name": "slow DOLLY-in",
                                                      "text": "my own dolly", "shipped": False}
    assert sum(s["name"].casefold() == "slow dolly-in" for s in cameras) == 1
    assert {s["category"] for s in library.list()} == set(PROMPT_CATEGORIES)
    library.save({"category": "camera", "name": "MY PUSH-IN", "text": "overwritten"})  # by name, any case
    assert [s for s in library.user_snippets() if s["text"] == "overwritten"] == [
        {"category": "camera", "name": "MY PUSH-IN", "text": "overwritten"}]
    assert len(user_file(tmp_path / "db")["snippets"]) == 2
    library.delete("camera", "slow dolly-in")
    assert library.get("camera", "Slow dolly-in")["text"] == DOLLY  # the shipped one is back
    with pytest.raises(SnippetError, match=r"^name: 'Slow dolly-in' ships with diffbox and cannot be deleted"):
        library.delete("camera", "Slow dolly-in")
    with pytest.raises(SnippetError, match=r"^name: there is no lighting snippet of yours named 'nope'"):
        library.delete("lighting", "nope")
    with pytest.raises(SnippetError, match=r"^category: must be one of style, lighting"):
        library.list("colour")


def test_rename_moves_your_snippet_and_a_rename_onto_another_name_keeps_one(library):
    library.save({"category": "style", "name": "Old", "text": "old text"})
    library.save({"category": "style", "name": "Other", "text": "other text"})
    library.save({"category": "lighting", "name": "New", "text": "renamed"}, replaces=("style", "Old"))
    assert library.user_snippets() == [{"category": "style", "name": "Other", "text": "other text"},
                                       {"category": "lighting", "name": "New", "text": "renamed"}]
    library.save({"category": "style", "name": "other", "text": "merged"}, replaces=("lighting", "New"))
    assert library.user_snippets() == [{"category": "style", "name": "other", "text": "merged"}]


@pytest.mark.parametrize("entry, message", [
    ({"category": "camera", "name": "  ", "text": "x"}, "snippet.name: must not be empty"),
    ({"category": "colour", "name": "a", "text": "x"}, "snippet.category: must be one of style, lighting, camera, "
                                                       "character, negative, got 'colour'"),
    ({"category": "camera", "name": "a", "text": "x" * 2001}, "snippet.text: is too long (2,001 characters, at "
                                                              "most 2,000)"),
    ({"category": "camera", "name": "a", "text": "one\ntwo"}, "snippet.text: must be one line without control "
                                                              "characters"),
    ({"category": "camera", "name": "a\x07b", "text": "x"}, "snippet.name: must not contain control characters"),
    ({"category": "camera", "name": "a/b", "text": "x"}, "snippet.name: must not contain /"),
    ({"category": "camera", "name": "a", "text": ""}, "snippet.text: must not be empty"),
    ({"category": "camera", "name": "a", "text": 5}, "snippet.text: must be text, got a number"),
    ({"category": "camera", "name": "a", "text": "x", "color": 1}, "snippet.color: is not a prompt snippet field"),
    # A right-to-left override shows "Slow dolly-in" for this name: a look-alike of a shipped snippet.
    ({"category": "negative", "name": "\u202eni-yllod wolS", "text": "x"}, "snippet.name: holds an invisible "
                                                                          "character that hides or reorders text"),
    ({"category": "camera", "name": "a", "text": "slow\u200bpush"}, "snippet.text: holds an invisible character"),
])
def test_bad_input_is_refused_with_a_sentence_naming_the_field_and_nothing_is_written(library, tmp_path, entry,
                                                                                      message):
    library.save({"category": "camera", "name": "Keep me", "text": "kept"})
    before = (tmp_path / "db" / "prompt_library.json").read_bytes()
    with pytest.raises(SnippetError) as refused:
        library.save(entry)
    assert str(refused.value).startswith(message), str(refused.value)
    assert len(str(refused.value)) < 300  # a 2 kB text is not echoed back
    assert (tmp_path / "db" / "prompt_library.json").read_bytes() == before


def test_a_write_that_dies_before_its_rename_leaves_the_last_good_file(library, tmp_path, monkeypatch):
    library.save({"category": "character", "name": "Wave", "text": "waves at the camera"})
    path = tmp_path / "db" / "prompt_library.json"
    before = path.read_bytes()

    def killed(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.os, "replace", killed)
    with pytest.raises(OSError):
        library.save({"category": "character", "name": "Nod", "text": "nods slowly"})
    monkeypatch.undo()
    assert path.read_bytes() == before  # whole, and the old content
    assert [p.name for p in path.parent.iterdir()] == ["prompt_library.json"]  # no temp file left behind
    reopened = PromptLibrary.open(tmp_path / "db")
    assert [s["name"] for s in reopened.user_snippets()] == ["Wave"]
    reopened.close()


def test_a_corrupt_file_is_moved_aside_not_lost_and_the_library_keeps_working(tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    (db / "prompt_library.json").write_text('{"snippets": {"1": {"category": "cam')
    opened = PromptLibrary.open(db)
    try:
        aside = list(db.glob("prompt_library.corrupt-*.json"))
        assert len(aside) == 1 and aside[0].read_text() == '{"snippets": {"1": {"category": "cam'
        assert opened.user_snippets() == [] and len(opened.list()) == len(load_shipped())
        opened.save({"category": "camera", "name": "Fresh", "text": "a fresh start"})
        assert opened.get("camera", "fresh")["text"] == "a fresh start"
    finally:
        opened.close()


def test_insert_keeps_what_was_typed_and_joins_with_a_comma():
    assert insert("a red fox in the snow", "golden hour") == "a red fox in the snow, golden hour"
    assert insert("a red fox in the snow.  ", "golden hour") == "a red fox in the snow. golden hour"
    assert insert("a fox,", "golden hour") == "a fox, golden hour"
    assert insert("", "golden hour") == insert(None, "golden hour") == insert(" \n", "golden hour") == "golden hour"
    lines = "clip one\nclip two"
    assert insert(lines, "orbit", per_line=True) == "clip one\nclip two, orbit"
    assert insert("clip one\n", "orbit", per_line=True) == "clip one\norbit"  # a clip just started
    assert insert(lines, "orbit") == "clip one\nclip two, orbit"


def test_every_prompt_box_of_any_workflow_spec_gets_a_picker(library):
    """Derived from the ParamSpec: text (or one-line-per-item list) parameters named *prompt*, nothing else."""
    import gradio as gr

    from diffbox.params import Param, ParamSpec
    from diffbox.ui.form import build_form
    from diffbox.ui.prompt_picker import with_prompt_pickers

    spec = ParamSpec("future", (
        Param("scene_prompt", "text", "", "What happens."),
        Param("negative_prompt", "text", "", "What to avoid.", tier="advanced"),
        Param("prompts", "list", [""], "One per clip."),
        Param("prompt_strength", "float", 1.0, "Not text: no picker."),
        Param("caption", "text", "", "Not a prompt: no picker."),
    ))
    parts: dict = {}
    lines_box = {"prompts": lambda param: gr.Textbox("\n".join(param.default), lines=4)}
    with gr.Blocks():
        fields = build_form(spec, custom=with_prompt_pickers(SimpleNamespace(prompt_library=library), spec,
                                                             lines_box, "future", parts))
    pickers = {picker.elem_id: negative_first for picker, negative_first in parts["prompt_pickers"]}
    assert pickers == {"future-scene-prompt-snippet": False, "future-prompts-snippet": False,
                       "future-negative-prompt-snippet": True}
    assert set(fields) == set(spec.names) and isinstance(fields["prompts"], gr.Textbox)
    negative = next(picker for picker, first in parts["prompt_pickers"] if first)
    labels = [label for label, _ in negative.choices]
    assert labels[0].startswith("negative · ") and labels[-1].startswith("character · ")


# -- the portable config --------------------------------------------------------------------------


def fresh_app(home: Path):
    (home / "db").mkdir(parents=True)
    return SimpleNamespace(settings=SimpleNamespace(db_dir=home / "db"), specs=dict(WORKFLOW_SPECS),
                           presets=PresetStore(home / "db" / "presets.json", []),
                           prompt_library=PromptLibrary.open(home / "db"), library=None, downloads=None, tokens=None)


@pytest.fixture
def pods(tmp_path):
    made = []

    def make(name):
        made.append(fresh_app(tmp_path / name))
        return made[-1]

    yield make
    for app in made:
        app.presets.close()
        app.prompt_library.close()


def db_state(app) -> dict:
    return {p.name: p.read_bytes() for p in sorted(app.settings.db_dir.iterdir()) if p.is_file()}


def test_export_carries_your_snippets_and_a_fresh_home_gets_them_back_once(pods):
    pod_a = pods("a")
    assert "prompt_library" not in portable.export_document(pod_a)  # none of yours: no key, older diffbox reads it
    pod_a.prompt_library.save({"category": "camera", "name": "My push-in", "text": "slow push-in, 35mm lens"})
    pod_a.prompt_library.save({"category": "negative", "name": "No cats", "text": "cats, kittens"})
    exported = json.dumps(portable.export_document(pod_a))
    doc = json.loads(exported)
    assert doc["version"] == config.CURRENT_VERSION == 1
    assert doc["prompt_library"] == [{"category": "camera", "name": "My push-in", "text": "slow push-in, 35mm lens"},
                                     {"category": "negative", "name": "No cats", "text": "cats, kittens"}]

    pod_b = pods("b")
    preview = portable.import_bytes(pod_b, exported, dry_run=True)
    assert preview["prompt_library"]["added"] == ["camera/My push-in", "negative/No cats"]
    assert preview["changes"] == 2 and pod_b.prompt_library.user_snippets() == []  # a preview applies nothing
    text = portable.summary(preview)
    assert "This import would make 2 change(s)." in text and "prompt snippets added: `camera/My push-in`" in text
    first = portable.import_bytes(pod_b, exported)
    assert first["changes"] == 2 and pod_b.prompt_library.user_snippets() == doc["prompt_library"]
    assert pod_b.prompt_library.get("camera", "my push-in")["shipped"] is False
    before = db_state(pod_b)
    again = portable.import_bytes(pod_b, exported)
    assert again["changes"] == 0 and again["prompt_library"]["unchanged"] == ["camera/My push-in", "negative/No cats"]
    assert db_state(pod_b) == before  # not a byte rewritten
    pod_b.prompt_library.save({"category": "camera", "name": "My push-in", "text": "edited here"})
    changed = portable.import_bytes(pod_b, exported)
    assert changed["prompt_library"]["changed"] == ["camera/My push-in"] and changed["changes"] == 1
    assert pod_b.prompt_library.get("camera", "My push-in")["text"] == "slow push-in, 35mm lens"


def test_a_bad_snippet_refuses_the_whole_file_naming_its_path(pods):
    pod = pods("a")
    before = db_state(pod)
    doc = {"version": 1, "defaults": {"i2v": {"num_inference_steps": 12}},
           "prompt_library": [{"category": "camera", "name": "Fine", "text": "fine"},
                              {"category": "camera", "name": "Broken", "text": "line one\nline two"},
                              {"category": "lighting", "name": "", "text": "x"},
                              {"category": "camera", "name": "FINE", "text": "again"}]}
    with pytest.raises(config.ConfigError) as refused:
        portable.import_bytes(pod, json.dumps(doc))
    errors = refused.value.errors
    assert errors["prompt_library[1].text"].startswith("must be one line")
    assert errors["prompt_library[2].name"] == "must not be empty"
    assert errors["prompt_library[3].name"] == "is the same as prompt_library[0]"
    assert str(refused.value).startswith("config refused, nothing was applied: prompt_library[1].text: ")
    assert db_state(pod) == before and pod.prompt_library.user_snippets() == []  # the defaults did not apply either
    for bad, where in (({"prompt_library": {"a": 1}}, "prompt_library"),
                       ({"prompt_library": [{"category": "camera", "name": "a"}]}, "prompt_library[0].text"),
                       ({"prompt_library": ["slow push-in"]}, "prompt_library[0]")):
        with pytest.raises(config.ConfigError) as refused:
            portable.import_bytes(pod, json.dumps({"version": 1, **bad}))
        assert where in refused.value.errors, refused.value.errors


def test_older_configs_without_the_key_still_import(pods):
    pod = pods("a")
    pod.prompt_library.save({"category": "style", "name": "Mine", "text": "kept"})
    for old in ({"version": 1, "defaults": {"i2v": {"num_inference_steps": 12}}},
                {"version": 0, "presets": {"i2v": {"Quick": {"num_frames": 17}}}}):
        report = portable.import_bytes(pod, json.dumps(old))
        assert report["errors"] == [] and report["prompt_library"] == {"added": [], "changed": [], "unchanged": []}
    assert pod.prompt_library.user_snippets() == [{"category": "style", "name": "Mine", "text": "kept"}]


# -- from outside: gradio_client and Chromium against a launched `app.py --demo` -------------------------


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_models):
    home = make_demo_home(tmp_path_factory.mktemp("prompt-library"), demo_models)
    process, url, output = start_app(home)
    yield {"url": url, "home": home, "output": output}
    process.terminate()
    process.wait(30)


def test_the_api_lists_saves_and_deletes_snippets_and_explains_bad_input(app):
    client = Client(app["url"], verbose=False)
    every = client.predict("", api_name="/prompt_library")
    assert len(every) == len(load_shipped()) and all(s["shipped"] for s in every)
    cameras = client.predict("camera", api_name="/prompt_library")
    assert {"category": "camera", "name": "Slow dolly-in", "text": DOLLY, "shipped": True} in cameras
    assert {s["category"] for s in cameras} == {"camera"}
    saved = client.predict("camera", " API push ", "push in fast", api_name="/prompt_library_save")
    assert saved == {"category": "camera", "name": "API push", "text": "push in fast"}
    assert {"category": "camera", "name": "API push", "text": "push in fast", "shipped": False} in client.predict(
        "camera", api_name="/prompt_library")
    stored = json.loads((app["home"] / "db" / "prompt_library.json").read_text())
    assert [r["name"] for r in stored["snippets"].values()] == ["API push"]
    for args, message in ((("camera", "", "x"), "snippet.name: must not be empty"),
                          (("colour", "a", "x"), "snippet.category: must be one of"),
                          (("camera", "a", "x" * 5000), "snippet.text: is too long"),
                          (("camera", "a", "a\x1b[31m"), "snippet.text: must be one line without control")):
        with pytest.raises(AppError, match=re.escape(message)) as refused:
            client.predict(*args, api_name="/prompt_library_save")
        assert "Traceback" not in str(refused.value)
    with pytest.raises(AppError, match="ships with diffbox and cannot be deleted"):
        client.predict("camera", "Slow dolly-in", api_name="/prompt_library_delete")
    left = client.predict("camera", "api PUSH", api_name="/prompt_library_delete")
    assert len(left) == len(load_shipped())  # still serving, and back to the shipped ones


def test_the_readme_prompt_library_snippet_runs_as_written(app):
    section = (ROOT / "README.md").read_text().split("The prompt library (categories", 1)[1]
    snippet = re.search(r"```python\n(.+?)\n```", section, re.S).group(1)
    namespace = {"client": Client(app["url"], verbose=False)}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102
    assert any(s["name"] == "Orbit shot" for s in namespace["snippets"])
    assert namespace["mine"] == {"category": "camera", "name": "My push-in", "text": "slow push-in, 35mm lens"}
    assert not any(s["name"] == "My push-in" for s in namespace["client"].predict("", api_name="/prompt_library"))


def test_picking_a_snippet_inserts_it_after_what_was_typed(app, browser_page):
    """Headless Chromium: type a prompt, pick "Slow dolly-in" under it → both are in the box; a snippet saved
    through the API meanwhile shows in the picker after a reload; SVI's box gets it in its last line."""
    from playwright.sync_api import expect

    page = browser_page

    def pick(picker_id: str, label: str) -> None:
        box = page.locator(f"#{picker_id} input")
        box.click()
        box.fill(label.split(" · ")[1])  # the dropdown filters as you type
        page.get_by_role("option", name=label, exact=True).click()

    page.goto(app["url"])
    expect(page.locator("#i2v-generate")).to_be_visible()
    prompt = page.locator("#param-prompt textarea").filter(visible=True)
    prompt.fill("a red fox trots through deep snow")
    pick("i2v-prompt-snippet", "camera · Slow dolly-in")
    expect(prompt).to_have_value(f"a red fox trots through deep snow, {DOLLY}")
    expect(page.locator("#i2v-prompt-snippet input")).to_have_value("")  # ready for the next pick
    pick("i2v-prompt-snippet", "lighting · Golden hour rim light")
    expect(prompt).to_have_value(re.compile(rf"^a red fox trots through deep snow, {DOLLY}, golden hour "))

    page.locator("#i2v-negative-prompt-snippet input").click()  # negatives first under the negative box
    first = page.get_by_role("option").filter(visible=True).first
    expect(first).to_have_attribute("aria-label", re.compile(r"^negative · "))
    page.keyboard.press("Escape")

    Client(app["url"], verbose=False).predict("camera", "Fox cam", "low tracking shot at fox height",
                                              api_name="/prompt_library_save")
    page.reload()
    expect(page.locator("#i2v-generate")).to_be_visible()
    prompt = page.locator("#param-prompt textarea").filter(visible=True)
    prompt.fill("a fox")
    pick("i2v-prompt-snippet", "camera · Fox cam (yours)")
    expect(prompt).to_have_value("a fox, low tracking shot at fox height")

    page.get_by_role("tab", name=re.compile("SVI")).click()
    clips = page.locator("#svi-prompts textarea")
    clips.fill("she walks in\nshe turns around")
    pick("svi-prompts-snippet", "camera · Orbit shot")
    expect(clips).to_have_value("she walks in\nshe turns around, the camera orbits smoothly around the "
                                "subject")

    # Your own, from the Config tab's panel: a refusal names the field; a saved one is in every picker.
    page.get_by_role("tab", name="Config").click()
    page.get_by_role("button", name="Prompt library: your snippets").click()
    page.locator("#prompt-library-name input, #prompt-library-name textarea").first.fill("Panel look")
    page.click("#prompt-library-save")
    refused = page.locator(".toast-body").filter(has_text="snippet.text").first
    expect(refused).to_contain_text("snippet.text: must not be empty")
    page.locator("#prompt-library-text input, #prompt-library-text textarea").first.fill("teal and orange grade")
    page.click("#prompt-library-save")
    expect(page.locator("#prompt-library-note")).to_contain_text("Saved Panel look (style)")
    page.get_by_role("tab", name="Image → Video").click()
    prompt.fill("a fox")
    pick("i2v-prompt-snippet", "style · Panel look (yours)")
    expect(prompt).to_have_value("a fox, teal and orange grade")
