"""float32 checkpoints converted once to the working dtype and kept next to the model.

Wan2.2-I2V-A14B-Diffusers ships its two experts in float32 (57 GB each). Loading them in bf16 reads
114 GB and converts every tensor on every cold start. The first load writes each converted component
into ``<component>/.kept-<dtype>/`` (its config, the converted shards and a ``source.json``
fingerprint); later loads read that copy, which is stored in the dtype it is loaded in, so diffusers
maps it straight from the file (no conversion: disk speed, see bench/cold_load.py).

- Only float32 weight files are converted, and only to bf16/fp16: the layers the model class keeps in
  float32 (``_keep_in_fp32_modules``: Wan's time embedder, modulation tables, norms) stay float32, so
  the copy loads to exactly what the float32 files load to.
- The copy is written in a scratch folder and renamed into place: a crash leaves no half copy.
- The fingerprint (each source file's name, size and modification time, and the config) is checked on
  every load: a changed source is converted again.
- Without the disk space for it (plus ``MIN_FREE_AFTER``) nothing is written and the float32 files are
  loaded as before.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from diffbox.engine.memory import component_weight_files, tensor_shapes

logger = logging.getLogger(__name__)
MIN_FREE_AFTER = 2 * 1024**3
# Below this a conversion takes seconds and a copy is not worth its disk (the tiny demo models stay as they are).
MIN_SOURCE_BYTES = 1024**3
HALF = {torch.bfloat16: "bfloat16", torch.float16: "float16"}


def kept_folder(component: Path, dtype: torch.dtype) -> Path:
    return component / f".kept-{HALF[dtype]}"


def fingerprint(component: Path) -> dict:
    files = component_weight_files(component)
    config = component / "config.json"
    return {"files": [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files],
            "config": config.read_text(encoding="utf-8") if config.is_file() else ""}


def stored_in_float32(component: Path) -> bool:
    """Most of the component's bytes are float32 (the header says so; nothing is read)."""
    totals: dict[str, int] = {}
    for file in component_weight_files(component):
        for dtype, shape in tensor_shapes(file).values():
            count = 1
            for dim in shape:
                count *= dim
            totals[dtype] = totals.get(dtype, 0) + count
    return bool(totals) and max(totals, key=totals.get) == "F32"


def kept_copy(component: Path, dtype: torch.dtype, keep_fp32: tuple[str, ...] = ()) -> Path | None:
    """The folder to load ``component`` from in ``dtype``: its kept copy (written now if needed), or None
    to load the component itself (not float32, not a half dtype, or no room for a copy)."""
    if dtype not in HALF or not component.is_dir():
        return None
    if sum(f.stat().st_size for f in component_weight_files(component)) < MIN_SOURCE_BYTES:
        return None
    if not stored_in_float32(component):
        return None
    folder = kept_folder(component, dtype)
    source = fingerprint(component)
    try:
        if json.loads((folder / "source.json").read_text(encoding="utf-8")) == source:
            return folder
    except (OSError, ValueError):
        pass
    try:
        return _convert(component, folder, dtype, keep_fp32, source)
    except OSError as error:  # read-only volume, disk filled meanwhile: load the float32 files as before
        logger.warning("could not keep a %s copy of %s: %s", HALF[dtype], component, error)
        return None


def _convert(component: Path, folder: Path, dtype: torch.dtype, keep_fp32: tuple[str, ...], source: dict) -> Path | None:
    files = component_weight_files(component)
    needed = sum(f.stat().st_size for f in files) // 2
    if shutil.disk_usage(component).free < needed + MIN_FREE_AFTER:
        logger.info("not enough free disk to keep a %s copy of %s (%d bytes)", HALF[dtype], component, needed)
        return None
    with tempfile.TemporaryDirectory(prefix=".kept-writing-", dir=component) as scratch:
        scratch = Path(scratch)
        for file in files:  # one shard at a time: never more than one shard's tensors in memory
            with safe_open(str(file), framework="pt") as handle:
                tensors = {name: _converted(name, handle.get_tensor(name), dtype, keep_fp32)
                           for name in handle.keys()}
                metadata = handle.metadata()
            save_file(tensors, scratch / file.name, metadata=metadata)
            del tensors
        for extra in component.glob("*.json"):  # config and shard index, as they are
            shutil.copy2(extra, scratch / extra.name)
        (scratch / "source.json").write_text(json.dumps(source), encoding="utf-8")
        stale = folder.with_name(folder.name + ".stale")
        if folder.exists():
            os.replace(folder, stale)
        os.replace(scratch, folder)
        shutil.rmtree(stale, ignore_errors=True)
        os.makedirs(scratch)  # for TemporaryDirectory's own cleanup
    return folder


def _converted(name: str, tensor: torch.Tensor, dtype: torch.dtype, keep_fp32: tuple[str, ...]) -> torch.Tensor:
    if tensor.dtype != torch.float32 or any(module in name.split(".") for module in keep_fp32):
        return tensor
    return tensor.to(dtype)


def read_ahead(folder: Path, chunk_bytes: int = 64 << 20) -> None:
    """Read the copy's weight files once, sequentially, into the page cache. diffusers then maps them
    (same dtype: no conversion) and every page it touches is already there; left to page faults, the
    same bytes come off the disk in small random-ish reads, which on a network volume is several times
    slower than one sequential pass (bench/cold_load.py)."""
    buffer = bytearray(chunk_bytes)
    for file in component_weight_files(folder):
        with open(file, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass
