"""What may land in models/: safe file names, allowed formats, and weights validated without loading.

Pickle formats (.ckpt/.pt/.pth/.bin) can run code when loaded, so only safetensors and GGUF weights
are accepted; their headers are checked by reading bytes (engine/weight_files.py), never by unpickling
or loading.
"""

from __future__ import annotations

import hashlib
import unicodedata
from email.message import EmailMessage
from pathlib import Path, PurePosixPath

from diffbox.engine.weight_files import pickle_disguise, read_safetensors_header, sha256_file
from diffbox.hub import HubError

WEIGHT_SUFFIXES = (".safetensors", ".gguf")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
# What a whole diffusers repo may bring beside its weights: configs, tokenizer vocabularies, templates.
CONFIG_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken")
MAX_NAME_LENGTH = 200


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


def validate_weights(path: Path) -> dict:
    """Checks a .safetensors/.gguf file by its bytes. Returns the safetensors header ({} for GGUF)."""
    name = path.name.lower()
    if name.endswith(".gguf"):
        with open(path, "rb") as handle:
            head = handle.read(8)
        if not head.startswith(b"GGUF"):
            if disguise := pickle_disguise(head):
                raise UnsafeFile(f"{path.name} {disguise}")
            raise UnsafeFile(f"{path.name} is not a GGUF file (it does not start with 'GGUF')")
        return {}
    if name.endswith(".safetensors"):
        try:
            return read_safetensors_header(path)  # complete: data offsets must end at the end of the file
        except ValueError as error:
            raise UnsafeFile(str(error)) from None
    check_suffix(path.name)
    return {}


def git_blob_sha1(path: Path) -> str:
    """Git's object id for a file: how the Hub names small (non-LFS) files, so they can be verified too."""
    hasher = hashlib.sha1()
    hasher.update(b"blob %d\0" % path.stat().st_size)
    return sha256_file(path, hasher)
