"""What may land in models/: safe file names, allowed formats, and weights validated without loading.

Pickle formats (.ckpt/.pt/.pth/.bin) can run code when loaded, so only safetensors and GGUF weights
are accepted; their headers are checked here, by reading bytes, never by unpickling or loading.
"""

from __future__ import annotations

import hashlib
import json
import struct
import unicodedata
from email.message import EmailMessage
from pathlib import Path, PurePosixPath

from diffbox.hub import HubError

WEIGHT_SUFFIXES = (".safetensors", ".gguf")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
# What a whole diffusers repo may bring beside its weights: configs, tokenizer vocabularies, templates.
CONFIG_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken")
MAX_SAFETENSORS_HEADER = 100_000_000  # the format's own limit
MAX_NAME_LENGTH = 200
HASH_BLOCK = 4 << 20


class UnsafeFile(HubError, ValueError):
    """A file diffbox refuses to store or use; the message says why in plain words."""

    discard = True


def filename_from_content_disposition(header: str | None) -> str | None:
    """The filename in a Content-Disposition header (RFC 5987 `filename*` included), unsanitised."""
    if not header:
        return None
    message = EmailMessage()
    try:
        message["Content-Disposition"] = header
        return message.get_filename()
    except (ValueError, TypeError, IndexError):
        return None


def safe_filename(name: str, allowed: tuple[str, ...] = WEIGHT_SUFFIXES) -> str:
    """A bare file name that cannot leave its folder, with an allowed extension, or UnsafeFile.

    Names come from APIs and headers that a hostile server controls, e.g. `../../x.safetensors`:
    only the last path segment is kept, and names that are empty, dots, or carry control
    characters, `:` (Windows streams) or a refused extension are rejected outright.
    """
    if not isinstance(name, str):
        raise UnsafeFile("the file has no usable name")
    base = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1].strip()
    if base in ("", ".", "..") or base.startswith("."):
        raise UnsafeFile(f"refused the file name {name!r}: it is empty or hidden")
    if any(ord(c) < 32 or ord(c) == 127 or c == ":" for c in base):
        raise UnsafeFile(f"refused the file name {name!r}: it contains control characters or ':'")
    if len(base) > MAX_NAME_LENGTH:
        raise UnsafeFile(f"refused the file name {name!r}: longer than {MAX_NAME_LENGTH} characters")
    check_suffix(base, allowed)
    return base


def safe_relative_path(path: str, allowed: tuple[str, ...]) -> str:
    """A repo-relative path (e.g. `transformer/config.json`) whose every segment is safe, or UnsafeFile."""
    parts = PurePosixPath(str(path).replace("\\", "/")).parts
    if not parts or path.startswith("/") or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise UnsafeFile(f"refused the path {path!r}: it could leave the model folder")
    folders = [safe_filename(p, allowed=("",)) for p in parts[:-1]]
    return "/".join([*folders, safe_filename(parts[-1], allowed)])


def check_suffix(name: str, allowed: tuple[str, ...] = WEIGHT_SUFFIXES) -> None:
    lower = name.lower()
    if lower.endswith(PICKLE_SUFFIXES):
        raise UnsafeFile(f"refused {name}: {Path(lower).suffix} files are pickles, which can run code when "
                         "loaded; diffbox only accepts .safetensors and .gguf weights")
    if not any(lower.endswith(s) for s in allowed):
        raise UnsafeFile(f"refused {name}: only {', '.join(s for s in allowed if s) or 'plain'} files are accepted")


def inside(root: Path, candidate: Path) -> Path:
    """`candidate` resolved, if it stays under `root`; the last line of defence against traversal."""
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise UnsafeFile(f"refused {candidate}: it is outside {root}")
    return resolved


def read_safetensors_header(path: Path) -> dict:
    """The parsed JSON header, after checking the file is a complete, well-formed safetensors file.

    Covers truncation too: the tensors' data offsets must end exactly at the end of the file.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise UnsafeFile(f"{path.name} is not a safetensors file: it is only {size} bytes")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_SAFETENSORS_HEADER or 8 + length > size:
            _sniff_pickle(head, path)
            raise UnsafeFile(f"{path.name} is not a valid safetensors file (header length {length} "
                             f"for a {size}-byte file)")
        raw = handle.read(length)
    if not raw.startswith(b"{"):
        raise UnsafeFile(f"{path.name} is not a valid safetensors file: the header is not JSON")
    try:
        header = json.loads(raw.rstrip(b" ").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UnsafeFile(f"{path.name} is not a valid safetensors file: the header is not JSON") from None
    if not isinstance(header, dict):
        raise UnsafeFile(f"{path.name} is not a valid safetensors file: the header is not an object")
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise UnsafeFile(f"{path.name}: __metadata__ must map strings to strings")
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] or "dtype" not in info or "shape" not in info):
            raise UnsafeFile(f"{path.name}: tensor {key!r} has a malformed header entry")
        end = max(end, offsets[1])
    if 8 + length + end != size:
        raise UnsafeFile(f"{path.name} is truncated or padded: its header describes {8 + length + end} bytes, "
                         f"the file has {size}")
    return header


def _sniff_pickle(head: bytes, path: Path) -> None:
    if head.startswith(b"PK\x03\x04"):
        raise UnsafeFile(f"{path.name} is a PyTorch zip (pickle) archive renamed to look safe; refused")
    if head[:1] == b"\x80":
        raise UnsafeFile(f"{path.name} is a pickle renamed to look safe; refused")


def validate_weights(path: Path) -> dict:
    """Checks a .safetensors/.gguf file by its bytes. Returns the safetensors header ({} for GGUF)."""
    name = path.name.lower()
    if name.endswith(".gguf"):
        with open(path, "rb") as handle:
            head = handle.read(8)
        if not head.startswith(b"GGUF"):
            _sniff_pickle(head, path)
            raise UnsafeFile(f"{path.name} is not a GGUF file (it does not start with 'GGUF')")
        return {}
    if name.endswith(".safetensors"):
        return read_safetensors_header(path)
    check_suffix(path.name)
    return {}


def sha256_file(path: Path, hasher=None) -> str:
    hasher = hasher or hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            hasher.update(block)
    return hasher.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """Git's object id for a file: how the Hub names small (non-LFS) files, so they can be verified too."""
    hasher = hashlib.sha1()
    hasher.update(b"blob %d\0" % path.stat().st_size)
    return sha256_file(path, hasher)
