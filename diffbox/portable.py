"""A pod's state ↔ a config document: export it, show what an import would change, apply it.

The state a config carries lives in five places: db/preferences.json (the user's defaults per
workflow and UI preferences, written atomically), the preset store, the prompt library (the user's
snippets), the library's pins, and the token store. Import is validate-everything-first (a refused
document applies nothing), then apply; applying the same document twice changes nothing the second
time: values already equal are left alone, models already in the library or already downloading are
not queued again.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from diffbox import __version__
from diffbox.config import CURRENT_VERSION, MAX_SNIPPETS, ConfigDoc, ConfigError, load, model_key, snippet_key
from diffbox.hub import HubError
from diffbox.hub.variants import Ref
from diffbox.store import atomic_write_bytes
from diffbox.logs import register_secrets
from diffbox.markup import code, md
from diffbox.params import InvalidParams, ParamSpec
from diffbox.store import atomic_write_text

log = logging.getLogger(__name__)

ACTIVE_DOWNLOADS = ("queued", "downloading", "verifying")


# ---------------------------------------------------------------------------------------------
# db/preferences.json: the user's defaults and UI preferences
# ---------------------------------------------------------------------------------------------


def preferences_path(db_dir: Path) -> Path:
    return Path(db_dir) / "preferences.json"


def read_preferences(db_dir: Path) -> dict:
    """{"defaults": {workflow: {param: value}}, "ui": {...}}; an unreadable file is kept aside, not lost."""
    path = preferences_path(db_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("defaults", {}), dict):
            return {"defaults": data.get("defaults", {}), "ui": data.get("ui", {})}
        raise ValueError("not an object")
    except FileNotFoundError:
        return {"defaults": {}, "ui": {}}
    except (OSError, ValueError):
        aside = path.with_name(f"preferences.corrupt-{time.strftime('%Y%m%d-%H%M%S')}.json")
        path.replace(aside)
        log.warning("%s was unreadable; moved it aside to %s and started with no saved defaults", path, aside)
        return {"defaults": {}, "ui": {}}


def write_preferences(db_dir: Path, preferences: dict) -> None:
    atomic_write_text(preferences_path(db_dir), json.dumps(preferences, indent=2, ensure_ascii=False))


def apply_user_defaults(specs: dict[str, ParamSpec], db_dir: Path) -> dict[str, ParamSpec]:
    """The specs with the user's saved defaults on top (called at start, after the demo defaults).

    A saved default the spec no longer accepts (a parameter renamed, a range narrowed) is skipped
    with a log line rather than stopping the app.
    """
    saved = read_preferences(db_dir)["defaults"]
    result = dict(specs)
    for workflow, values in saved.items():
        if workflow not in result or not isinstance(values, dict):
            continue
        try:
            result[workflow] = result[workflow].with_defaults(values)
        except InvalidParams as exc:
            log.warning("saved %s defaults skipped: %s", workflow, exc)
    return result


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def _pin_entry(pin: dict, library) -> dict | None:
    """A library pin → a config model entry; local models cannot be fetched on another pod."""
    if pin["source"] not in ("hf", "civitai"):
        return None
    local = [m for m in library.models() if (m.source, m.model_id) == (pin["source"], pin["model_id"])]
    whole_repo = any(m.kind == "diffusers" or m.path.is_dir() for m in local)
    files = [{"name": f.get("name", ""), "size": int(f.get("size") or 0), "sha256": f.get("sha256") or ""}
             for f in pin.get("files") or [] if f.get("name")]
    entry = {"source": pin["source"], "id": pin["model_id"], "revision": str(pin.get("revision") or ""),
             "files": files, "whole_repo": whole_repo and pin["source"] == "hf"}
    if entry["whole_repo"] and local:  # a variant's base, here without its experts' weights: fetch it so again
        entry["without"] = sorted({c for m in local for c in m.missing_weights})
    return entry


def _variant_exports(library) -> tuple[list[dict], list[dict]]:
    """The library's variants another pod can fetch (no hand-copied part) and the model entries that fetch
    their files: the base as a whole repo without the replaced components' weights, each part as a file
    with the revision and sha256 its download recorded."""
    variants, entries = [], {}
    for variant in library.variants(refresh=False):
        refs = [variant.base, *variant.parts.values()]
        if any(ref.source not in ("hf", "civitai") for ref in refs):
            continue
        variants.append(variant.to_dict())
        base = variant.base_model_found
        entry = entries.setdefault((variant.base.source, variant.base.id), {
            "source": variant.base.source, "id": variant.base.id, "revision": getattr(base, "revision", "") or "",
            "files": [], "whole_repo": variant.base.source == "hf", "without": []})
        entry["without"] = sorted({*entry.get("without", []), *variant.parts})
        for component, ref in variant.parts.items():
            part = variant.parts_found.get(component)
            entry = entries.setdefault((ref.source, ref.id), {
                "source": ref.source, "id": ref.id, "revision": getattr(part, "revision", "") or "", "files": [],
                "whole_repo": False})
            if all(f["name"] != ref.file for f in entry["files"]):
                entry["files"].append({"name": ref.file, "size": part.size if part else 0,
                                       "sha256": part.sha256 if part else ""})
    return variants, list(entries.values())


def export_document(services, include_tokens: bool = False) -> dict:
    preferences = read_preferences(services.settings.db_dir)
    defaults = {w: dict(preferences["defaults"].get(w, {})) for w in sorted({*services.specs,
                                                                             *preferences["defaults"]})}
    presets = [{k: p[k] for k in ("workflow", "name", "description", "params", "models") if k in p}
               for p in services.presets.user_presets()]
    models = []
    if services.library is not None:
        models = [e for e in (_pin_entry(p, services.library) for p in services.library.pins()) if e]
        variants, needed = _variant_exports(services.library)
        pinned = {(m["source"], m["id"]): m for m in models}
        for entry in needed:
            mine = pinned.get((entry["source"], entry["id"]))
            if mine is None:
                models.append(entry)
            elif mine["whole_repo"]:
                mine.setdefault("without", entry.get("without", []))  # the base is not here yet: the variant knows
            else:  # a pinned file of the same repo: one entry lists both
                names = {f["name"] for f in mine["files"]}
                mine["files"] += [f for f in entry["files"] if f["name"] not in names]
        models.sort(key=lambda m: (m["source"], m["id"]))
    doc: dict[str, Any] = {"version": CURRENT_VERSION, "app": f"diffbox {__version__}",
                           "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "defaults": defaults, "presets": presets, "models": models, "ui": preferences["ui"]}
    if services.library is not None and variants:
        doc["variants"] = variants
    snippets = _user_snippets(services)
    if snippets:  # left out when empty: such a file still imports on a diffbox from before the prompt library
        doc["prompt_library"] = snippets
    if include_tokens and services.tokens is not None:
        tokens = {s: services.tokens.get(s) for s in ("hf", "civitai")}
        doc["tokens"] = {s: t for s, t in tokens.items() if t}
    return doc


def export_file(services, include_tokens: bool = False, *, folder: Path) -> Path:
    """Writes the export (0600: it may hold tokens) into `folder` and returns its path.

    Nothing is kept under the home: the caller owns the folder, hands the file over and removes it
    (the UI and API write into a one-time folder, see diffbox.ui.handover).
    """
    path = Path(folder) / f"diffbox-config-{time.strftime('%Y%m%d-%H%M%S')}{'-with-tokens' if include_tokens else ''}.json"
    doc = export_document(services, include_tokens)
    atomic_write_bytes(path, json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8"), mode=0o600)
    log.info("config exported (%d preset(s), %d model(s), tokens %s)", len(doc["presets"]), len(doc["models"]),
             "included" if "tokens" in doc else "left out")
    return path


def remove_kept_exports(cache_dir: Path) -> int:
    """Earlier versions kept the last ten exports, some with tokens, in cache/exports/; they go at start."""
    folder = Path(cache_dir) / "exports"
    removed = 0
    for old in folder.glob("diffbox-config-*.json"):
        old.unlink(missing_ok=True)
        removed += 1
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return removed


# ---------------------------------------------------------------------------------------------
# Import: what would change, then apply
# ---------------------------------------------------------------------------------------------


def _requests(model: dict) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(source, model_id with @revision, file, component folders fetched without weights) per download."""
    ref = f"{model['id']}@{model['revision']}" if model["revision"] else model["id"]
    if model["whole_repo"] or not model["files"]:
        return [(model["source"], ref, "", tuple(model.get("without", ())))]
    return [(model["source"], ref, f["name"], ()) for f in model["files"]]


def _same_revision(model: dict, revision: str) -> bool:
    """An HF branch name ("main") resolves to a commit: then any revision already here will do."""
    wanted = model["revision"]
    if not wanted or (model["source"] == "hf" and len(wanted) != 40):
        return True
    return str(revision) == wanted


def _model_state(model: dict, library, downloads: list[dict]) -> str:
    """"present", "downloading" or "download"."""
    local = [m for m in library.models() if (m.source, m.model_id) == (model["source"], model["id"])
             and _same_revision(model, m.revision)]
    if local:
        if model["whole_repo"] or not model["files"]:
            return "present"
        have = {Path(f.name).name for m in local for f in m.files} | {f.sha256 for m in local for f in m.files}
        if all(Path(f["name"]).name in have or (f["sha256"] and f["sha256"] in have) for f in model["files"]):
            return "present"
    if model["files"] and all(f["sha256"] and library.find_sha256(f["sha256"]) for f in model["files"]):
        return "present"
    for d in downloads:
        if d["state"] in ACTIVE_DOWNLOADS and (d["source"], d["model_id"]) == (model["source"], model["id"]) \
                and _same_revision(model, d["revision"]):
            return "downloading"
    return "download"


def _all_models(doc: ConfigDoc) -> list[dict]:
    """The pinned models and those the presets need, once each."""
    seen, models = set(), []
    for model in [*doc.models, *(m for p in doc.presets for m in p["models"])]:
        if model_key(model) not in seen:
            seen.add(model_key(model))
            models.append(model)
    return models


def _label(model: dict) -> str:
    return f"{model['source']}:{model['id']}" + (f"@{model['revision'][:12]}" if model["revision"] else "")


def _user_snippets(services) -> list[dict]:
    library = getattr(services, "prompt_library", None)
    return library.user_snippets() if library is not None else []


def _plan_snippets(services, doc: ConfigDoc) -> dict[str, list[str]]:
    """Each snippet of the document as "category/name": added, changed (its text or the case of its name),
    or unchanged."""
    mine = {snippet_key(s): s for s in _user_snippets(services)}
    plan: dict[str, list[str]] = {"added": [], "changed": [], "unchanged": []}
    for snippet in doc.prompt_library:
        current = mine.get(snippet_key(snippet))
        state = "added" if current is None else "unchanged" if current == snippet else "changed"
        plan[state].append(f"{snippet['category']}/{snippet['name']}")
    if len(mine) + len(plan["added"]) > MAX_SNIPPETS:  # refused before anything is applied
        raise ConfigError({"prompt_library": f"would give you {len(mine) + len(plan['added']):,} snippets, at most "
                                             f"{MAX_SNIPPETS:,}: delete some of yours first"})
    return plan


def plan_import(services, doc: ConfigDoc) -> dict:
    """What applying `doc` would change: the diff shown before applying, and the report after."""
    preferences = read_preferences(services.settings.db_dir)
    defaults: dict[str, dict] = {}
    for workflow, values in doc.defaults.items():
        saved = preferences["defaults"].get(workflow, {})
        spec = services.specs.get(workflow)
        for name, value in values.items():
            if name in saved and saved[name] == value:
                continue
            current = spec[name].default if spec is not None and name in spec else saved.get(name)
            defaults.setdefault(workflow, {})[name] = {"from": current, "to": value}
    presets: dict[str, list[str]] = {"added": [], "changed": [], "unchanged": []}
    for preset in doc.presets:
        mine = next((p for p in services.presets.user_presets(preset["workflow"])
                     if p["name"].casefold() == preset["name"].casefold()), None)
        same = mine is not None and all(mine.get(k, d) == preset.get(k, d) for k, d in
                                        (("params", {}), ("models", []), ("description", ""), ("name", "")))
        presets["unchanged" if same else "changed" if mine else "added"].append(f"{preset['workflow']}/{preset['name']}")
    downloads = services.downloads.list() if services.downloads is not None else []
    pinned = {(p["source"], p["model_id"]) for p in services.library.pins()} if services.library else set()
    models: dict[str, list] = {"download": [], "present": [], "downloading": [], "pin": [],
                               "not_queued": [], "not_pinned": []}  # the last two: filled in by apply()
    download_bytes = 0
    for model in _all_models(doc):
        state = _model_state(model, services.library, downloads) if services.library else "download"
        entry = {"model": _label(model), "files": [f["name"] for f in model["files"]] or ["(whole repo)"],
                 "size": sum(f["size"] for f in model["files"])}
        models[state].append(entry)
        if state == "download":
            download_bytes += entry["size"]
    for model in doc.models:
        if (model["source"], model["id"]) not in pinned:
            models["pin"].append(_label(model))
    known = {v.name: v.to_dict() for v in services.library.variant_records.records()} if services.library else {}
    variants = {"added": [v["name"] for v in doc.variants if known.get(v["name"]) != v],
                "unchanged": [v["name"] for v in doc.variants if known.get(v["name"]) == v]}
    ui = {k: {"from": preferences["ui"].get(k), "to": v} for k, v in doc.ui.items() if preferences["ui"].get(k) != v}
    tokens = {}
    for source, token in doc.tokens.items():
        current = services.tokens.get(source) if services.tokens else None
        if current != token:
            tokens[source] = "replaced" if current else "set"
    snippets = _plan_snippets(services, doc)
    changes = (sum(len(v) for v in defaults.values()) + len(presets["added"]) + len(presets["changed"])
               + len(models["download"]) + len(models["pin"]) + len(variants["added"]) + len(ui) + len(tokens)
               + len(snippets["added"]) + len(snippets["changed"]))
    return {"version": doc.version, "migrated_from": doc.migrated_from, "changes": changes,
            "defaults": defaults, "presets": presets, "prompt_library": snippets, "models": models,
            "download_bytes": download_bytes,
            "variants": variants, "ui": ui, "tokens": tokens, "notes": list(doc.notes), "applied": False,
            "download_ids": [],
            "errors": []}


def apply(services, doc: ConfigDoc) -> dict:
    """Applies a validated document; returns plan_import()'s report with what was done."""
    register_secrets(doc.tokens.values())
    report = plan_import(services, doc)
    db_dir = services.settings.db_dir
    if report["defaults"] or report["ui"]:
        preferences = read_preferences(db_dir)
        for workflow, changed in report["defaults"].items():
            values = {name: doc.defaults[workflow][name] for name in changed}
            preferences["defaults"].setdefault(workflow, {}).update(values)
            if workflow in services.specs:
                services.specs[workflow] = services.specs[workflow].with_defaults(values)
        preferences["ui"].update(doc.ui)
        write_preferences(db_dir, preferences)
    changed_presets = {*report["presets"]["added"], *report["presets"]["changed"]}
    for preset in doc.presets:
        if f"{preset['workflow']}/{preset['name']}" in changed_presets:
            services.presets.save(preset)
    changed_snippets = {*report["prompt_library"]["added"], *report["prompt_library"]["changed"]}
    for snippet in doc.prompt_library:
        if f"{snippet['category']}/{snippet['name']}" in changed_snippets:
            services.prompt_library.save(snippet)
    for source, token in doc.tokens.items():
        if source in report["tokens"]:
            services.tokens.set(source, token)
    if services.library is not None:
        _apply_models(services, doc, report)
        for variant in doc.variants:  # offered in the pickers once the files queued above have landed
            if variant["name"] in report["variants"]["added"]:
                services.library.variant_records.add(
                    variant["name"], variant["base_model"], Ref.from_dict(variant["base"]),
                    {c: Ref.from_dict(ref) for c, ref in variant["parts"].items()})
    report["applied"] = True
    log.info("config imported: %d change(s), %d download(s) queued, %d problem(s)", report["changes"],
             len(report["download_ids"]), len(report["errors"]))
    return report


def _resolved(model: dict) -> bool:
    """A pin another pod can fetch exactly: a fixed revision (an HF commit, a Civitai version id) and a
    source hash for each file (a whole HF repo is fixed by its commit)."""
    fixed = model["revision"] and (model["source"] != "hf" or len(model["revision"]) == 40)
    return bool(fixed) and (model["whole_repo"] or bool(model["files"]) and all(f["sha256"] for f in model["files"]))


def _as_resolved(plan: dict) -> dict:
    """A download's plan as a pin: its revision, and its files with their source sizes and hashes."""
    files = [] if plan["whole_repo"] else [{"name": f["path"], "size": f["size"], "sha256": f["sha256"]}
                                           for f in plan["files"]]
    return {"revision": plan["revision"], "files": files}


def _apply_models(services, doc: ConfigDoc, report: dict) -> None:
    """Queues the downloads, then pins. A pin records the revision and hashes a download resolved;
    a model whose download could not be queued (hub unreachable, no token) and whose entry names no
    fixed revision and hashes is not pinned: an export would list it with revision "" and sha256 "".
    Neither counts as a change, so importing the same file again reports none."""
    wanted = {entry["model"] for entry in report["models"]["download"]}
    present = {entry["model"] for entry in report["models"]["present"]}
    to_pin = set(report["models"]["pin"])
    not_queued, not_pinned = [], []
    for model in _all_models(doc):
        label, plans, failed = _label(model), [], False
        if label in wanted:
            for source, ref, file, without in _requests(model):
                try:
                    download_id = services.downloads.request(source, ref, file, without=without)
                except HubError as exc:
                    failed = True
                    report["errors"].append(f"{label}{'/' + file if file else ''}: could not be queued: {exc}")
                    continue
                report["download_ids"].append(download_id)
                plans.append(services.downloads.plan(download_id))
            if failed and not plans:
                not_queued.append(label)
        if label not in to_pin:
            continue
        pin = {"revision": model["revision"], "files": model["files"]}  # a model in the library: it fills them in
        if not _resolved(model) and label not in present:
            plans = plans if not failed else []
            plans = plans or [services.downloads.plan(d["id"]) for d in services.downloads.list()
                              if d["state"] in ACTIVE_DOWNLOADS and (d["source"], d["model_id"]) == (
                                  model["source"], model["id"])]
            if not plans:
                not_pinned.append(label)
                continue
            pin = {"revision": plans[0]["revision"], "files": [f for p in plans for f in _as_resolved(p)["files"]]}
        services.library.pin(model["source"], model["id"], True, revision=pin["revision"], files=pin["files"])
    models = report["models"]
    models["not_queued"] = not_queued
    models["not_pinned"] = not_pinned
    models["download"] = [entry for entry in models["download"] if entry["model"] not in not_queued]
    models["pin"] = [label for label in models["pin"] if label not in not_pinned]
    report["changes"] -= len(not_queued) + len(not_pinned)
    report["download_bytes"] = sum(entry["size"] for entry in models["download"])


def read_document(services, data: bytes | str, where: str = "file") -> ConfigDoc:
    """Parses and validates against the registered workflows (ConfigError on anything wrong)."""
    return load(data, services.specs, where)


def import_bytes(services, data: bytes | str, *, dry_run: bool = False, where: str = "file") -> dict:
    doc = read_document(services, data, where)
    return plan_import(services, doc) if dry_run else apply(services, doc)


def summary(report: dict) -> str:
    """The report as a few Markdown lines for the UI (never a token value). Every name and value comes from
    the uploaded file, so each is shown literally (diffbox.markup): an image or link in it stays text."""
    lines = []
    if report.get("migrated_from") is not None:
        lines.append(f"- migrated from version {code(report['migrated_from'])}")
    for workflow, changed in report["defaults"].items():
        shown = ", ".join(f"{code(k)} {code(repr(v['from']))} → {code(repr(v['to']))}"
                          for k, v in list(changed.items())[:12])
        lines.append(f"- **{md(workflow)} defaults**: {shown}" + (" …" if len(changed) > 12 else ""))
    for what in ("added", "changed"):
        if report["presets"][what]:
            lines.append(f"- presets {what}: {', '.join(code(name) for name in report['presets'][what])}")
    for what in ("added", "changed"):
        names = report.get("prompt_library", {}).get(what, [])
        if names:
            more = f" and {len(names) - 20} more" if len(names) > 20 else ""
            lines.append(f"- prompt snippets {what}: {', '.join(code(name) for name in names[:20])}{more}")
    models = report["models"]
    if models["download"]:
        lines.append(f"- **download** {len(models['download'])} model(s), "
                     f"{report['download_bytes'] / 1e9:.2f} GB: "
                     + ", ".join(code(m["model"]) for m in models["download"]))
    if models["downloading"]:
        lines.append(f"- already downloading: {', '.join(code(m['model']) for m in models['downloading'])}")
    if models["present"]:
        lines.append(f"- already here: {', '.join(code(m['model']) for m in models['present'])}")
    if models["pin"]:
        lines.append(f"- pin: {', '.join(code(label) for label in models['pin'])}")
    if report.get("variants", {}).get("added"):
        lines.append(f"- model variants: {', '.join(code(name) for name in report['variants']['added'])}")
    for key, change in report["ui"].items():
        lines.append(f"- UI {code(key)}: {code(repr(change['from']))} → {code(repr(change['to']))}")
    for source, what in report["tokens"].items():
        lines.append(f"- {md(source)} token will be {what}" if not report["applied"] else f"- {md(source)} token {what}")
    lines += [f"- note: {md(note)}" for note in report["notes"]]
    if models.get("not_queued"):
        lines.append("- **not queued**, nothing downloads: " + ", ".join(code(label) for label in models["not_queued"]))
    if models.get("not_pinned"):
        lines.append("- **not pinned** (no fixed revision and hashes until its download is queued): "
                     + ", ".join(code(label) for label in models["not_pinned"]))
    lines += [f"- **problem**: {md(error)}" for error in report["errors"]]
    unchanged = "no changes." if report["errors"] else "no changes (already up to date)."
    head = ("Applied: " if report["applied"] else "This import would make ") + (
        f"{report['changes']} change(s)." if report["changes"] else unchanged)
    if report["applied"] and models.get("not_queued"):
        head += " Some models could not be queued and nothing downloads for them; try again once the hub answers."
    return "\n".join([head, *lines])


__all__ = ["ConfigError", "apply", "apply_user_defaults", "export_document", "export_file", "import_bytes",
           "plan_import", "read_document", "read_preferences", "remove_kept_exports", "summary", "write_preferences"]


def import_at_start(services, source: str) -> dict | None:
    """--config / DIFFBOX_CONFIG: a path or an http(s) URL. Never raises: the app must start anyway."""
    from diffbox.config import read_source

    try:
        report = import_bytes(services, read_source(source), where="--config/DIFFBOX_CONFIG")
    except ConfigError as exc:
        log.error("config from --config/DIFFBOX_CONFIG not applied: %s", exc)
        return None
    except Exception as exc:  # noqa: BLE001 - a disk or hub failure must not stop the app from starting
        log.exception("config from --config/DIFFBOX_CONFIG failed while applying: %s", exc)
        return None
    log.info("config from --config/DIFFBOX_CONFIG applied: %s", summary(report).replace("\n", " "))
    return report
