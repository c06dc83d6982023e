"""tinydb with atomic writes: job history now, models and presets later, one file each under db/.

Every write goes to a temp file in the same folder, is fsynced and renamed over the old file,
so a kill -9 (or a pod torn down) at any moment leaves the last good database, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from tinydb import Query, TinyDB
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
FINAL_STATES = (DONE, FAILED, CANCELLED)


class JobHistory:
    """Every job's record: state, params (with the seed actually used), outputs, timings, error."""

    def __init__(self, path: str | Path):
        self._db = open_db(path)
        self._table = self._db.table("jobs")
        self._lock = threading.RLock()  # tinydb itself is not thread-safe

    def create(self, workflow: str, params: dict[str, Any]) -> str:
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        record = {
            "id": job_id, "workflow": workflow, "status": QUEUED, "params": params,
            "created_at": time.time(), "started_at": None, "finished_at": None,
            "outputs": [], "metadata": {}, "error": None, "steps_done": 0, "steps_total": None,
        }
        with self._lock:
            self._table.insert(record)
        return job_id

    def update(self, job_id: str, **fields: Any) -> None:
        with self._lock:
            if not self._table.update(fields, Query().id == job_id):
                raise KeyError(f"no job {job_id}")

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            return self._table.get(Query().id == job_id)

    def list(self, limit: int = 200, workflow: str | None = None) -> list[dict]:
        """Newest first."""
        with self._lock:
            rows: Iterable[dict] = self._table.all()
        if workflow:
            rows = [r for r in rows if r.get("workflow") == workflow]
        return sorted(rows, key=lambda r: r.get("created_at") or 0, reverse=True)[:limit]

    def mark_interrupted(self) -> int:
        """Jobs left queued/running by a previous process cannot be running now: say so in their record."""
        with self._lock:
            stale = Query().status.one_of([QUEUED, RUNNING])
            count = len(self._table.search(stale))
            if count:
                self._table.update({"status": FAILED, "finished_at": time.time(),
                                    "error": "interrupted: the app stopped before this job finished"}, stale)
        return count

    def close(self) -> None:
        self._db.close()
