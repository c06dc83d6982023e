"""Reading weight files by their bytes: the safetensors header and the sha256 of a file.

One reader serves the hub (files from strangers, checked before they may land in models/) and the
engine (sizes and dtypes for the memory plan, a named error before a load). It never unpickles
or loads anything: a safetensors file is 8 bytes of little-endian header length, a JSON header of
name -> {dtype, shape, data_offsets}, then the tensor data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
from pathlib import Path

MAX_SAFETENSORS_HEADER = 100_000_000  # the format's own limit
HASH_BLOCK = 4 << 20


def pickle_disguise(head: bytes) -> str | None:
    """Why the first bytes of a file betray a pickle under a safe-looking name, or None."""
    if head.startswith(b"PK\x03\x04"):
        return "is a PyTorch zip (pickle) archive renamed to look safe; refused"
    if head[:1] == b"\x80":
        return "is a pickle renamed to look safe; refused"
    return None


def read_safetensors_header(path: Path, complete: bool = True, full_path: bool = False) -> dict:
    """The parsed JSON header, after checking it is well-formed; ValueError naming the file if not
    (by its name: messages may reach a public page; full_path=True names the whole path, for logs).

    complete=True also checks the tensors' data offsets end exactly at the end of the file, which
    catches truncation and padding. complete=False accepts a header whose data is absent (the memory
    plan only needs names, dtypes and shapes).
    """
    path = Path(path)
    name = str(path) if full_path else path.name
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ValueError(f"{name} is not a safetensors file: it is only {size} bytes")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_SAFETENSORS_HEADER or 8 + length > size:
            disguise = pickle_disguise(head)
            raise ValueError(f"{name} {disguise}" if disguise else
                             f"{name} is not a valid safetensors file (header length {length} "
                             f"for a {size}-byte file)")
        raw = handle.read(length)
    if not raw.startswith(b"{"):
        raise ValueError(f"{name} is not a valid safetensors file: the header is not JSON")
    try:
        header = json.loads(raw.rstrip(b" ").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{name} is not a valid safetensors file: the header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError(f"{name} is not a valid safetensors file: the header is not an object")
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise ValueError(f"{name}: __metadata__ must map strings to strings")
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] or "dtype" not in info or not _is_shape(info.get("shape"))):
            raise ValueError(f"{name}: tensor {key!r} has a malformed header entry")
        end = max(end, offsets[1])
    if complete and 8 + length + end != size:
        raise ValueError(f"{name} is truncated or padded: its header describes {8 + length + end} bytes, "
                         f"the file has {size}")
    return header


def _is_shape(shape) -> bool:
    return isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)


def sha256_file(path: Path, hasher=None) -> str:
    """The file's sha256 hex digest; pass another hashlib object (sha1, one already fed) to use it instead."""
    hasher = hasher or hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            hasher.update(block)
    return hasher.hexdigest()


def cached_sha256(path: Path) -> str:
    """sha256_file, hashed once per file version (size + mtime) and then remembered."""
    stat = Path(path).stat()
    return _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime_ns: the cache key
    return sha256_file(Path(path))
