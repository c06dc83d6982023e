"""The prompt library: short prompt pieces by category, the shipped ones and the user's own.

Shipped snippets live in presets/prompts/prompt_library.json (read-only); the user's own in
db/prompt_library.json (tinydb with the house's atomic writes: a crash leaves the last good file, an
unreadable one is moved aside as prompt_library.corrupt-<time>.json, never deleted). A user snippet
with the name of a shipped one in the same category shadows it (the shipped one comes back when the
user's is deleted); shipped snippets cannot be deleted. Names are unique per category, whatever their
case. The entry shape is checked by diffbox.config (clean_snippet), the one place the schema lives,
so a snippet saved here is one a config file can carry.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from tinydb import Query

from diffbox.config import MAX_SNIPPETS, PROMPT_CATEGORIES, SNIPPET_FIELDS, _Errors, clean_snippet, snippet_key
from diffbox.store import open_db

log = logging.getLogger(__name__)

SHIPPED_FILE = Path(__file__).resolve().parents[1] / "presets" / "prompts" / "prompt_library.json"
SEPARATOR = ", "
# A piece that ends in one of these already separates itself from what follows.
ENDS_A_PHRASE = tuple(",;.:!?，。；")


class SnippetError(ValueError):
    """A snippet that cannot be saved, found or deleted; the message names the field and says why."""


def check(raw: dict, where: str = "snippet") -> dict:
    """A cleaned {"category", "name", "text"}, or SnippetError naming the field ("snippet.text: ...")."""
    errors = _Errors()
    snippet = clean_snippet(raw, where, errors)
    if snippet is None:
        raise SnippetError("; ".join(f"{name}: {reason}" for name, reason in errors.items()))
    return snippet


def load_shipped(path: Path = SHIPPED_FILE) -> list[dict]:
    """The shipped snippets; a broken entry is logged and skipped, a missing or broken file gives none."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        entries = raw["snippets"]
        if not isinstance(entries, list):
            raise ValueError("'snippets' is not a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("shipped prompt library %s not read: %s", path, exc)
        return []
    found, seen = [], set()
    for index, entry in enumerate(entries):
        try:
            snippet = check(entry, f"{Path(path).name}[{index}]")
        except SnippetError as exc:
            log.warning("shipped prompt snippet skipped: %s", exc)
            continue
        if snippet_key(snippet) not in seen:
            seen.add(snippet_key(snippet))
            found.append({**snippet, "shipped": True})
    return found


def insert(current: str | None, snippet: str, *, per_line: bool = False) -> str:
    """`current` with `snippet` appended, keeping every character the user typed.

    Joined with ", " unless the text already ends a phrase (a comma, a full stop); an empty box gets the
    snippet alone. With `per_line` (SVI's box, one prompt per clip) it goes into the last line only, so
    the other clips' prompts stay as they are; an empty last line (a clip just started) gets it alone.
    """
    current = current or ""
    if per_line and "\n" in current:
        head, _, last = current.rpartition("\n")
        return f"{head}\n{insert(last, snippet)}"
    kept = current.rstrip()
    if not kept:
        return snippet
    return f"{kept}{' ' if kept.endswith(ENDS_A_PHRASE) else SEPARATOR}{snippet}"


class PromptLibrary:
    def __init__(self, db_path: Path, shipped: list[dict] | None = None):
        self._db = open_db(db_path)
        self._table = self._db.table("snippets")
        self._lock = threading.RLock()  # tinydb is not thread-safe
        self.shipped = list(shipped or [])

    @classmethod
    def open(cls, db_dir: Path) -> "PromptLibrary":
        return cls(Path(db_dir) / "prompt_library.json", load_shipped())

    @staticmethod
    def _same(category: str, name: str):
        return (Query().category == category) & Query().name.test(lambda n: n.casefold() == name.casefold())

    def user_snippets(self) -> list[dict]:
        """The user's own, by category (in PROMPT_CATEGORIES order) then name: what a config export holds."""
        with self._lock:
            rows = [dict(r) for r in self._table.all()]
        kept = []
        for row in rows:  # a hand-edited file may hold anything: what does not fit is left out, not fatal
            try:
                kept.append(check({k: row.get(k) for k in SNIPPET_FIELDS}))
            except SnippetError as exc:
                log.warning("a snippet in the prompt library's file is not shown: %s", exc)
        return sorted(kept, key=_order)

    def list(self, category: str | None = None) -> list[dict]:
        """Every snippet ({category, name, text, shipped}): the user's and the shipped ones they do not shadow,
        by category then name; `category` narrows it (SnippetError when it is not one)."""
        if category and category not in PROMPT_CATEGORIES:
            raise SnippetError(f"category: must be one of {', '.join(PROMPT_CATEGORIES)}, got {str(category)[:40]!r}")
        mine = [{**s, "shipped": False} for s in self.user_snippets()]
        taken = {snippet_key(s) for s in mine}
        every = sorted(mine + [s for s in self.shipped if snippet_key(s) not in taken], key=_order)
        return [s for s in every if not category or s["category"] == category]

    def get(self, category: str, name: str) -> dict | None:
        wanted = (category, str(name).strip().casefold())
        return next((s for s in self.list() if snippet_key(s) == wanted), None)

    def save(self, raw: dict, replaces: tuple[str, str] | None = None) -> dict:
        """Adds a snippet, or overwrites the user's one of that name in that category; with `replaces` (the
        (category, name) of one of the user's snippets) it is a rename, or a move to another category.
        Returns the cleaned snippet; SnippetError names the field. Each change is one atomic write, except a
        rename onto another name the user has: that writes the new one before removing the old, so a crash
        between them leaves both, never neither."""
        snippet = check(raw)
        with self._lock:
            target = self._table.get(self._same(snippet["category"], snippet["name"]))
            old = self._table.get(self._same(replaces[0], str(replaces[1]).strip())) if replaces else None
            if target is None and old is None and len(self._table) >= MAX_SNIPPETS:
                # A config file carries at most this many: a larger library would not export.
                raise SnippetError(f"snippet: you have {MAX_SNIPPETS:,} snippets, the most the library keeps; "
                                   "delete some first")
            record = {**snippet, "updated_at": time.time()}
            if target is not None:
                self._table.update(record, doc_ids=[target.doc_id])
            elif old is not None:
                self._table.update(record, doc_ids=[old.doc_id])
            else:
                self._table.insert(record)
            if old is not None and target is not None and old.doc_id != target.doc_id:
                self._table.remove(doc_ids=[old.doc_id])
        return snippet

    def delete(self, category: str, name: str) -> None:
        name = str(name or "").strip()
        if category not in PROMPT_CATEGORIES:
            raise SnippetError(f"category: must be one of {', '.join(PROMPT_CATEGORIES)}, got {str(category)[:40]!r}")
        with self._lock:
            removed = self._table.remove(self._same(category, name))
        if removed:
            return
        if any(snippet_key(s) == (category, name.casefold()) for s in self.shipped):
            raise SnippetError(f"name: {name!r} ships with diffbox and cannot be deleted (save your own under "
                               "that name to replace it)")
        raise SnippetError(f"name: there is no {category} snippet of yours named {name[:80]!r}")

    def close(self) -> None:
        self._db.close()


def _order(snippet: dict) -> tuple:
    return PROMPT_CATEGORIES.index(snippet["category"]), snippet["name"].casefold()


__all__ = ["PROMPT_CATEGORIES", "PromptLibrary", "SnippetError", "check", "insert", "load_shipped"]
