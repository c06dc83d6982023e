"""Fuzzing the config importer: whatever arrives, it never crashes, a refusal names the field, and a
refused document leaves the user's files exactly as they were. Pure validation, no network."""

import copy
import json
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffbox import config, portable
from diffbox.presets import PresetStore
from diffbox.prompt_library import PromptLibrary
from diffbox.services import WORKFLOW_SPECS

VALID = {
    "version": 1,
    "defaults": {"i2v": {"num_inference_steps": 20, "seed": -1}, "future_flow": {"knob": 3}},
    "presets": [{"workflow": "i2v", "name": "Quick", "params": {"num_frames": 17, "loras": [{"name": "a.safetensors"}]},
                 "models": [{"source": "civitai", "id": "5", "revision": "55",
                             "files": [{"name": "a.safetensors", "size": 10, "sha256": "a" * 64}]}]}],
    "models": [{"source": "hf", "id": "owner/name", "revision": "f" * 40, "whole_repo": True, "files": []}],
    "ui": {"start_tab": "i2v"},
    "prompt_library": [{"category": "camera", "name": "My push-in", "text": "slow push-in, 35mm lens"}],
}

NASTY = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=False),
    st.text(max_size=40), st.sampled_from(["../../etc/passwd", "..", "/abs/x.safetensors", "a\x00b", "x.ckpt",
                                           "C:\\evil.safetensors", "é" * 300, "x" * 200_000, "owner/name/extra",
                                           "sub/../../x.safetensors", "hf", "civitai", "local", "i2v", "svi"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)


def paths(doc, prefix=()):
    """Every (path) into the document, so a mutation can hit any field at any depth."""
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from paths(value, prefix + (index,))


ALL_PATHS = list(paths(VALID))[1:]


@st.composite
def documents(draw):
    kind = draw(st.sampled_from(["mutate", "mutate", "mutate", "delete", "version", "random"]))
    if kind == "random":
        return draw(st.recursive(NASTY, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                               st.dictionaries(st.text(max_size=10), inner,
                                                                               max_size=4)), max_leaves=12))
    doc = copy.deepcopy(VALID)
    if kind == "version":
        doc["version"] = draw(st.one_of(st.integers(min_value=-5, max_value=10**6), NASTY))
        return doc
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
        target = doc
        try:
            for step in path[:-1]:
                target = target[step]
            if kind == "delete":
                del target[path[-1]]
            else:
                target[path[-1]] = draw(NASTY)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation replaced a parent
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["colour", "Defaults", "tokens"]))] = draw(NASTY)
    return doc


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """The parts an import writes to: preferences, presets, tokens (no hub: pins/downloads are skipped)."""
    home = tmp_path_factory.mktemp("fuzz")
    (home / "db").mkdir()
    store = PresetStore(home / "db" / "presets.json", [])
    snippets = PromptLibrary(home / "db" / "prompt_library.json", [])
    yield SimpleNamespace(settings=SimpleNamespace(db_dir=home / "db"), specs=dict(WORKFLOW_SPECS), presets=store,
                          prompt_library=snippets, library=None, downloads=None, tokens=None, home=home)
    store.close()
    snippets.close()


def state(target) -> dict:
    return {p.name: p.read_bytes() for p in sorted((target.home / "db").iterdir()) if p.is_file()}


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(doc=documents())
def test_the_importer_never_crashes_and_a_refusal_names_the_field_and_applies_nothing(target, doc):
    try:
        text = json.dumps(doc)
    except ValueError:
        text = None
    before, specs_before = state(target), dict(target.specs)
    try:
        if text is None:
            config.validate(doc, target.specs)
        else:
            portable.import_bytes(target, text)
    except config.ConfigError as exc:
        assert exc.errors, "a refusal must name at least one field"
        message = str(exc)
        first = next(iter(exc.errors))
        assert message.startswith("config refused, nothing was applied: ") and f"{first}: " in message
        assert len(message) < 6000  # a 200 kB string is not echoed back
        assert all(field.split(".")[0].split("[")[0] in (*config.TOP_LEVEL, "file", "colour", "Defaults")
                   for field in exc.errors), exc.errors
        assert state(target) == before and target.specs == specs_before  # nothing applied


# --- every config the app exports imports: export → import on generated states ----------------------

HEX = "0123456789abcdef"
SLUG = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", min_size=1, max_size=12).filter(
    lambda s: s[0].isalnum() and ".." not in s)
SHA = st.one_of(st.just(""), st.text(HEX, min_size=64, max_size=64))
FILE_NAMES = st.one_of(  # what search results and downloads name: weights, and what diffbox would never fetch
    st.builds("{}.safetensors".format, SLUG), st.builds("{}.gguf".format, SLUG),
    st.sampled_from(["model.pt", "training data.zip", "config.yaml", "a:b.safetensors", "../x.safetensors",
                     "sub/dir/x.safetensors", "x.ckpt", "", "é ü.safetensors"]))
SEEN_FILES = st.lists(st.fixed_dictionaries({"name": FILE_NAMES, "size": st.integers(0, 2**40), "sha256": SHA},
                                            optional={"format": st.sampled_from(["SafeTensor", "PickleTensor"]),
                                                      "primary": st.booleans()}), max_size=3)


@st.composite
def pin_requests(draw):
    """What a script sends to /pin (model@version on both hubs), and what the search had seen of it."""
    if draw(st.booleans()):
        model = f"{draw(SLUG)}/{draw(SLUG)}"
        version = draw(st.one_of(st.just(""), st.text(HEX, min_size=40, max_size=40),
                                 st.sampled_from(["main", "v1.0"])))
        seen = {"version_id": "", "files": []}
        return "hf", model + (f"@{version}" if version else ""), seen
    model = str(draw(st.integers(1, 10**9)))
    version = draw(st.one_of(st.just(""), st.integers(1, 10**9).map(str)))
    seen = {"version_id": draw(st.one_of(st.just(version), st.integers(1, 10**9).map(str))),
            "files": draw(SEEN_FILES)}
    return "civitai", model + (f"@{version}" if version else ""), seen


def param_values(param):
    """Values a form could hold for one parameter (the check decides which it accepts)."""
    number = st.floats if param.kind == "float" else st.integers
    low = param.minimum if param.minimum is not None else -10
    high = param.maximum if param.maximum is not None else 10_000
    by_kind = {
        "bool": st.booleans(), "seed": st.integers(-1, 2**32 - 1),
        "choice": st.sampled_from(param.choices or (param.default,)),
        "int": number(int(low), int(high)), "float": st.floats(low, high, allow_nan=False),
        "text": st.text(max_size=30), "str": st.sampled_from(["", "demo/wan22-i2v", "loras/a b.safetensors"]),
        "list": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["loras/orbit.safetensors", "glow.gguf"]),
                                                "weight": st.floats(0, 2)}), max_size=2),
    }
    if param.name == "prompts":
        return st.lists(st.text(max_size=20), min_size=1, max_size=3)
    return st.one_of(st.just(param.default), by_kind[param.kind])


@st.composite
def form_values(draw, workflow):
    spec = WORKFLOW_SPECS[workflow]
    names = draw(st.lists(st.sampled_from(spec.names), max_size=5, unique=True))
    values = {}
    for name in names:
        value = draw(param_values(spec[name]))
        try:
            spec.validate({**values, name: value})
        except ValueError:
            continue  # the form refuses it: never saved
        values[name] = value
    return values


@st.composite
def app_states(draw):
    workflows = sorted(WORKFLOW_SPECS)
    with_defaults = draw(st.lists(st.sampled_from(workflows), max_size=2, unique=True))
    return {
        "defaults": {w: draw(form_values(w)) for w in with_defaults},
        "presets": [(w, draw(st.text(min_size=1, max_size=20)), draw(form_values(w)))
                    for w in draw(st.lists(st.sampled_from(workflows), max_size=3))],
        "pins": draw(st.lists(pin_requests(), max_size=4)),
        "variants": draw(st.lists(st.tuples(st.text(min_size=1, max_size=20), st.sampled_from(["hf", "civitai"]),
                                            st.sets(st.sampled_from(["transformer", "transformer_2", "text_encoder"]),
                                                    min_size=1)), max_size=2)),
    }


class QueuedDownloads:
    """The download queue as an import sees it: requests are queued and resolve to a fixed revision
    with hashed files (the network is not the subject here; test_config_roundtrip fetches for real)."""

    def __init__(self):
        self.queued = []

    def request(self, source, ref, file="", without=()):
        model_id, _, revision = ref.partition("@")
        resolved = "c" * 40 if source == "hf" else "9"  # a branch or "latest" resolves to a commit / version id
        fixed = revision if revision and (source != "hf" or len(revision) == 40) else resolved
        self.queued.append({"id": f"d{len(self.queued)}", "source": source, "model_id": model_id, "revision": fixed,
                            "state": "queued", "file": file})
        return self.queued[-1]["id"]

    def plan(self, download_id):
        queued = next(d for d in self.queued if d["id"] == download_id)
        return {"revision": queued["revision"], "whole_repo": not queued["file"],
                "files": [{"path": queued["file"] or "model.safetensors", "size": 1, "sha256": "d" * 64}]}

    def list(self):
        return list(self.queued)


def fresh_app(home):
    from diffbox.hub.library import Library

    (home / "db").mkdir(parents=True)
    (home / "models").mkdir()
    return SimpleNamespace(settings=SimpleNamespace(db_dir=home / "db"), specs=dict(WORKFLOW_SPECS),
                           presets=PresetStore(home / "db" / "presets.json", []), tokens=None,
                           prompt_library=PromptLibrary(home / "db" / "prompt_library.json", []),
                           library=Library(home / "models", home / "db" / "library.json"), downloads=QueuedDownloads())


def close_app(app):
    app.presets.close()
    app.prompt_library.close()
    app.library.close()


def build_state(app, state):
    """The state through the app's own doors: the form's checks, /pin's rule, the variants panel's record."""
    from diffbox.hub.hub import ModelHub
    from diffbox.hub.variants import Ref
    from diffbox.presets import check
    from diffbox.ui.hub_api import pin_reference

    for workflow, values in state["defaults"].items():
        if values:
            portable.apply(app, config.ConfigDoc(defaults={workflow: values}))
    for workflow, name, values in state["presets"]:
        try:
            preset, _ = check({"workflow": workflow, "name": name, "params": values}, app.specs)
        except config.ConfigError:
            continue  # the presets bar refuses it with a message: never saved
        app.presets.save(preset)
    for source, model_id, seen in state["pins"]:
        source, model, version = pin_reference(source, model_id)
        hub = SimpleNamespace(library=app.library, finder=SimpleNamespace(seen=lambda s, m, seen=seen: seen))
        ModelHub.pin(hub, source, model, True, revision=version)
    for index, (name, source, components) in enumerate(state["variants"]):
        try:
            app.library.variant_records.add(name, "wan2.2-i2v", Ref("hf", f"base/repo-{index}"),
                                            {c: Ref(source, f"parts/{c}" if source == "hf" else str(10 + index),
                                                    f"{c}.safetensors") for c in components})
        except ValueError:
            continue  # the panel refuses the name


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(state=app_states())
def test_every_config_the_app_exports_imports_and_a_second_import_changes_nothing(tmp_path_factory, state):
    home = tmp_path_factory.mktemp("export")
    source, target = fresh_app(home / "a"), fresh_app(home / "b")
    try:
        build_state(source, state)
        exported = json.dumps(portable.export_document(source))
        first = portable.import_bytes(target, exported)
        assert first["errors"] == [] and first["models"]["not_pinned"] == [], first
        again = portable.import_bytes(target, exported)
        assert again["changes"] == 0, again
        assert portable.import_bytes(source, exported)["errors"] == []  # and back home
    finally:
        close_app(source)
        close_app(target)
