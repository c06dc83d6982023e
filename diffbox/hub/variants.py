"""Model variants: one diffusers base with some components taken from single files, shown as one model.

A published Wan 2.2 I2V A14B is a diffusers repo whose two experts ship in float32 (57 GB each); pods
run it from the same base (text encoder, VAE, tokenizer, scheduler, the experts' configs) with the
experts from 16-bit, fp8 or GGUF single files instead. Such a combination is a *variant*: a record in
db/library.json naming its base and each replaced component by where it comes from, e.g.

    {"name": "Wan2.2-I2V-A14B · GGUF Q8_0", "base_model": "wan2.2-i2v",
     "base": {"source": "hf", "id": "Wan-AI/Wan2.2-I2V-A14B-Diffusers", "file": ""},
     "parts": {"transformer": {"source": "hf", "id": "QuantStack/Wan2.2-I2V-A14B-GGUF",
                               "file": "HighNoise/Wan2.2-I2V-A14B-HighNoise-Q8_0.gguf"}, ...}}

A reference names a download by source, repo / model id and file (so the record means the same on any
pod and round-trips through the portable config) or a hand-copied model by its library name
(``{"source": "local", "id": "checkpoints/high.gguf"}``). It is resolved against the library each time:
a variant is ready, and offered in the forms, once its base and every part are there.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from tinydb import Query

# Components a variant may replace; the loader accepts a single file for each.
COMPONENTS = ("transformer", "transformer_2", "text_encoder")
MAX_NAME = 80
NAME = re.compile(r"[^\x00-\x1f/\\]{1,80}")


@dataclass(frozen=True)
class Ref:
    source: str  # hf | civitai | local
    id: str      # repo id, Civitai model id, or the library name of a local model
    file: str = ""  # the file in the repo ("" for a diffusers repo or a local model)

    def to_dict(self) -> dict:
        return {"source": self.source, "id": self.id, "file": self.file}

    @classmethod
    def from_dict(cls, data: dict) -> "Ref":
        return cls(str(data["source"]), str(data["id"]), str(data.get("file") or ""))


@dataclass(frozen=True)
class Variant:
    name: str
    base_model: str
    base: Ref
    parts: dict[str, Ref]
    # Resolved against the library (None: not here yet); filled in by Variants.list().
    base_model_found: object = None
    parts_found: dict[str, object] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.base_model_found is not None and all(self.parts_found.get(c) is not None for c in self.parts)

    @property
    def pipeline_class(self) -> str:
        return getattr(self.base_model_found, "pipeline_class", "")

    @property
    def missing(self) -> list[str]:
        """What is not in the library yet, as "base" / component names."""
        return ([] if self.base_model_found is not None else ["base"]) + [
            c for c in self.parts if self.parts_found.get(c) is None]

    def to_dict(self) -> dict:
        return {"name": self.name, "base_model": self.base_model, "base": self.base.to_dict(),
                "parts": {c: ref.to_dict() for c, ref in sorted(self.parts.items())}}


def check_variant(name: str, parts: dict) -> str:
    """The variant's name, cleaned, or ValueError naming the field."""
    name = str(name or "").strip()
    if not NAME.fullmatch(name):
        raise ValueError(f"variant name: 1 to {MAX_NAME} characters without / or control characters, got {name[:40]!r}")
    unknown = [c for c in parts if c not in COMPONENTS]
    if unknown or not parts:
        raise ValueError(f"variant parts: name components among {', '.join(COMPONENTS)}, got {sorted(parts)}")
    return name


def _matches(model, ref: Ref, want_folder: bool) -> bool:
    if ref.source == "local":
        return model.name == ref.id
    if (model.source, model.model_id) != (ref.source, ref.id):
        return False
    if want_folder:
        return model.path.is_dir()
    wanted = PurePosixPath(ref.file).name
    return not model.path.is_dir() and any(PurePosixPath(f.name).name == wanted for f in model.files)


def resolve(ref: Ref, models: list, want_folder: bool):
    """The library model a reference names, or None."""
    return next((m for m in models if _matches(m, ref, want_folder)), None)


class Variants:
    """The variants table of the library's database (the library's lock guards tinydb)."""

    def __init__(self, table, lock: threading.RLock):
        self._table = table
        self._lock = lock

    def add(self, name: str, base_model: str, base: Ref, parts: dict[str, Ref]) -> Variant:
        """Records (or replaces) a variant; its files need not be here yet."""
        name = check_variant(name, parts)
        variant = Variant(name, base_model, base, dict(parts))
        with self._lock:
            self._table.upsert(variant.to_dict(), Query().name == name)
        return variant

    def remove(self, name: str) -> bool:
        with self._lock:
            return bool(self._table.remove(Query().name == name))

    def records(self) -> list[Variant]:
        with self._lock:
            rows = self._table.all()
        return [Variant(r["name"], r.get("base_model", ""), Ref.from_dict(r["base"]),
                        {c: Ref.from_dict(p) for c, p in r["parts"].items()}) for r in rows]

    def list(self, models: list) -> list[Variant]:
        """Every variant with its base and parts resolved against ``models`` (the library's)."""
        return sorted((Variant(v.name, v.base_model, v.base, v.parts, resolve(v.base, models, True),
                               {c: resolve(ref, models, False) for c, ref in v.parts.items()})
                       for v in self.records()), key=lambda v: v.name)
