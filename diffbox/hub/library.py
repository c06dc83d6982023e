"""The local model library: every model under models/, what it is, where it came from.

A model is a diffusers pipeline folder (model_index.json), a component folder (config.json:
a ControlNet, VAE or transformer) or a single .safetensors/.gguf file. Its kind and base model
are read from the files themselves (class names, safetensors keys and metadata), so models a
user copies in by hand are recognised too; downloads add their source, id, revision and the
source's sha256. Facts are kept in db/library.json and refreshed by a cheap rescan
(stat only; a file is re-read only when its size or mtime changed).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tinydb import Query

from diffbox.base_models import BASE_MODELS, BY_KEY
from diffbox.engine.checkpoints import COMFY_PREFIX, text_encoder_family
from diffbox.engine.weight_files import sha256_file
from diffbox.hub.safety import WEIGHT_SUFFIXES, UnsafeFile, validate_weights
from diffbox.hub.variants import Variant, Variants
from diffbox.store import open_db

log = logging.getLogger(__name__)

MAX_DEPTH = 4
KINDS = ("diffusers", "checkpoint", "lora", "vae", "controlnet", "text_encoder", "upscaler")
UNKNOWN = "unknown"
SOURCES = ("hf", "civitai", "local")
SOURCE_ALIASES = {"hf": "hf", "huggingface": "hf", "hugging face": "hf", "hugging_face": "hf", "civitai": "civitai",
                  "local": "local"}
# Where downloads of each kind go, below models/.
KIND_FOLDERS = {"lora": "loras", "checkpoint": "checkpoints", "vae": "vae", "controlnet": "controlnet",
                "diffusers": "diffusers", "text_encoder": "text_encoders", "upscaler": "upscalers"}
WEIGHT_FILE_SUFFIXES = (*WEIGHT_SUFFIXES, ".bin")  # .bin: only to recognise a hand-copied folder


def normalise_source(source: str) -> str:
    try:
        return SOURCE_ALIASES[str(source).strip().lower()]
    except KeyError:
        raise ValueError(f"source: unknown source {str(source)[:40]!r}; use hf or civitai") from None


@dataclass(frozen=True)
class ModelFile:
    name: str        # relative to the model's folder (or the file's own name)
    size: int
    sha256: str = ""


@dataclass(frozen=True)
class LocalModel:
    name: str                  # path relative to models/, shown in dropdowns and stored in params
    path: Path
    pipeline_class: str = ""   # model_index.json's / config.json's _class_name; "" for single files
    kind: str = "checkpoint"
    base_model: str = UNKNOWN
    source: str = "local"      # hf | civitai | local (copied in by hand, or demo)
    model_id: str = ""         # HF repo id / Civitai model id; the name for local models
    revision: str = ""         # HF commit / Civitai version id
    files: tuple[ModelFile, ...] = ()
    pinned: bool = False
    verified: bool = False     # sha256 checked against the source's hash at download

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def sha256(self) -> str:
        return self.files[0].sha256 if len(self.files) == 1 and self.path.is_file() else ""

    @property
    def missing_weights(self) -> tuple[str, ...]:
        """A diffusers folder's components that have a config but no weights: a variant's base, fetched
        without the experts it takes from single files. Such a folder is not a model on its own."""
        if self.kind != "diffusers":
            return ()
        configured = {f.name.split("/")[0] for f in self.files if f.name.count("/") == 1
                      and f.name.endswith("/config.json")}
        weighted = {f.name.split("/")[0] for f in self.files if "/" in f.name
                    and f.name.lower().endswith(WEIGHT_FILE_SUFFIXES)}
        return tuple(sorted(configured - weighted))

    def to_dict(self) -> dict:
        # "local_path", not "path": gradio_client takes any dict with a "path" for a file to download.
        return {"name": self.name, "local_path": str(self.path), "kind": self.kind, "base_model": self.base_model,
                "pipeline_class": self.pipeline_class, "source": self.source, "model_id": self.model_id,
                "revision": self.revision, "size": self.size, "sha256": self.sha256, "pinned": self.pinned,
                "verified": self.verified,
                "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in self.files]}


@dataclass
class Detected:
    kind: str
    base_model: str = UNKNOWN
    pipeline_class: str = ""
    notes: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Recognising a model from its files
# ---------------------------------------------------------------------------------------------

# Wan: `blocks.0.attn1` (diffusers), `blocks.0.self_attn` (original/ComfyUI), `lora_unet_blocks_0_self_attn` (kohya).
WAN_KEY = re.compile(r"(?:^|\.)blocks\.\d+\.(?:attn1|attn2|self_attn|cross_attn)\.|lora_unet_blocks_\d+_(?:self|cross)_attn")
# Qwen-Image: modulation/MLP per stream, and the joint attention's added projections.
QWEN_KEY = re.compile(r"transformer_blocks[._]\d+[._](?:img_mod|txt_mod|img_mlp|txt_mlp|attn[._]add_[qkv]_proj)")
LORA_KEY = re.compile(r"lora_(?:a|b|down|up)\b|\.lora\.|hada_w|lokr_w", re.IGNORECASE)
VAE_PREFIXES = ("encoder.", "decoder.", "quant_conv", "post_quant_conv", "conv1.", "conv2.", "first_stage_model.")
WAN_14B_DIM = 5120


def hint_base_model(text: str) -> str | None:
    """A base model named in a file name or metadata, e.g. `wan2.2_i2v_lightx2v` or `qwen-image-edit-2509`."""
    flat = re.sub(r"[\s_\-]", "", text.lower())
    if "qwen" in flat:
        return "qwen-edit" if "edit" in flat else "qwen-image"
    if "wan" in flat:
        if re.search(r"wan2\.?2", flat) and "i2v" in flat:
            return "wan2.2-i2v"
        if re.search(r"wan2\.?1", flat):
            return "wan2.1"
    return None


def _wan_width(header: dict) -> int | None:
    """The transformer width a Wan file was made for (LoRA in-features or the checkpoint's dim)."""
    for key, info in header.items():
        shape = info.get("shape") if isinstance(info, dict) else None
        if not shape or len(shape) < 2:
            continue
        if re.search(r"(?:self_attn|attn1)[._](?:q|to_q)[._]lora_(?:a|down)", key, re.IGNORECASE):
            return shape[1]
        if key.endswith("patch_embedding.weight"):
            return shape[0]
    return None


def _gguf_header(path: Path) -> dict:
    """{tensor name: {"shape": [...]}} of a GGUF file from its header (memory-mapped, no tensor data);
    {} without the gguf package or when its reader fails, and the file name has to do."""
    try:
        import gguf

        reader = gguf.GGUFReader(str(path))
    except Exception:
        return {}
    # GGUF lists dimensions innermost first
    return {t.name: {"shape": [int(d) for d in reversed(t.shape)]} for t in reader.tensors}


def detect_file(path: Path) -> Detected:
    """Kind and base model of a single weights file, from its safetensors (or GGUF) header, never loading it."""
    header = validate_weights(path)  # raises UnsafeFile for anything malformed, truncated or pickled
    metadata = header.pop("__metadata__", {}) if header else {}
    if path.name.lower().endswith(".gguf"):
        header = _gguf_header(path)  # Wan GGUFs keep the original names, Qwen's the diffusers ones
    keys = list(header)
    hint = hint_base_model(path.name) or hint_base_model(" ".join(f"{k}={v}" for k, v in metadata.items()
                                              if k.startswith(("ss_base_model", "modelspec.architecture"))))
    if any(LORA_KEY.search(k) for k in keys):
        kind = "lora"
    elif any("controlnet" in k.lower() for k in keys) or "controlnet" in path.name.lower():
        kind = "controlnet"
    elif keys and all(k.startswith(VAE_PREFIXES) for k in keys) or "vae" in path.name.lower():
        kind = "vae"
    elif text_encoder_family(k.removeprefix(COMFY_PREFIX) for k in keys):
        kind = "text_encoder"  # UMT5 / Qwen2.5-VL saved alone: not a checkpoint any form can load
    elif _is_upscaler(header):
        kind = "upscaler"  # an ESRGAN-family (or other spandrel) super-resolution model
    else:
        kind = "checkpoint"
    if any(WAN_KEY.search(k) for k in keys):
        width = _wan_width(header)
        base = "wan2.1" if hint == "wan2.1" or (width is not None and width < WAN_14B_DIM and width in (1536, 3072)) \
            else "wan2.2-i2v"
    elif any(QWEN_KEY.search(k) for k in keys) and not any("single_transformer_blocks" in k for k in keys):
        base = "qwen-edit" if hint == "qwen-edit" else "qwen-image"  # (Flux has single_transformer_blocks)
    else:
        base = hint or UNKNOWN
    return Detected(kind, base)


def _is_upscaler(header: dict) -> bool:
    from diffbox.engine.upscale import architecture_of  # imported on use: it brings torch and spandrel

    return architecture_of(header) is not None


def _pipeline_base(index: dict) -> str:
    cls = index.get("_class_name", "")
    if cls.startswith("Wan"):
        two_experts = index.get("boundary_ratio") is not None or any(index.get("transformer_2") or [])
        return "wan2.2-i2v" if cls == "WanImageToVideoPipeline" and two_experts else "wan2.1"
    if cls.startswith("QwenImageEdit"):
        return "qwen-edit"
    if cls.startswith("QwenImage"):
        return "qwen-image"
    return UNKNOWN


def _component(config: dict) -> Detected:
    cls = config.get("_class_name", "")
    base = "qwen-image" if cls.startswith("QwenImage") or "QwenImage" in cls else (
        "wan2.1" if "Wan" in cls else UNKNOWN)
    if "ControlNet" in cls:
        return Detected("controlnet", base, cls)
    if cls.startswith("Autoencoder"):
        return Detected("vae", base, cls)
    if cls == "WanTransformer3DModel" and config.get("in_channels") == 36:
        base = "wan2.2-i2v"
    return Detected("checkpoint", base, cls)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("_class_name"), str) else None


def detect_folder(folder: Path) -> Detected | None:
    index = _read_json(folder / "model_index.json")
    if index is not None:
        return Detected("diffusers", _pipeline_base(index), index["_class_name"])
    config = _read_json(folder / "config.json")
    if config is not None and any(p.name.endswith(WEIGHT_FILE_SUFFIXES) for p in folder.iterdir()):
        return _component(config)
    return None


def folder_files(folder: Path, limit_depth: int = 3) -> list[tuple[str, int, int]]:
    """(relative name, size, mtime_ns) of every visible file in a model folder, sorted."""
    found = []
    for current, subdirs, files in os.walk(folder, followlinks=True):
        depth = len(Path(current).relative_to(folder).parts)
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and depth < limit_depth)
        for name in files:
            if name.startswith("."):
                continue
            path = Path(current) / name
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append((path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns))
    return sorted(found)


def find_candidates(models_dir: Path) -> list[tuple[str, Path]]:
    """(name relative to models/, path) of every model folder and loose weights file.

    Hidden folders are skipped: `.downloads/` holds unfinished and unverified downloads.
    """
    models_dir = Path(models_dir)
    found: list[tuple[str, Path]] = []
    if not models_dir.is_dir():
        return found
    for current, subdirs, files in os.walk(models_dir, followlinks=True):  # users symlink model folders in
        folder = Path(current)
        depth = len(folder.relative_to(models_dir).parts)
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and depth < MAX_DEPTH)
        is_model_folder = "model_index.json" in files or (
            depth > 0 and "config.json" in files and any(f.endswith(WEIGHT_FILE_SUFFIXES) for f in files))
        if is_model_folder:
            subdirs[:] = []  # a pipeline's component folders are not models of their own
            found.append((folder.relative_to(models_dir).as_posix(), folder))
            continue
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(WEIGHT_SUFFIXES):
                found.append(((folder / name).relative_to(models_dir).as_posix(), folder / name))
    return found


def _signature(path: Path) -> list[tuple[str, int, int]] | None:
    try:
        if path.is_dir():
            return folder_files(path)
        stat = path.stat()
        return [(path.name, stat.st_size, stat.st_mtime_ns)]
    except OSError:
        return None


def scan_models(models_dir: Path) -> list[LocalModel]:
    """A one-off scan without the database (no sources, pins or hashes)."""
    models = []
    for name, path in find_candidates(models_dir):
        try:
            detected = detect_folder(path) if path.is_dir() else detect_file(path)
        except (UnsafeFile, OSError):
            continue
        if detected is not None:
            models.append(LocalModel(name, path, detected.pipeline_class, detected.kind, detected.base_model))
    return sorted(models, key=lambda m: m.name)


# ---------------------------------------------------------------------------------------------
# The library: scan results plus what downloads and the user told us, in db/library.json
# ---------------------------------------------------------------------------------------------


class Library:
    def __init__(self, models_dir: Path, db_path: Path):
        self.models_dir = Path(models_dir)
        self._db = open_db(db_path)
        self._records = self._db.table("models")
        self._pins = self._db.table("pins")
        self._lock = threading.RLock()  # tinydb is not thread-safe
        self._skipped: set[str] = set()  # invalid files, warned about once
        self.variant_records = Variants(self._db.table("variants"), self._lock)

    # -- scanning -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Rescans models/. Unchanged files cost a stat; new or changed ones are inspected."""
        with self._lock:
            old = {r["name"]: r for r in self._records.all()}
            new: dict[str, dict] = {}
            for name, path in find_candidates(self.models_dir):
                signature = _signature(path)
                if signature is None:
                    continue
                previous = old.get(name)
                if previous and [tuple(f[:3]) for f in previous["stat"]] == signature:
                    new[name] = previous
                    continue
                record = self._inspect(name, path, signature, previous)
                if record is not None:
                    new[name] = record
            if new != old:
                self._records.truncate()
                self._records.insert_multiple(dict(new[name]) for name in sorted(new))  # (fresh doc ids)

    def _inspect(self, name: str, path: Path, signature: list, previous: dict | None) -> dict | None:
        try:
            detected = detect_folder(path) if path.is_dir() else detect_file(path)
        except (UnsafeFile, OSError) as exc:
            if name not in self._skipped:  # e.g. a file still being copied in, or a renamed pickle
                log.warning("not adding %s to the library: %s", name, exc)
                self._skipped.add(name)
            return None
        if detected is None:
            return None
        self._skipped.discard(name)
        previous = previous or {}
        known = {f[0]: f for f in previous.get("stat", [])}
        stat = [[n, size, mtime, (known[n][3] if n in known and known[n][1:3] == [size, mtime] else "")]
                for n, size, mtime in signature]
        base = detected.base_model
        if previous.get("base_model_by_user") or (base == UNKNOWN and previous.get("base_model")):
            base = previous["base_model"]  # the user's choice, or what the source said, beats no guess
        # Keys cannot tell a VAE or an odd LoRA format from a checkpoint; the source or the user can.
        kind = previous.get("kind_override") or detected.kind
        return {"name": name, "kind": kind, "base_model": base, "kind_override": previous.get("kind_override"),
                "base_model_by_user": bool(previous.get("base_model_by_user")),
                "pipeline_class": detected.pipeline_class, "source": previous.get("source", "local"),
                "model_id": previous.get("model_id", ""), "revision": previous.get("revision", ""),
                "verified": bool(previous.get("verified")) and all(s[3] for s in stat),
                "stat": stat, "added_at": previous.get("added_at", time.time())}

    def hash_missing(self, stop: threading.Event | None = None) -> int:
        """Computes sha256 for files that lack one (hand-copied models); returns how many it hashed."""
        hashed = 0
        while not (stop and stop.is_set()):
            with self._lock:
                todo = next(((r["name"], f) for r in self._records.all() for f in r["stat"] if not f[3]), None)
            if todo is None:
                return hashed
            name, (file_name, size, mtime, _) = todo
            path = self.models_dir / name
            path = path / file_name if path.is_dir() else path
            try:
                digest = sha256_file(path)
            except OSError:
                digest = None
            with self._lock:
                record = self._records.get(Query().name == name)
                if record is None:
                    continue
                stat = [[n, s, m, (digest or "?") if (n, s, m) == (file_name, size, mtime) else h]
                        for n, s, m, h in record["stat"]]
                self._records.update({"stat": stat}, Query().name == name)
            hashed += 1
        return hashed

    # -- reading --------------------------------------------------------------------------------

    def _model(self, record: dict, pins: set[tuple[str, str]]) -> LocalModel:
        model_id = record.get("model_id") or record["name"]
        files = tuple(ModelFile(n, size, h if h != "?" else "") for n, size, _, h in record["stat"])
        return LocalModel(record["name"], self.models_dir / record["name"], record["pipeline_class"],
                          record["kind"], record["base_model"], record["source"], model_id,
                          record.get("revision", ""), files, (record["source"], model_id) in pins,
                          bool(record.get("verified")))

    def models(self, kind: str | None = None, base_model: str | None = None, refresh: bool = True) -> list[LocalModel]:
        if refresh:
            self.refresh()  # a walk and a stat per file: cheap, and a file copied in a second ago shows up
        with self._lock:
            pins = {(p["source"], p["model_id"]) for p in self._pins.all()}
            records = self._records.all()
        models = [self._model(r, pins) for r in records]
        return [m for m in models if (kind is None or m.kind == kind)
                and (base_model is None or m.base_model == base_model)]

    def get(self, name: str) -> LocalModel | None:
        return next((m for m in self.models() if m.name == name), None)

    def loras(self, base_model: str) -> list[LocalModel]:
        bases = BY_KEY[base_model].lora_bases if base_model in BY_KEY else (base_model,)
        return [m for m in self.models(kind="lora") if m.base_model in bases]

    def variants(self, refresh: bool = True) -> list[Variant]:
        """Every recorded variant, resolved against the library (``ready`` once its files are all here)."""
        return self.variant_records.list(self.models(refresh=refresh))

    def find_sha256(self, sha256: str) -> LocalModel | None:
        sha256 = sha256.lower()
        return next((m for m in self.models() if sha256 and m.sha256 == sha256), None)

    # -- changing -------------------------------------------------------------------------------

    def record_download(self, name: str, *, source: str, model_id: str, revision: str,
                        sha256: dict[str, str], verified: bool, base_model: str | None = None,
                        kind: str | None = None) -> LocalModel:
        """Adds a finished, verified download (already renamed into models/) with where it came from.

        `sha256` maps file names (relative to the model) to the hashes computed while verifying,
        so a 20 GB file is never hashed twice.
        """
        with self._lock:
            self.refresh()
            record = self._records.get(Query().name == name)
            if record is None:
                raise FileNotFoundError(f"{name} is not a recognisable model after download")
            stat = [[n, s, m, sha256.get(n, h)] for n, s, m, h in record["stat"]]
            fields = {"source": source, "model_id": model_id, "revision": str(revision), "stat": stat,
                      "verified": verified}
            if base_model and base_model != UNKNOWN and record["base_model"] == UNKNOWN:
                fields["base_model"] = base_model  # the source knows better than no guess at all
            if kind in KINDS and kind != "diffusers" and record["kind"] == "checkpoint":
                fields.update(kind=kind, kind_override=kind)
            self._records.update(fields, Query().name == name)
        return self.get(name)

    def set_base_model(self, name: str, base_model: str) -> LocalModel:
        if base_model not in (*BASE_MODELS, UNKNOWN):
            raise ValueError(f"unknown base model {base_model!r}; use one of {', '.join(BASE_MODELS)}")
        with self._lock:
            self.refresh()
            if not self._records.update({"base_model": base_model, "base_model_by_user": True},
                                        Query().name == name):
                raise KeyError(f"{name!r} is not in the library")
        return self.get(name)

    def set_kind(self, name: str, kind: str) -> LocalModel:
        """For a single file whose keys diffbox could not read right (e.g. a LoRA in an unusual format)."""
        if kind not in KINDS or kind == "diffusers":
            raise ValueError(f"a file's kind is one of {', '.join(k for k in KINDS if k != 'diffusers')}")
        with self._lock:
            self.refresh()
            record = self._records.get(Query().name == name)
            if record is None:
                raise KeyError(f"{name!r} is not in the library")
            if record["kind"] == "diffusers" or (self.models_dir / name).is_dir():
                raise ValueError(f"{name} is a folder; its kind comes from its config")
            self._records.update({"kind": kind, "kind_override": kind}, Query().name == name)
        return self.get(name)

    def pin(self, source: str, model_id: str, pinned: bool, revision: str = "",
            files: list[dict] | None = None) -> dict:
        """Pins (or unpins) a model by source and id; pinned models are what a config export lists.

        A model need not be downloaded to be pinned: a pinned search result is a model the
        config says to fetch. What the library knows (revision, files, hashes) is recorded.
        """
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
        local = [m for m in self.models() if (m.source, m.model_id) == (source, model_id)]
        if source == "local" and not local:
            raise KeyError(f"{model_id!r} is not in the library")
        with self._lock:
            match = (Query().source == source) & (Query().model_id == model_id)
            self._pins.remove(match)
            if pinned:
                if local:
                    revision = local[0].revision or revision
                    files = [{"name": f.name, "size": f.size, "sha256": f.sha256} for m in local for f in m.files]
                self._pins.insert({"source": source, "model_id": model_id, "revision": str(revision or ""),
                                   "files": files or [], "local_names": [m.name for m in local],
                                   "pinned_at": time.time()})
        return {"source": source, "model_id": model_id, "pinned": pinned,
                "revision": str(revision or ""), "in_library": [m.name for m in local]}

    def pins(self) -> list[dict]:
        with self._lock:
            return [dict(p) for p in self._pins.all()]

    def close(self) -> None:
        self._db.close()
