"""The portable config document: its schema, its versions, and validation field by field.

One JSON file brings a user's setup back on a fresh pod:

    {"version": 1,
     "defaults": {"i2v": {"num_inference_steps": 30}},       # the values the user changed, per workflow
     "presets":  [{"workflow": "i2v", "name": "...", "params": {...}, "models": [...]}],
     "models":   [{"source": "hf", "id": "owner/name", "revision": "<commit>", "whole_repo": false,
                   "files": [{"name": "x.safetensors", "size": 123, "sha256": "<hex>"}]}],
     "variants": [{"name": "Wan2.2-I2V-A14B · GGUF Q8_0", "base_model": "wan2.2-i2v",
                   "base": {"source": "hf", "id": "owner/base"},
                   "parts": {"transformer": {"source": "hf", "id": "owner/name", "file": "high.gguf"}, ...}}],
     "ui":       {"start_tab": "i2v"},
     "prompt_library": [{"category": "camera", "name": "My push-in", "text": "slow push-in, 35mm"}],
     "tokens":   {"hf": "...", "civitai": "..."}}             # only when the user opted in

`validate()` checks everything before anything is applied and raises one ConfigError naming every
bad field (`presets[2].name`, `defaults.i2v.num_frames`, ...), so a refused file changes nothing.
Workflow parameters are checked against the workflow's ParamSpec when that workflow is registered;
a workflow this build does not have yet (a newer preset, a tab still being built) is kept as it is.
This module is pure: no Gradio, no network except read_source(), no state.

`prompt_library` (the user's own prompt snippets; the shipped ones are not exported) came after version 1
without a version bump: the key is optional and a version-1 file without it means "no snippets of your
own", which is what it always meant, so no migration is needed. Export leaves the key out when there are
no snippets, so such a file still imports on a diffbox from before the prompt library (which refuses
unknown top-level keys); a bump would have made every new export unreadable there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from diffbox.hub.safety import CONFIG_SUFFIXES, WEIGHT_SUFFIXES, safe_relative_path
from diffbox.params import InvalidParams, ParamSpec, is_text

CURRENT_VERSION = 1
MAX_FILE_BYTES = 4_000_000
MAX_PRESETS = 500
MAX_MODELS = 200
MAX_FILES_PER_MODEL = 5000
MAX_PARAMS = 200
MAX_NAME = 80
MAX_DESCRIPTION = 500
MAX_REASON = 300
MAX_NESTING = 6
MAX_SNIPPETS = 1000
MAX_SNIPPET_TEXT = 2000
PROMPT_CATEGORIES = ("style", "lighting", "camera", "character", "negative")

WORKFLOW = re.compile(r"[a-z][a-z0-9_]{0,31}")
PARAM_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
HF_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
HF_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NUMBER_ID = re.compile(r"[0-9]{1,12}")
SHA256 = re.compile(r"[0-9a-f]{64}")
VARIANT_NAME = re.compile(r"[^\x00-\x1f/\\]{1,80}")
TAB_ID = re.compile(r"[a-z][a-z0-9_]{0,31}")
MODEL_SOURCES = ("hf", "civitai")
TOKEN_SOURCES = ("hf", "civitai")
INFORMATIONAL = ("exported_at", "app")  # written by export, ignored by import
TOP_LEVEL = ("version", "defaults", "presets", "models", "variants", "ui", "tokens", "prompt_library",
             *INFORMATIONAL)
UI_KEYS = ("start_tab",)


class ConfigError(ValueError):
    """A document diffbox cannot apply; `errors` maps each field path to a reason."""

    def __init__(self, errors: Mapping[str, str]):
        self.errors = {name: _short(reason, MAX_REASON) for name, reason in errors.items()}
        shown = list(self.errors.items())[:12]
        more = len(self.errors) - len(shown)
        text = "; ".join(f"{name}: {reason}" for name, reason in shown)
        super().__init__(f"config refused, nothing was applied: {text}" + (f"; and {more} more" if more > 0 else ""))


@dataclass
class ConfigDoc:
    """A validated document, in the current version's shape."""
    version: int = CURRENT_VERSION
    defaults: dict[str, dict] = field(default_factory=dict)
    presets: list[dict] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    variants: list[dict] = field(default_factory=list)
    ui: dict = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    migrated_from: int | None = None
    notes: list[str] = field(default_factory=list)
    prompt_library: list[dict] = field(default_factory=list)


class _Errors(dict):
    def add(self, where: str, reason: str) -> None:
        self.setdefault(where, reason)


def _short(text: Any, limit: int = 60) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _show(value: Any) -> str:
    """A value quoted for a message, cut short: a 10 MB string must not become a 10 MB message."""
    return _short(repr(value), 60)


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse(data: bytes | str, where: str = "file") -> dict:
    """JSON text → the raw document (an object), or ConfigError naming `where`."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError({where: f"is {len(data):,} bytes; a diffbox config is at most {MAX_FILE_BYTES:,}"})
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise ConfigError({where: "is not UTF-8 text"}) from None
    except RecursionError:
        raise ConfigError({where: "is nested too deeply"}) from None
    except ValueError as exc:
        raise ConfigError({where: f"is not valid JSON ({_short(exc, 120)})"}) from None
    if not isinstance(doc, dict):
        raise ConfigError({where: f"must hold a JSON object, got {_type(doc)}"})
    return doc


def read_source(source: str, timeout: float = 30.0) -> bytes:
    """The bytes of a config given as a path or an http(s) URL (--config / DIFFBOX_CONFIG)."""
    where = "--config/DIFFBOX_CONFIG"
    if re.match(r"(?i)https?://", source):
        import requests  # only here: the rest of the module is pure

        try:
            with requests.get(source, timeout=timeout, stream=True) as response:
                if response.status_code != 200:
                    raise ConfigError({where: f"{_short(source, 120)} answered HTTP {response.status_code}"})
                data = b""
                for chunk in response.iter_content(64 * 1024):
                    data += chunk
                    if len(data) > MAX_FILE_BYTES:
                        raise ConfigError({where: f"{_short(source, 120)} is larger than {MAX_FILE_BYTES:,} bytes"})
                return data
        except requests.RequestException as exc:
            raise ConfigError({where: f"cannot fetch {_short(source, 120)} ({type(exc).__name__}: "
                                      "offline or unreachable?)"}) from None
    path = Path(source).expanduser()
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError({where: f"{path} is larger than {MAX_FILE_BYTES:,} bytes"})
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError({where: f"cannot read {path}: {exc.strerror or exc}"}) from None


# ---------------------------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------------------------


def _migrate_0(doc: dict) -> dict:
    """Version 0, the pre-release layout: presets as {workflow: {name: params}}, models with `model_id`."""
    doc = dict(doc)
    presets = doc.get("presets")
    if isinstance(presets, dict):
        doc["presets"] = [{"workflow": workflow, "name": name, "params": params}
                          for workflow, named in presets.items() if isinstance(named, dict)
                          for name, params in named.items()]
    models = doc.get("models")
    if isinstance(models, list):
        doc["models"] = [{("id" if k == "model_id" else k): v for k, v in m.items()} if isinstance(m, dict) else m
                         for m in models]
    doc["version"] = 1
    return doc


MIGRATIONS: dict[int, Callable[[dict], dict]] = {0: _migrate_0}  # version n → n + 1


def migrate(doc: dict) -> tuple[dict, int | None]:
    """The document in the current version's shape, and the version it came from (None if current)."""
    version = doc.get("version")
    if version is None:
        raise ConfigError({"version": f"is missing; a diffbox config says which version it is "
                                      f"(this diffbox writes {CURRENT_VERSION})"})
    if isinstance(version, bool) or not isinstance(version, int):
        raise ConfigError({"version": f"must be a whole number, got {_show(version)}"})
    if version > CURRENT_VERSION:
        raise ConfigError({"version": f"{version} is from a newer diffbox; this one reads versions up to "
                                      f"{CURRENT_VERSION}: update diffbox to import it"})
    if version < 0:
        raise ConfigError({"version": f"must be 0 or more, got {version}"})
    original = version
    while version < CURRENT_VERSION:
        doc = MIGRATIONS[version](doc)
        version += 1
    return doc, (original if original != CURRENT_VERSION else None)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


# Invisible characters that reorder or hide text (bidi overrides and isolates, direction marks, zero-width
# space, word joiner, BOM): a name holding one can pass for another ("Slow dolly-in" written backwards behind
# a right-to-left override). Joiners (ZWJ/ZWNJ), which emoji and several scripts need, stay allowed.
# Also the default-ignorable ones that draw nothing: soft hyphen, combining grapheme joiner, Hangul fillers.
HIDDEN = re.compile("[\u00ad\u034f\u115f\u1160\u200b\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\u3164"
                    "\ufeff\uffa0]")


def check_visible(text: str) -> None:
    if HIDDEN.search(text):
        raise ValueError(f"holds an invisible character that hides or reorders text "
                         f"(U+{ord(HIDDEN.search(text).group()):04X}); type it without")


def check_line(value: Any, limit: int, control: str = "must not contain control characters") -> str:
    """Text shown in a list and used as a key or inserted into a box: one printable, visible line of at most
    `limit` characters, stripped. `control` is the sentence for a control character (a line break)."""
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {_type(value)}")
    text = value.strip()
    if not text:
        raise ValueError("must not be empty")
    if len(text) > limit:
        raise ValueError(f"is too long ({len(text):,} characters, at most {limit:,})")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(control)
    if not is_text(text):
        raise ValueError("holds a lone surrogate (such as \\ud800), which is not text")
    check_visible(text)
    return text


def check_name(value: Any) -> str:
    """A preset or snippet name: shown in dropdowns and used as a key, so short, printable and path-free."""
    name = check_line(value, MAX_NAME)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"must not contain / or \\ or be . or .. (got {_show(name)})")
    return name


def _json_value(value: Any, depth: int = 0) -> bool:
    """Plain JSON data of bounded depth (what a parameter of an unknown workflow may hold)."""
    if depth > MAX_NESTING:
        return False
    if isinstance(value, (str, bool, int, type(None))):
        return True
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, list):
        return all(_json_value(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_value(v, depth + 1) for k, v in value.items())
    return False


def _names_library_file(param: str) -> bool:
    """Parameters whose value names a model or LoRA in the library: model, controlnet, loras, svi_lora_high…"""
    return param in ("model", "controlnet", "loras") or "lora" in param.split("_")


def library_name_problem(value: Any) -> str | None:
    """Why a model/LoRA name could point outside models/ (an absolute path, ~, a drive, ..), or None.

    Names are paths relative to models/ (demo/wan22-i2v, loras/orbit.safetensors); a config is data
    from elsewhere, so it may not aim the app at /etc or ../.. even where the library would refuse it."""
    names = [v.get("name") if isinstance(v, dict) else v for v in (value if isinstance(value, list) else [value])]
    for name in names:
        if not isinstance(name, str) or not name:
            continue
        text = name.replace("\\", "/")
        if text.startswith(("/", "~")) or re.match(r"[A-Za-z]:", text) or ".." in text.split("/") or "\0" in text:
            return f"must name a model inside models/ (like demo/wan22-i2v), not a path: got {_show(name)}"
    return None


def clean_params(values: Any, where: str, workflow: str, specs: Mapping[str, ParamSpec],
                 errors: _Errors) -> dict | None:
    """Partial parameters (only the keys given), cleaned by the workflow's spec when it is registered.

    A seed stays as given: -1 must stay "random", not the number drawn while validating.
    """
    if not isinstance(values, dict):
        errors.add(where, f"must be an object of parameters, got {_type(values)}")
        return None
    if len(values) > MAX_PARAMS:
        errors.add(where, f"has {len(values)} parameters, at most {MAX_PARAMS}")
        return None
    escapes = {k: library_name_problem(v) for k, v in values.items() if isinstance(k, str) and _names_library_file(k)}
    for key, reason in escapes.items():
        if reason:
            errors.add(f"{where}.{key}", reason)
    if any(escapes.values()):
        return None
    spec = specs.get(workflow)
    if spec is None:
        bad = [k for k in values if not (isinstance(k, str) and PARAM_NAME.fullmatch(k))]
        if bad:
            errors.add(where, f"{_show(bad[0])} is not a parameter name")
            return None
        for key, value in values.items():
            if not _json_value(value):
                errors.add(f"{where}.{key}", "must be plain JSON data (text, numbers, true/false, lists, objects)")
                return None
        return dict(values)
    try:
        clean = spec.validate({**spec.defaults(), **values})
    except InvalidParams as exc:
        for name, reason in exc.errors.items():
            errors.add(where if name == "params" else f"{where}.{name}", reason)
        return None
    return {k: (_seed(values[k]) if spec[k].kind == "seed" else clean[k]) for k in values}


def _seed(value: Any) -> Any:
    """A seed as given (-1 stays "random"), but 7.0 from a number box is stored as 7."""
    if isinstance(value, str):
        return int(value.strip())  # the spec accepted it, so it is a whole number
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _object_with(raw: Any, where: str, fields: tuple[str, ...], noun: str, errors: _Errors) -> bool:
    """True when `raw` is an object holding only `fields`; otherwise records why, naming the field."""
    if not isinstance(raw, dict):
        errors.add(where, f"must be an object ({', '.join(fields)}), got {_type(raw)}")
        return False
    unknown = sorted(k for k in raw if k not in fields)
    if unknown:
        errors.add(f"{where}.{_short(unknown[0], 40)}", f"is not a {noun} field ({', '.join(fields)})")
        return False
    return True


def _clean_file(raw: Any, where: str, errors: _Errors) -> dict | None:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not _object_with(raw, where, ("name", "size", "sha256"), "file", errors):
        return None
    name = raw.get("name")
    try:
        name = safe_relative_path(name, (*WEIGHT_SUFFIXES, *CONFIG_SUFFIXES)) if isinstance(name, str) else None
    except Exception as exc:  # noqa: BLE001 - UnsafeFile, or odd input the path parser trips on
        errors.add(f"{where}.name", _short(str(exc), 200))
        return None
    if name is None:
        errors.add(f"{where}.name", f"must be text, got {_type(raw.get('name'))}")
        return None
    size = raw.get("size", 0)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**50:
        errors.add(f"{where}.size", f"must be a byte count (a whole number ≥ 0), got {_show(size)}")
        return None
    sha = raw.get("sha256", "")
    if not isinstance(sha, str) or not (sha == "" or SHA256.fullmatch(sha.lower())):
        errors.add(f"{where}.sha256", f"must be 64 hex digits (or empty), got {_show(sha)}")
        return None
    return {"name": name, "size": size, "sha256": sha.lower()}


MODEL_FIELDS = ("source", "id", "revision", "files", "whole_repo", "without", "title")
# Component folders a whole repo may be fetched without (their weights come from a variant's single files).
WITHOUT_COMPONENTS = ("transformer", "transformer_2", "text_encoder")


def clean_model(raw: Any, where: str, errors: _Errors) -> dict | None:
    """A pinned model: where it comes from, exactly which revision, which files and their hashes."""
    if not _object_with(raw, where, MODEL_FIELDS, "model", errors):
        return None
    source = raw.get("source")
    if source not in MODEL_SOURCES:
        errors.add(f"{where}.source", f"must be one of {', '.join(MODEL_SOURCES)}, got {_show(source)}")
        return None
    model_id, revision = raw.get("id"), raw.get("revision", "")
    id_rule, rev_rule, rev_text = ((HF_ID, HF_REVISION, "a commit sha or branch name") if source == "hf" else
                                   (NUMBER_ID, NUMBER_ID, "a Civitai version id (a number)"))
    if isinstance(model_id, int) and not isinstance(model_id, bool) and source == "civitai":
        model_id = str(model_id)
    if not isinstance(model_id, str) or not id_rule.fullmatch(model_id) or ".." in model_id:
        want = "owner/name" if source == "hf" else "a Civitai model id (a number)"
        errors.add(f"{where}.id", f"must be {want}, got {_show(model_id)}")
        return None
    if isinstance(revision, int) and not isinstance(revision, bool) and source == "civitai":
        revision = str(revision)
    if not isinstance(revision, str) or not (revision == "" or rev_rule.fullmatch(revision)):
        errors.add(f"{where}.revision", f"must be {rev_text} (or empty for the latest), got {_show(revision)}")
        return None
    files = raw.get("files", [])
    if not isinstance(files, list) or len(files) > MAX_FILES_PER_MODEL:
        errors.add(f"{where}.files", f"must be a list of at most {MAX_FILES_PER_MODEL} files, got {_type(files)}")
        return None
    cleaned = [_clean_file(f, f"{where}.files[{i}]", errors) for i, f in enumerate(files)]
    if any(f is None for f in cleaned):
        return None
    whole_repo = raw.get("whole_repo", False)
    if not isinstance(whole_repo, bool):
        errors.add(f"{where}.whole_repo", f"must be true or false, got {_show(whole_repo)}")
        return None
    if whole_repo and source != "hf":
        errors.add(f"{where}.whole_repo", "only a Hugging Face model can be a whole repo")
        return None
    without = raw.get("without", [])
    if not isinstance(without, list) or any(c not in WITHOUT_COMPONENTS for c in without) or (
            without and not whole_repo):
        errors.add(f"{where}.without", "must list component folders of a whole repo "
                                       f"({', '.join(WITHOUT_COMPONENTS)}), got {_show(without)}")
        return None
    title = raw.get("title", "")
    if not isinstance(title, str) or len(title) > 200:
        errors.add(f"{where}.title", "must be text of at most 200 characters")
        return None
    return {"source": source, "id": model_id, "revision": revision, "files": cleaned, "whole_repo": whole_repo,
            **({"without": sorted(set(without))} if without else {}), **({"title": title} if title else {})}


def model_key(model: dict) -> tuple[str, str, str]:
    return model["source"], model["id"], model["revision"]


def _clean_models(raw: Any, where: str, errors: _Errors) -> list[dict]:
    if not isinstance(raw, list):
        errors.add(where, f"must be a list of models, got {_type(raw)}")
        return []
    if len(raw) > MAX_MODELS:
        errors.add(where, f"has {len(raw)} models, at most {MAX_MODELS}")
        return []
    return _each_once(raw, where, clean_model, model_key, errors)


def _each_once(raw: list, where: str, clean: Callable, key: Callable, errors: _Errors, field: str = "") -> list[dict]:
    """Every item cleaned; a later one with the same key (model, revision / variant name) is refused by naming
    the first, since applying both would let the second silently win."""
    kept, seen = [], {}
    for index, item in enumerate(raw):
        cleaned = clean(item, f"{where}[{index}]", errors)
        if cleaned is None:
            continue
        if key(cleaned) in seen:
            errors.add(f"{where}[{index}]{field}", f"is the same as {where}[{seen[key(cleaned)]}]")
            continue
        seen[key(cleaned)] = index
        kept.append(cleaned)
    return kept


MAX_VARIANTS = 50
VARIANT_FIELDS = ("name", "base_model", "base", "parts")


def _clean_ref(raw: Any, where: str, errors: _Errors, needs_file: bool) -> dict | None:
    """A variant's base or part: a download's source, id and (for a part) its file in the repo."""
    if not _object_with(raw, where, ("source", "id", "file"), "model reference", errors):
        return None
    source, model_id, file = raw.get("source"), raw.get("id"), raw.get("file", "")
    if source not in MODEL_SOURCES:
        errors.add(f"{where}.source", f"must be one of {', '.join(MODEL_SOURCES)}, got {_show(source)}")
        return None
    rule = HF_ID if source == "hf" else NUMBER_ID
    if not isinstance(model_id, str) or not rule.fullmatch(model_id) or ".." in model_id:
        errors.add(f"{where}.id", f"must be {'owner/name' if source == 'hf' else 'a Civitai model id'}, "
                                  f"got {_show(model_id)}")
        return None
    try:
        file = safe_relative_path(file, WEIGHT_SUFFIXES) if isinstance(file, str) and file else file
    except Exception as exc:  # noqa: BLE001 - UnsafeFile, or odd input the path parser trips on
        errors.add(f"{where}.file", _short(str(exc), 200))
        return None
    if not isinstance(file, str) or bool(file) != needs_file:
        errors.add(f"{where}.file", "must name the weights file in the repo" if needs_file else
                   "must be empty: a base is a whole diffusers repo")
        return None
    return {"source": source, "id": model_id, "file": file}


def clean_variant(raw: Any, where: str, errors: _Errors) -> dict | None:
    """A variant: a diffusers base with components from single files, shown in the pickers by its name."""
    if not _object_with(raw, where, VARIANT_FIELDS, "variant", errors):
        return None
    name, base_model, parts = raw.get("name"), raw.get("base_model", ""), raw.get("parts")
    if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name.strip()):
        errors.add(f"{where}.name", f"must be 1 to 80 characters without / or control characters, got {_show(name)}")
        return None
    if not isinstance(base_model, str) or len(base_model) > 40:
        errors.add(f"{where}.base_model", f"must be a base model name, got {_show(base_model)}")
        return None
    base = _clean_ref(raw.get("base"), f"{where}.base", errors, needs_file=False)
    if base is None:
        return None
    if not isinstance(parts, dict) or not parts or any(c not in WITHOUT_COMPONENTS for c in parts):
        errors.add(f"{where}.parts", f"must map components ({', '.join(WITHOUT_COMPONENTS)}) to files, "
                                     f"got {_show(parts)}")
        return None
    cleaned = {c: _clean_ref(ref, f"{where}.parts.{c}", errors, needs_file=True) for c, ref in sorted(parts.items())}
    if any(ref is None for ref in cleaned.values()):
        return None
    return {"name": name.strip(), "base_model": base_model, "base": base, "parts": cleaned}


def _clean_variants(raw: Any, errors: _Errors) -> list[dict]:
    if not isinstance(raw, list) or len(raw) > MAX_VARIANTS:
        errors.add("variants", f"must be a list of at most {MAX_VARIANTS} variants, got {_type(raw)}")
        return []
    return _each_once(raw, "variants", clean_variant, lambda variant: variant["name"], errors, field=".name")


PRESET_FIELDS = ("workflow", "name", "params", "models", "description")


def clean_preset(raw: Any, where: str, specs: Mapping[str, ParamSpec], errors: _Errors,
                 notes: list[str] | None = None) -> dict | None:
    """A named set of form values for one workflow, optionally with the models it needs."""
    if not _object_with(raw, where, PRESET_FIELDS, "preset", errors):
        return None
    workflow = raw.get("workflow")
    if not isinstance(workflow, str) or not WORKFLOW.fullmatch(workflow):
        errors.add(f"{where}.workflow", f"must be a workflow name like i2v, got {_show(workflow)}")
        return None
    try:
        name = check_name(raw.get("name"))
    except ValueError as exc:
        errors.add(f"{where}.name", str(exc))
        return None
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        errors.add(f"{where}.description", f"must be text of at most {MAX_DESCRIPTION} characters")
        return None
    params = clean_params(raw.get("params", {}), f"{where}.params", workflow, specs, errors)
    models = _clean_models(raw.get("models", []), f"{where}.models", errors)
    if params is None or len(errors):
        return None
    if workflow not in specs and notes is not None:
        notes.append(f"preset {workflow}/{name}: this diffbox has no {workflow} workflow yet; kept as it is, "
                     "checked when that workflow arrives")
    return {"workflow": workflow, "name": name, "params": params, "models": models,
            **({"description": description} if description else {})}


SNIPPET_FIELDS = ("category", "name", "text")


def check_snippet_text(value: Any) -> str:
    """A prompt snippet's text: one line (it is inserted into prompt boxes, and SVI's box has a clip per line)."""
    return check_line(value, MAX_SNIPPET_TEXT, "must be one line without control characters (no line breaks or tabs)")


def clean_snippet(raw: Any, where: str, errors: _Errors) -> dict | None:
    """A prompt-library entry of the user's: {"category", "name", "text"}."""
    if not _object_with(raw, where, SNIPPET_FIELDS, "prompt snippet", errors):
        return None
    category = raw.get("category")
    if category not in PROMPT_CATEGORIES:
        errors.add(f"{where}.category", f"must be one of {', '.join(PROMPT_CATEGORIES)}, got {_show(category)}")
        return None
    for key, check in (("name", check_name), ("text", check_snippet_text)):
        try:
            raw = {**raw, key: check(raw.get(key))}
        except ValueError as exc:
            errors.add(f"{where}.{key}", str(exc))
            return None
    return {"category": category, "name": raw["name"], "text": raw["text"]}


def snippet_key(snippet: dict) -> tuple[str, str]:
    """Names are unique within a category, whatever their case."""
    return snippet["category"], snippet["name"].casefold()


def _clean_prompt_library(raw: Any, errors: _Errors) -> list[dict]:
    if not isinstance(raw, list) or len(raw) > MAX_SNIPPETS:
        errors.add("prompt_library", f"must be a list of at most {MAX_SNIPPETS:,} snippets, got {_type(raw)}"
                   + (f" of {len(raw):,}" if isinstance(raw, list) else ""))
        return []
    return _each_once(raw, "prompt_library", clean_snippet, snippet_key, errors, field=".name")


def _clean_defaults(raw: Any, specs: Mapping[str, ParamSpec], errors: _Errors, notes: list[str]) -> dict:
    if not isinstance(raw, dict):
        errors.add("defaults", f"must be an object keyed by workflow, got {_type(raw)}")
        return {}
    defaults = {}
    for workflow, values in raw.items():
        if not isinstance(workflow, str) or not WORKFLOW.fullmatch(workflow):
            errors.add("defaults", f"{_show(workflow)} is not a workflow name")
            continue
        clean = clean_params(values, f"defaults.{workflow}", workflow, specs, errors)
        if clean is not None:
            defaults[workflow] = clean
            if workflow not in specs and clean:
                notes.append(f"defaults.{workflow}: this diffbox has no {workflow} workflow yet; kept as they are")
    return defaults


def _clean_ui(raw: Any, errors: _Errors) -> dict:
    if not isinstance(raw, dict):
        errors.add("ui", f"must be an object, got {_type(raw)}")
        return {}
    for key in raw:
        if key not in UI_KEYS:
            errors.add(f"ui.{_short(key, 40)}", f"is not a UI preference (known: {', '.join(UI_KEYS)})")
            return {}
    tab = raw.get("start_tab")
    if tab is not None and not (isinstance(tab, str) and TAB_ID.fullmatch(tab)):
        errors.add("ui.start_tab", f"must be a tab id like i2v or models, got {_show(tab)}")
        return {}
    return {k: v for k, v in raw.items() if v is not None}


def _clean_tokens(raw: Any, errors: _Errors) -> dict:
    if not isinstance(raw, dict):
        errors.add("tokens", "must be an object like {\"hf\": \"...\", \"civitai\": \"...\"}")
        return {}
    tokens = {}
    for source, token in raw.items():
        if source not in TOKEN_SOURCES:
            errors.add(f"tokens.{_short(source, 40)}", f"is not a token source ({', '.join(TOKEN_SOURCES)})")
            continue
        if token in (None, ""):
            continue
        # Never echo the value: it may be a real token.
        if not isinstance(token, str) or len(token) < 8 or len(token) > 512 or \
                any(c.isspace() or ord(c) < 32 for c in token):
            errors.add(f"tokens.{source}", "does not look like a token (text of 8 to 512 characters, no spaces)")
            continue
        tokens[source] = token
    return tokens


def validate(raw: Any, specs: Mapping[str, ParamSpec]) -> ConfigDoc:
    """A raw document (parsed JSON) → ConfigDoc, or one ConfigError naming every bad field."""
    if not isinstance(raw, dict):
        raise ConfigError({"file": f"must hold a JSON object, got {_type(raw)}"})
    doc, migrated_from = migrate(raw)
    errors, notes = _Errors(), []
    for key in doc:
        if key not in TOP_LEVEL:
            errors.add(_short(str(key), 40), f"is not a config field (known: {', '.join(TOP_LEVEL)})")
    defaults = _clean_defaults(doc.get("defaults", {}), specs, errors, notes)
    presets: list[dict] = []
    raw_presets = doc.get("presets", [])
    if not isinstance(raw_presets, list):
        errors.add("presets", f"must be a list of presets, got {_type(raw_presets)}")
    elif len(raw_presets) > MAX_PRESETS:
        errors.add("presets", f"has {len(raw_presets)} presets, at most {MAX_PRESETS}")
    else:
        seen: dict[tuple[str, str], int] = {}
        for index, item in enumerate(raw_presets):
            preset = clean_preset(item, f"presets[{index}]", specs, _scoped := _Errors(), notes)
            errors.update({k: v for k, v in _scoped.items() if k not in errors})
            if preset is None:
                continue
            key = (preset["workflow"], preset["name"].casefold())
            if key in seen:
                errors.add(f"presets[{index}].name", f"{_show(preset['name'])} is already presets[{seen[key]}]")
                continue
            seen[key] = index
            presets.append(preset)
    models = _clean_models(doc.get("models", []), "models", errors)
    variants = _clean_variants(doc.get("variants", []), errors)
    ui = _clean_ui(doc.get("ui", {}), errors)
    tokens = _clean_tokens(doc.get("tokens", {}), errors)
    prompt_library = _clean_prompt_library(doc.get("prompt_library", []), errors)
    if errors:
        raise ConfigError(errors)
    if migrated_from is not None:
        notes.insert(0, f"migrated from config version {migrated_from} to {CURRENT_VERSION}")
    return ConfigDoc(CURRENT_VERSION, defaults, presets, models, variants, ui, tokens, migrated_from, notes,
                     prompt_library)


def load(data: bytes | str, specs: Mapping[str, ParamSpec], where: str = "file") -> ConfigDoc:
    """parse() then validate(): the one call an importer needs."""
    return validate(parse(data, where), specs)
