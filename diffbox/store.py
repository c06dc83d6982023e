"""The app's small databases under db/: tinydb with atomic writes (models, presets, downloads, the
catalog) and SQLite for the job history, which grows with every job.

Every tinydb write goes to a temp file in the same folder, is fsynced and renamed over the old file,
so a kill -9 (or a pod torn down) at any moment leaves the last good database, never half of one;
SQLite's own journal gives the job history the same guarantee one row at a time.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import resource
import shutil
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Writes `data` to `path` so that readers see either the old file or the new one, never a mix.

    `mode` applies from the temp file's first byte (0o600 for secrets), minus the umask as usual.
    """
    path = Path(path)
    tmp = path.with_name(f"{TMP_MARK}{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class AtomicJSONStorage(Storage):
    """tinydb storage that never leaves a half-written file behind."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> dict | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return json.loads(text) if text.strip() else None

    def write(self, data: dict) -> None:
        atomic_write_text(self.path, json.dumps(data, ensure_ascii=False, separators=(",", ":")))

    def close(self) -> None:
        pass


def _quarantine_if_corrupt(path: Path) -> Path | None:
    """Moves an unreadable database aside (keeping it for the user) and returns where it went."""
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if text.strip() else {}
        if isinstance(data, dict) and all(isinstance(t, dict) for t in data.values()):
            return None
    except (UnicodeDecodeError, json.JSONDecodeError):
        pass
    aside = path.with_name(f"{path.stem}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}")
    os.replace(path, aside)
    log.warning("database %s was unreadable; moved it aside to %s and started a new one", path, aside)
    return aside


def open_db(path: str | Path) -> TinyDB:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(f"{TMP_MARK}{path.name}.*"):
        leftover.unlink(missing_ok=True)  # a writer killed before its rename
    _quarantine_if_corrupt(path)
    return TinyDB(path, storage=AtomicJSONStorage)


# Job states. A job is "queued" until it holds the GPU lock, then "running", then one of the final three.
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"

RETRY_S = 5.0  # how often a record the disk refused is offered to it again

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, created_at REAL NOT NULL, workflow TEXT NOT NULL,
                                 status TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_by_workflow ON jobs (workflow, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status);
"""
# job_search: one full-text entry per job (same rowid), written in the job row's own transaction. FTS5 is
# compiled into the SQLite that CPython's builds and Debian/Ubuntu ship. Created apart from _SCHEMA so that
# a SQLite without it (or a read-only disk) turns search off with a logged reason instead of looking like a
# corrupt database to _connect, which would move the history aside.
SEARCH_COLUMNS = ("workflow", "status", "model", "lora", "seed", "prompt", "negative", "error")
_SEARCH_SCHEMA = (f"CREATE VIRTUAL TABLE IF NOT EXISTS job_search USING fts5 ({', '.join(SEARCH_COLUMNS)}, "
                  "tokenize = 'unicode61 remove_diacritics 2')")


def fts_query(query: str) -> str:
    """A history search box's words as FTS5 reads them; a web-style `-word` means NOT word."""
    return re.sub(r'(?:(?<=\s)|^)-(?=[\w"])', "NOT ", str(query).strip())


def search_trouble(exc: sqlite3.OperationalError) -> str:
    """What was wrong with a search, in words (FTS5's own say "no such column", "syntax error near")."""
    fields = ", ".join(SEARCH_COLUMNS)
    column = re.search(r"no such column: (\S+)", str(exc))
    if column:
        return (f'uses {column.group(1)}: as a field, and the fields are {fields}; put a word with a colon or a '
                f'hyphen in "double quotes"')
    return (f'is not a search this box understands: AND, OR and NOT (or -word) need a word on each side, and '
            f'words with punctuation go in "double quotes"; fields: {fields}')


def search_fields(record: dict) -> tuple[str, ...]:
    """A record's text for each of SEARCH_COLUMNS. LoRAs come from `loras` ({"name"} rows or bare names)
    and from any other `*lora*` parameter (SVI's named ones); the seed from params or the metadata."""
    params = record.get("params") if isinstance(record.get("params"), dict) else {}
    metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    loras = []
    for key, value in params.items():
        if "lora" not in key:
            continue
        for entry in value if isinstance(value, list) else [value]:
            name = entry.get("name") if isinstance(entry, dict) else entry
            if isinstance(name, str) and name:
                loras.append(name)
    seeds = {str(s) for s in (params.get("seed"), metadata.get("seed")) if s not in (None, "", -1)}
    return tuple(str(x or "") for x in (
        record.get("workflow"), record.get("status"), params.get("model") or metadata.get("model"),
        " ".join(loras), " ".join(sorted(seeds)), params.get("prompt"), params.get("negative_prompt"),
        record.get("error")))


_SQLITE_REASONS = {
    "SQLITE_FULL": "the disk is full",
    "SQLITE_READONLY": "the database folder is read-only",
    "SQLITE_CANTOPEN": "the database file cannot be opened (is the db folder writable?)",
    "SQLITE_IOERR": "the disk reported an input/output error",
}
_ERRNO_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the disk is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "the file grew past this system's file-size limit",
    errno.ENOTDIR: "a folder in its path is missing or is a file",
    errno.EIO: "the disk reported an input/output error",
}

NEARLY_FULL = 16 * 1024**2  # free bytes below which a failed write is blamed on a full disk


def likely_cause(folder: Path, otherwise: str = "the disk reported an input/output error") -> str:
    """Why a write into `folder` failed when the writer did not say (ffmpeg, SQLite's I/O errors):
    a full disk or a file-size limit (`ulimit -f`, which also surfaces as EFBIG); else `otherwise`."""
    try:
        if shutil.disk_usage(folder).free < NEARLY_FULL:
            return "the disk is full"
    except OSError:
        pass
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        return f"this process's file-size limit (ulimit -f) is {limit:,} bytes"
    return otherwise


def describe_storage_error(exc: BaseException, folder: Path | None = None) -> str:
    """Why a write failed, in words a user can act on, without the path (it may be an internal one).
    With `folder`, a vague failure (an I/O error) is narrowed down to a full disk or a size limit."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    vague = name.startswith("SQLITE_IOERR") or (isinstance(exc, OSError) and exc.errno == errno.EIO)
    if folder is not None and vague:
        return likely_cause(folder)
    for code, reason in _SQLITE_REASONS.items():
        if name.startswith(code):
            return reason
    if isinstance(exc, OSError) and exc.errno in _ERRNO_REASONS:
        return _ERRNO_REASONS[exc.errno]
    if isinstance(exc, OSError):
        return exc.strerror or exc.__class__.__name__
    return str(exc) or exc.__class__.__name__


class WriteFailed(OSError):
    """Something the user would keep could not be written (disk full, read-only, a size limit, a file that
    does not read back); str() is one sentence for the user, naming the file but not its folder."""


class HistoryUnavailable(WriteFailed):
    """The job history refused a new record; the job is not started."""


def _connect(path: Path) -> sqlite3.Connection:
    """The job database; an unreadable one is moved aside (kept for the user) and a new one started."""
    for attempt in (1, 2):
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous = FULL")  # a commit is on disk before it is acknowledged
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            db.executescript(_SCHEMA)
            return db
        except sqlite3.DatabaseError as exc:
            db.close()
            if attempt == 2 or getattr(exc, "sqlite_errorname", "").startswith(tuple(_SQLITE_REASONS)):
                raise
            aside = path.with_name(f"{path.stem}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}")
            os.replace(path, aside)
            log.warning("database %s was unreadable (%s); moved it aside to %s and started a new one", path,
                        exc, aside)
    raise AssertionError("unreachable")


class JobHistory:
    """Every job's record: state, params (with the seed actually used), outputs, timings, error.

    SQLite rather than a JSON document: a change writes one row, so the cost per job stays flat as
    the history grows (a whole-file rewrite grew to seconds per job at 20,000 jobs), and a commit
    is atomic and durable, so a kill -9 at any moment leaves the last acknowledged state.

    A change the disk refuses (full, read-only) is kept in memory, shown by get/list as if saved,
    and offered to the disk again every few seconds: a finished job never reads "running" forever.
    Only `create` fails loudly, so a job that cannot be recorded is never started.
    """

    def __init__(self, path: str | Path, retry_s: float = RETRY_S):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path.with_suffix(".sqlite3")
        self._retry_s = retry_s
        self._lock = threading.RLock()
        self._unsaved: dict[str, dict] = {}  # job id → changes its row does not hold yet
        self._closed = threading.Event()
        self._retrier: threading.Thread | None = None
        self._db = _connect(self.path)
        self._search_broken: str | None = None  # why search cannot answer, when its index could not be made
        self._build_search_index()
        self._import_tinydb(path.with_suffix(".json"))

    # -- writing -----------------------------------------------------------------------------------

    def create(self, workflow: str, params: dict[str, Any]) -> str:
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        record = {
            "id": job_id, "workflow": workflow, "status": QUEUED, "params": params,
            "created_at": time.time(), "started_at": None, "finished_at": None,
            "outputs": [], "metadata": {}, "error": None, "steps_done": 0, "steps_total": None,
        }
        with self._lock:
            try:
                self._write([record])
            except (sqlite3.Error, OSError) as exc:
                raise HistoryUnavailable(f"the job could not be recorded in the history: "
                                         f"{describe_storage_error(exc, self.path.parent)}") from None
        return job_id

    def update(self, job_id: str, **fields: Any) -> bool:
        """Applies `fields`; False if the disk refused them (they are kept and retried, and shown meanwhile)."""
        with self._lock:
            pending = {**self._unsaved.pop(job_id, {}), **fields}
            try:
                self._apply(job_id, pending)
                return True
            except KeyError:
                raise
            except (sqlite3.Error, OSError) as exc:
                self._unsaved[job_id] = pending
                log.warning("job %s: the history could not save its %s state (%s); keeping it in memory and "
                            "retrying every %g s", job_id, pending.get("status", "latest"),
                            describe_storage_error(exc, self.path.parent), self._retry_s)
                self._start_retrying()
                return False

    def _apply(self, job_id: str, changes: dict) -> None:
        row = self._db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(f"no job {job_id}")
        self._write([{**json.loads(row[0]), **changes}])

    def mark_interrupted(self) -> int:
        """Jobs left queued/running by a previous process cannot be running now: say so in their record."""
        with self._lock:
            stale = [job_id for (job_id,) in
                     self._db.execute("SELECT id FROM jobs WHERE status IN (?, ?)", (QUEUED, RUNNING))]
            for job_id in stale:
                self.update(job_id, status=FAILED, finished_at=time.time(),
                            error="interrupted: the app stopped before this job finished")
        return len(stale)

    def _write(self, records: list[dict]) -> None:
        rows = [(r["id"], r["created_at"], r["workflow"], r["status"],
                 json.dumps(r, ensure_ascii=True, separators=(",", ":"), default=str)) for r in records]
        self._db.execute("BEGIN")  # one transaction: all rows or none, one sync for all of them
        try:
            # An upsert, not INSERT OR REPLACE: the row keeps its rowid, which is its search entry's rowid.
            self._db.executemany("INSERT INTO jobs (id, created_at, workflow, status, record) VALUES (?, ?, ?, ?, ?) "
                                 "ON CONFLICT (id) DO UPDATE SET created_at = excluded.created_at, "
                                 "workflow = excluded.workflow, status = excluded.status, record = excluded.record",
                                 rows)
            self._index(records)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the failure that brought us here is the one to report
            raise

    def flush(self) -> int:
        """Offers the changes the disk refused to it again; returns how many jobs still have unsaved ones."""
        with self._lock:
            for job_id, changes in list(self._unsaved.items()):
                try:
                    self._apply(job_id, changes)
                except (sqlite3.Error, OSError):
                    break
                except KeyError:
                    log.warning("job %s vanished from the history; its unsaved changes are dropped", job_id)
                del self._unsaved[job_id]
                log.info("job %s: the history saved the changes it had kept in memory", job_id)
            return len(self._unsaved)

    def _start_retrying(self) -> None:
        if self._retrier is not None and self._retrier.is_alive():
            return

        def retry() -> None:
            while not self._closed.wait(self._retry_s):
                if self.flush() == 0:
                    return

        self._retrier = threading.Thread(target=retry, name="history-retry", daemon=True)
        self._retrier.start()

    # -- reading -----------------------------------------------------------------------------------

    def _read(self, job_id: str) -> dict | None:
        row = self._db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return {**json.loads(row[0]), **self._unsaved.get(job_id, {})} if row else None

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            return self._read(str(job_id))

    def list(self, limit: int = 200, workflow: str | None = None) -> list[dict]:
        """Newest first."""
        where, args = ("WHERE workflow = ?", [workflow]) if workflow else ("", [])
        with self._lock:
            rows = self._db.execute(f"SELECT record FROM jobs {where} ORDER BY created_at DESC LIMIT ?",
                                    [*args, max(0, int(limit))]).fetchall()
            records = [json.loads(text) for (text,) in rows]
            return [{**r, **self._unsaved.get(r["id"], {})} for r in records]

    def search(self, query: str, limit: int = 200) -> list[dict]:
        """Jobs matching `query`, newest first; an empty query lists them all (`list`).

        SQLite FTS5 query syntax over the words of each job's workflow, status, model, LoRA names, seed,
        prompt, negative prompt and error: words must all appear (any order, any case), `-snow` leaves out
        jobs with that word, `fox*` matches a prefix, `"wan2.1-i2v"` quotes words with punctuation, `OR`/`NOT` combine, and a column narrows
        it (`seed:42`, `lora:fox`, `model:wan`). A query FTS5 cannot parse raises ValueError naming `query`.
        """
        if not str(query or "").strip():
            return self.list(limit=limit)
        if self._search_broken:
            raise ValueError(f"query: search is unavailable, its index could not be built ({self._search_broken}); "
                             f"the history itself is intact and the next start tries again")
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT jobs.record FROM job_search JOIN jobs ON jobs.rowid = job_search.rowid "
                    "WHERE job_search MATCH ? ORDER BY jobs.created_at DESC LIMIT ?",
                    (fts_query(query), max(0, int(limit)))).fetchall()
            except sqlite3.OperationalError as exc:
                raise ValueError(f"query: {str(query)[:80]!r} {search_trouble(exc)}") from None
            records = [json.loads(text) for (text,) in rows]
            return [{**r, **self._unsaved.get(r["id"], {})} for r in records]

    def _index(self, records: list[dict]) -> None:
        """Brings the search entries of `records` in step with their rows, inside the caller's transaction."""
        if self._search_broken:
            return  # no index to keep in step; the next start builds it from every row
        for record in records:
            (rowid,) = self._db.execute("SELECT rowid FROM jobs WHERE id = ?", (record["id"],)).fetchone()
            self._db.execute("DELETE FROM job_search WHERE rowid = ?", (rowid,))
            self._db.execute(f"INSERT INTO job_search (rowid, {', '.join(SEARCH_COLUMNS)}) "
                             f"VALUES (?, {', '.join('?' * len(SEARCH_COLUMNS))})",
                             (rowid, *search_fields(record)))

    def _build_search_index(self) -> None:
        """A database from before search (or one an older version wrote to since) gets its index built from
        every row, in one transaction: a failure leaves the rows as they were and the next start tries again.
        Until then the history works without search (a read-only or full disk must not stop the app)."""
        with self._lock:
            try:
                self._index_every_row()
            except sqlite3.Error as exc:
                self._search_broken = describe_storage_error(exc, self.path.parent)
                log.warning("the history's search index could not be built (%s); search is off until a "
                            "restart", self._search_broken)

    def _index_every_row(self) -> None:
        with self._lock:
            self._db.execute(_SEARCH_SCHEMA)
            # In step when every row has an entry under its rowid and there are no others.
            jobs, indexed, paired = self._db.execute(
                "SELECT (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM job_search), "
                "(SELECT COUNT(*) FROM jobs JOIN job_search ON job_search.rowid = jobs.rowid)").fetchone()
            if jobs == indexed == paired:
                return
            self._db.execute("BEGIN")
            try:
                self._db.execute("DELETE FROM job_search")
                columns = ", ".join(SEARCH_COLUMNS)
                marks = ", ".join("?" * len(SEARCH_COLUMNS))
                self._db.executemany(f"INSERT INTO job_search (rowid, {columns}) VALUES (?, {marks})",
                                     ((rowid, *search_fields(json.loads(text)))
                                      for rowid, text in self._db.execute("SELECT rowid, record FROM jobs")))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            log.info("built the history's search index over %d job record(s)", jobs)

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]

    # -- lifecycle ---------------------------------------------------------------------------------

    def _import_tinydb(self, legacy: Path) -> None:
        """Brings in the history of versions that kept it in a tinydb JSON file, once, in one transaction;
        the old file stays beside the new database as <name>.imported."""
        for leftover in legacy.parent.glob(f"{TMP_MARK}{legacy.name}.*"):
            leftover.unlink(missing_ok=True)
        _quarantine_if_corrupt(legacy)
        if not legacy.exists():
            return
        text = legacy.read_text(encoding="utf-8")
        jobs = (json.loads(text) if text.strip() else {}).get("jobs", {})
        records = [r for r in jobs.values() if isinstance(r, dict) and r.get("id")]
        for record in records:
            record.setdefault("created_at", 0.0)
            record.setdefault("workflow", "")
            record.setdefault("status", FAILED)
        with self._lock:
            self._write(records)
        os.replace(legacy, legacy.with_name(legacy.name + ".imported"))
        log.info("imported %d job record(s) from %s", len(records), legacy)

    def close(self) -> None:
        self._closed.set()
        self.flush()
        with self._lock:
            self._db.close()
