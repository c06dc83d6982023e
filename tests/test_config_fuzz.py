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
from diffbox.services import WORKFLOW_SPECS

VALID = {
    "version": 1,
    "defaults": {"i2v": {"num_inference_steps": 20, "seed": -1}, "future_flow": {"knob": 3}},
    "presets": [{"workflow": "i2v", "name": "Quick", "params": {"num_frames": 17, "loras": [{"name": "a.safetensors"}]},
                 "models": [{"source": "civitai", "id": "5", "revision": "55",
                             "files": [{"name": "a.safetensors", "size": 10, "sha256": "a" * 64}]}]}],
    "models": [{"source": "hf", "id": "owner/name", "revision": "f" * 40, "whole_repo": True, "files": []}],
    "ui": {"start_tab": "i2v"},
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
    yield SimpleNamespace(settings=SimpleNamespace(db_dir=home / "db"), specs=dict(WORKFLOW_SPECS), presets=store,
                          library=None, downloads=None, tokens=None, home=home)
    store.close()


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
