"""What a twin is, and building one once under a root folder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Original:
    repo: str             # Hugging Face repo id
    path: str = ""        # the file (or folder) inside the repo; "" = the whole repo
    revision: str = "main"  # which version the facts were read from

    @property
    def name(self) -> str:
        """The original's own file or folder name, which the twin keeps."""
        return PurePosixPath(self.path).name if self.path else self.repo.rsplit("/", 1)[-1]

    @property
    def url(self) -> str:
        """The repo's page: Hugging Face, or GitHub for ``github:owner/name`` (formats, not files)."""
        if self.repo.startswith("github:"):
            return "https://github.com/" + self.repo.removeprefix("github:")
        return "https://huggingface.co/" + self.repo

    def __str__(self) -> str:
        return f"{self.repo}/{self.path}" if self.path else self.repo


@dataclass(frozen=True)
class Twin:
    """A miniature of one published file: same layout, names, config keys and values (except the
    dimensions), storage dtype and tensor-name patterns as ``original``."""
    name: str
    kind: str                     # "pipeline" | "lora" | "single_file"
    original: Original
    proves: str                   # what the suite proves with it, one sentence
    facts: dict[str, str]         # dtype, key pattern, layout: what the twin copies
    build: Callable[[Path, int], None] = field(repr=False, compare=False)
    library: tuple[str, str] = ("", "")  # (kind, base model) the library must detect it as
    target: str = ""              # LoRAs: "high", "low" or "both" experts; single files: the component
    refused: str = ""             # when the loader must refuse it: words its message must contain
    unconfirmed: tuple[str, ...] = ()  # facts the sources do not pin down (a variant twin covers each)


def build_twin(twins: dict[str, Twin], name: str, root: Path, seed: int = 0) -> Path:
    """The twin's folder or file under ``root/name/``, built on first use; the same seed gives the same
    bytes. Built in a scratch folder and renamed into place, so a crash never leaves half a twin."""
    if name not in twins:
        raise KeyError(f"no twin named {name!r}; known: {', '.join(sorted(twins))}")
    twin = twins[name]
    dest = Path(root) / name / twin.original.name
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".building-", dir=dest.parent) as scratch:
        built = Path(scratch) / dest.name
        twin.build(built, seed)
        if not dest.exists():  # else built meanwhile by another process: byte-identical, and the scratch goes
            os.replace(built, dest)
    return dest
