"""The model catalog on disk: every Wan/Qwen model the hubs listed, searchable offline in milliseconds.

One SQLite file (db/catalog.sqlite3). `models` holds one row per (source, id) with the search result
dict the Models tab shows (`record`) and the text columns an FTS5 index covers (name, creator, repo id,
tags, description, trained words); triggers keep the index in step with the rows. `walks` holds each
catalog walk's resume point: a page's models and the cursor of the page after it are committed in one
transaction, so a walk cut at any moment (network, kill -9) resumes with the page it had not stored.

It is a cache of public metadata: an unreadable file is moved aside and a new catalog started.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
import unicodedata
from pathlib import Path

log = logging.getLogger(__name__)

STALE_AFTER_S = 36 * 3600  # not confirmed by its hub for this long: a daily refresh was missed
TEXT_COLUMNS = ("name", "author", "ident", "tags", "description", "trained_words")
SORT_COLUMNS = {"downloads": "downloads", "likes": "rating", "rating": "rating", "newest": "updated",
                "updated": "updated", "trending": "downloads"}
MAX_DESCRIPTION = 4000
MAX_WORD = 200  # of one tag or trained word: they are words, a longer one is a stranger's essay
MAX_QUERY_WORDS = 12

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS models (
    source TEXT NOT NULL, id TEXT NOT NULL, {', '.join(f'{c} TEXT NOT NULL' for c in TEXT_COLUMNS)},
    kind TEXT NOT NULL, base_model TEXT NOT NULL, nsfw INTEGER NOT NULL, downloads INTEGER NOT NULL,
    rating INTEGER NOT NULL, updated TEXT NOT NULL, record TEXT NOT NULL, digest TEXT NOT NULL,
    added_at REAL NOT NULL, seen_at REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS models_key ON models (source, id);
CREATE INDEX IF NOT EXISTS models_by_downloads ON models (downloads DESC);
CREATE INDEX IF NOT EXISTS models_by_base ON models (base_model, kind, downloads DESC);
CREATE TABLE IF NOT EXISTS walks (
    scope TEXT PRIMARY KEY, source TEXT NOT NULL, cursor TEXT, pages INTEGER NOT NULL DEFAULT 0,
    started_at REAL, finished_at REAL, error TEXT, last_pages INTEGER);
"""
_COLUMNS = ", ".join(TEXT_COLUMNS)
_FTS = f"""
CREATE VIRTUAL TABLE IF NOT EXISTS catalog_search USING fts5 ({_COLUMNS}, content='models', content_rowid='rowid',
    tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3');
CREATE TRIGGER IF NOT EXISTS models_ai AFTER INSERT ON models BEGIN
    INSERT INTO catalog_search (rowid, {_COLUMNS}) VALUES (new.rowid, {', '.join('new.' + c for c in TEXT_COLUMNS)});
END;
CREATE TRIGGER IF NOT EXISTS models_ad AFTER DELETE ON models BEGIN
    INSERT INTO catalog_search (catalog_search, rowid, {_COLUMNS})
    VALUES ('delete', old.rowid, {', '.join('old.' + c for c in TEXT_COLUMNS)});
END;
CREATE TRIGGER IF NOT EXISTS models_au AFTER UPDATE OF {_COLUMNS} ON models BEGIN
    INSERT INTO catalog_search (catalog_search, rowid, {_COLUMNS})
    VALUES ('delete', old.rowid, {', '.join('old.' + c for c in TEXT_COLUMNS)});
    INSERT INTO catalog_search (rowid, {_COLUMNS}) VALUES (new.rowid, {', '.join('new.' + c for c in TEXT_COLUMNS)});
END;
"""


def folded(text: str) -> str:
    """Compatibility forms folded (NFKC: full-width "ｏｒｂｉｔ" is "orbit", "ﬁ" is "fi"), for the index and the query
    alike; the tokenizer folds case and accents."""
    return unicodedata.normalize("NFKC", text)


def plain_text(html: str | None) -> str:
    """A description as words: Civitai's are HTML."""
    text = re.sub(r"<[^>]+>", " ", str(html or ""))
    text = re.sub(r"&(nbsp|amp|lt|gt|quot|#39);", lambda m: {"nbsp": " ", "amp": "&", "lt": "<", "gt": ">",
                                                          "quot": '"', "#39": "'"}[m.group(1)], text)
    return re.sub(r"\s+", " ", text).strip()[:MAX_DESCRIPTION]


def match_expression(query: str) -> str | None:
    """A search box's words as an FTS5 expression: every word must appear, each as a prefix ("orb" finds
    "orbit"), punctuation ignored, so nothing a user types is an FTS5 syntax error."""
    words = re.findall(r"\w+", folded(str(query or "")))[:MAX_QUERY_WORDS]
    return " ".join(f'"{w}"*' for w in words) or None


def _row(result: dict) -> dict:
    """The columns of one search result (the hub clients' result dicts, plus tags/description/trained_words)."""
    record = {k: v for k, v in result.items()
              if k not in ("description", "cached", "stale", "catalogued_at", "in_library", "pinned")}
    text = json.dumps(record, sort_keys=True, ensure_ascii=False)
    description = plain_text(result.get("description"))
    return {
        "source": str(result["source"]), "id": str(result["id"]), "name": folded(str(result.get("name") or "")),
        "author": folded(str(result.get("author") or "")), "ident": str(result["id"]).replace("/", " "),
        "tags": folded(" ".join(str(t)[:MAX_WORD] for t in result.get("tags") or [])),
        "description": folded(description),
        "trained_words": folded(" ".join(str(w)[:MAX_WORD] for w in result.get("trained_words") or [])),
        "kind": str(result.get("kind") or "other"), "base_model": str(result.get("base_model") or "unknown"),
        "nsfw": int(bool(result.get("nsfw"))), "downloads": int(result.get("downloads") or 0),
        "rating": int(result.get("rating") or 0), "updated": str(result.get("updated") or ""), "record": text,
        "digest": hashlib.sha256((text + description).encode()).hexdigest()[:32],
    }


class CatalogStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = self._connect()
        self.full_text = self._make_index()

    def _connect(self) -> sqlite3.Connection:
        for attempt in (1, 2):
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")  # a cache: a power cut may lose the last page, never corrupt
                db.executescript(_SCHEMA)
                if "last_pages" not in {row[1] for row in db.execute("PRAGMA table_info(walks)")}:
                    db.execute("ALTER TABLE walks ADD COLUMN last_pages INTEGER")  # a catalog from before it
                return db
            except sqlite3.DatabaseError as exc:
                db.close()
                if attempt == 2 or not self.path.exists():
                    raise
                aside = self.path.with_name(f"catalog.corrupt-{time.strftime('%Y%m%d-%H%M%S')}.sqlite3")
                os.replace(self.path, aside)
                log.warning("the model catalog %s was unreadable (%s); moved it aside to %s and started a new one "
                            "(the next refresh fills it again)", self.path, exc, aside)
        raise AssertionError("unreachable")

    def _make_index(self) -> bool:
        """FTS5 is in the SQLite CPython and Debian/Ubuntu ship; without it search matches with LIKE (slower)."""
        try:
            with self._lock:
                self._db.executescript(_FTS)
                declared = self._db.execute("SELECT sql FROM sqlite_master WHERE name = 'catalog_search'").fetchone()
                if "prefix" not in declared[0]:  # made before it had prefix indexes: index it again (seconds)
                    self._db.executescript("DROP TABLE catalog_search;" + _FTS +
                                           "INSERT INTO catalog_search (catalog_search) VALUES ('rebuild');")
            return True
        except sqlite3.OperationalError as exc:
            log.warning("the model catalog has no full-text index (%s); search matches words one by one", exc)
            return False

    # -- writing ---------------------------------------------------------------------------------

    def add(self, results: list[dict], *, scope: str | None = None, cursor: str | None = None,
            finished: bool = False, now: float | None = None) -> tuple[int, int]:
        """Stores results (new rows, changed rows; unchanged ones only get their `seen_at`) and, for a walk,
        the cursor of its next page, in one transaction. Returns (added, updated)."""
        now = time.time() if now is None else now
        rows = [_row(r) for r in results]
        added = updated = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    old = self._db.execute("SELECT rowid, digest FROM models WHERE source = ? AND id = ?",
                                           (row["source"], row["id"])).fetchone()
                    if old is None:
                        self._db.execute(f"INSERT INTO models ({', '.join(row)}, added_at, seen_at) "
                                         f"VALUES ({', '.join('?' * len(row))}, ?, ?)", (*row.values(), now, now))
                        added += 1
                    elif old[1] != row["digest"]:
                        self._db.execute(f"UPDATE models SET {', '.join(f'{k} = ?' for k in row)}, seen_at = ? "
                                         "WHERE rowid = ?", (*row.values(), now, old[0]))
                        updated += 1
                    else:
                        self._db.execute("UPDATE models SET seen_at = ? WHERE rowid = ?", (now, old[0]))
                if scope is not None:
                    # last_pages: how long the listing was when last walked to its end (the next walk's cap).
                    self._db.execute("UPDATE walks SET cursor = ?, pages = pages + 1, error = NULL, "
                                     "finished_at = CASE WHEN ? THEN ? ELSE finished_at END, "
                                     "last_pages = CASE WHEN ? THEN pages + 1 ELSE last_pages END WHERE scope = ?",
                                     (None if finished else cursor, finished, now, finished, scope))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return added, updated

    # -- walks -----------------------------------------------------------------------------------

    def walk(self, scope: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT scope, source, cursor, pages, started_at, finished_at, error, last_pages "
                                   "FROM walks WHERE scope = ?", (scope,)).fetchone()
        return dict(zip(("scope", "source", "cursor", "pages", "started_at", "finished_at", "error", "last_pages"),
                        row)) if row else None

    def start_walk(self, scope: str, source: str, now: float | None = None) -> dict:
        """The walk of `scope` to run now: the unfinished one where it stopped, else a new one from page one.
        `finished_at` keeps the time the scope was last walked to its end until this walk gets there."""
        now = time.time() if now is None else now
        with self._lock:
            current = self.walk(scope)
            if current and current["cursor"] is not None:
                return current
            self._db.execute("INSERT INTO walks (scope, source, cursor, pages, started_at, finished_at) "
                             "VALUES (?, ?, NULL, 0, ?, NULL) ON CONFLICT (scope) DO UPDATE SET cursor = NULL, "
                             "pages = 0, started_at = excluded.started_at, error = NULL", (scope, source, now))
            return self.walk(scope)

    def walk_failed(self, scope: str, error: str, ended: bool = False) -> None:
        """A walk stopped by `error`: kept where it stopped, to resume (the hub was away), or `ended` (the hub
        refused this listing): counted as walked, the next refresh starts it over."""
        with self._lock:
            if ended:
                self._db.execute("UPDATE walks SET error = ?, cursor = NULL, finished_at = ? WHERE scope = ?",
                                 (error, time.time(), scope))
            else:
                self._db.execute("UPDATE walks SET error = ? WHERE scope = ?", (error, scope))

    def completed_at(self, scopes: list[str]) -> float | None:
        """When every one of `scopes` had last been walked to its end (the oldest of them); None if one never was.
        A refresh under way leaves it as it was until its walks get to their ends."""
        if not scopes:
            return None
        with self._lock:
            marks = ", ".join("?" * len(scopes))
            ended, oldest = self._db.execute(
                f"SELECT COUNT(finished_at), MIN(finished_at) FROM walks WHERE scope IN ({marks})", scopes).fetchone()
        return oldest if ended == len(set(scopes)) else None

    def prune(self, source: str, unseen_for_s: float, now: float | None = None) -> int:
        """Deletes the models of `source` no hub answer has listed for `unseen_for_s` (gone from the hub, or
        junk a broken hub once listed): the catalog does not grow without end."""
        cutoff = (time.time() if now is None else now) - unseen_for_s
        with self._lock:
            return self._db.execute("DELETE FROM models WHERE source = ? AND seen_at < ?", (source, cutoff)).rowcount

    # -- reading ---------------------------------------------------------------------------------

    def count(self, source: str | None = None) -> int:
        with self._lock:
            if source:
                return self._db.execute("SELECT COUNT(*) FROM models WHERE source = ?", (source,)).fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM models").fetchone()[0]

    def get(self, source: str, model_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT record, description, seen_at FROM models WHERE source = ? AND id = ?",
                                   (source, str(model_id))).fetchone()
        return self._result(*row) if row else None

    @staticmethod
    def _result(record: str, description: str, seen_at: float, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        return {**json.loads(record), "description": description, "cached": True, "catalogued_at": seen_at,
                "stale": now - seen_at > STALE_AFTER_S}

    def _matches_many(self, expression: str, many: int = 2000) -> bool:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM (SELECT 1 FROM catalog_search WHERE catalog_search MATCH ? "
                                    "LIMIT ?)", (expression, many)).fetchone()[0] >= many

    def search(self, query: str = "", sources: list[str] | None = None, kind: str | None = None,
               base_model: str | None = None, nsfw: bool = False, sort: str = "downloads", limit: int = 30,
               offset: int = 0) -> tuple[list[dict], bool]:
        """Catalogued models matching every word of `query` (prefixes, any case, accents folded) in their name,
        creator, repo id, tags, description or trained words, best first by `sort`. Returns (results, more)."""
        where, args, access = [], [], ""
        expression = match_expression(query)
        order = SORT_COLUMNS.get(sort, "downloads")
        if expression and self.full_text and order == "downloads" and self._matches_many(expression):
            # Walk the models most downloaded first and keep those the match holds, until the page is full,
            # rather than fetch and sort every match: a word in 20,000 of 50,000 models takes 3 ms, not 20.
            # (For a rare word that walk would read the whole index: fetching its few matches is quicker.)
            access = "INDEXED BY models_by_downloads"
            where.append("m.rowid IN (SELECT rowid FROM catalog_search WHERE catalog_search MATCH ?)")
            args.append(expression)
        elif expression and self.full_text:
            access = "JOIN catalog_search ON catalog_search.rowid = m.rowid"
            where.append("catalog_search MATCH ?")
            args.append(expression)
        elif expression:
            for word in re.findall(r"\w+", folded(query))[:MAX_QUERY_WORDS]:
                where.append("(" + " OR ".join(f"m.{c} LIKE ?" for c in TEXT_COLUMNS) + ")")
                args += [f"%{word}%"] * len(TEXT_COLUMNS)
        # The filters narrow the rows but must not choose how they are found: left to itself SQLite walks every
        # row of one base model and runs the full-text match once per row (110 ms for a common word over 50,000
        # models), or sorts a whole hub's rows. A unary + keeps an index from being used for a filter, so the
        # full-text match or the downloads index leads; only base model and kind together have their own.
        filtered = "m" if not expression and kind and base_model else "+m"
        if sources:
            where.append(f"+m.source IN ({', '.join('?' * len(sources))})")
            args += sources
        for column, value in (("kind", kind), ("base_model", base_model)):
            if value:
                where.append(f"{filtered}.{column} = ?")
                args.append(value)
        if not nsfw:
            where.append("m.nsfw = 0")
        sql = (f"SELECT m.record, m.description, m.seen_at FROM models m {access} "
               f"{'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY m.{order} DESC, m.rowid LIMIT ? OFFSET ?")
        with self._lock:
            rows = self._db.execute(sql, (*args, max(0, int(limit)) + 1, max(0, int(offset)))).fetchall()
        now = time.time()
        return [self._result(*row, now=now) for row in rows[:limit]], len(rows) > limit

    def close(self) -> None:
        with self._lock:
            self._db.close()
