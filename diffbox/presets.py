"""Named form values per workflow: the user's own (db/presets.json) and the shipped ones (presets/*.json).

A preset is {"workflow", "name", "params", "models", "description"}; `params` holds only the values
it sets, `models` the models it needs (same shape as a config's pinned models). A user preset with a
shipped preset's name shadows it; shipped presets cannot be deleted. The shapes are checked by
diffbox.config, the one place the schema lives.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Mapping

from tinydb import Query

from diffbox.config import ConfigError, _Errors, check_name, clean_preset
from diffbox.params import ParamSpec
from diffbox.store import open_db

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "presets"


class PresetError(ValueError):
    """A preset that cannot be saved, found or deleted; the message says why."""


def check(raw: dict, specs: Mapping[str, ParamSpec], where: str = "preset") -> tuple[dict, list[str]]:
    """A cleaned preset and notes (e.g. "workflow not registered yet"), or ConfigError naming the field."""
    errors, notes = _Errors(), []
    preset = clean_preset(raw, where, specs, errors, notes)
    if preset is None:
        raise ConfigError(errors or {where: "is not a preset"})
    return preset, notes


def load_shipped(folder: Path = SHIPPED_DIR, specs: Mapping[str, ParamSpec] | None = None) -> list[dict]:
    """Every valid presets/*.json; a broken one is logged and skipped, never fatal."""
    found = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            preset, _ = check(json.loads(path.read_text(encoding="utf-8")), specs or {}, where=path.name)
        except (OSError, ValueError) as exc:  # ConfigError and JSONDecodeError are ValueErrors
            log.warning("shipped preset %s skipped: %s", path.name, exc)
            continue
        found.append({**preset, "shipped": True})
    return found


class PresetStore:
    def __init__(self, db_path: Path, shipped: list[dict] | None = None):
        self._db = open_db(db_path)
        self._table = self._db.table("presets")
        self._lock = threading.RLock()  # tinydb is not thread-safe
        self.shipped = list(shipped or [])

    @classmethod
    def open(cls, db_dir: Path, specs: Mapping[str, ParamSpec] | None = None) -> "PresetStore":
        return cls(Path(db_dir) / "presets.json", load_shipped(SHIPPED_DIR, specs))

    @staticmethod
    def _same(workflow: str, name: str):
        return (Query().workflow == workflow) & Query().name.test(lambda n: n.casefold() == name.casefold())

    def user_presets(self, workflow: str | None = None) -> list[dict]:
        with self._lock:
            rows = [dict(r) for r in self._table.all()]
        rows = [r for r in rows if workflow is None or r["workflow"] == workflow]
        return sorted(rows, key=lambda r: (r["workflow"], r["name"].casefold()))

    def list(self, workflow: str) -> list[dict]:
        """The user's presets first, then the shipped ones they do not shadow."""
        mine = self.user_presets(workflow)
        taken = {p["name"].casefold() for p in mine}
        return mine + [p for p in self.shipped if p["workflow"] == workflow and p["name"].casefold() not in taken]

    def get(self, workflow: str, name: str) -> dict | None:
        return next((p for p in self.list(workflow) if p["name"].casefold() == str(name).strip().casefold()), None)

    def save(self, preset: dict) -> dict:
        """Inserts or replaces (same workflow and name, case-insensitive) an already-checked preset."""
        record = {k: preset[k] for k in ("workflow", "name", "params", "models", "description") if k in preset}
        record["name"] = check_name(record["name"])
        record.setdefault("models", [])
        with self._lock:
            self._table.remove(self._same(record["workflow"], record["name"]))
            self._table.insert({**record, "updated_at": time.time()})
        return record

    def delete(self, workflow: str, name: str) -> None:
        with self._lock:
            removed = self._table.remove(self._same(workflow, str(name).strip()))
        if removed:
            return
        if any(p["workflow"] == workflow and p["name"].casefold() == str(name).strip().casefold()
               for p in self.shipped):
            raise PresetError(f"{name!r} ships with diffbox and cannot be deleted (save your own under another name)")
        raise PresetError(f"there is no {workflow} preset named {name!r}")

    def close(self) -> None:
        self._db.close()
