"""Background downloads: a queue, worker threads, state in db/downloads.json, progress for the UI.

A download is planned synchronously (so a bad id, a missing file or a refused format is an
immediate, readable error), then fetched in the background into models/.downloads/<id>/, verified
(sha256 or git blob id from the source, then the safetensors/GGUF header) and only then moved into
models/ by rename: the library never sees a partial or unverified file. Downloads left unfinished
by a stopped app are queued again at the next start and resume from their `.part` files.

The disk is checked for the whole queue, not one download at a time: a new download is refused
unless its bytes, plus what every queued or running one still has to fetch (its size less what its
staging folder already holds), fit the free space; and while it runs each download checks, every
second or so, that it and the downloads ahead of it in the queue still fit (something else may have
filled the disk). One that no longer fits stops with a sentence naming the numbers and keeps what it
has for a Retry, instead of dying with "no space left on device" or starving the ones ahead of it.
Downloads never take the last DISK_RESERVE of the disk: outputs, the job history and the catalog need room
to be written (a job's mp4 on a full disk fails; a downloaded model is worth less than the user's work).

A state change the disk refuses (it is full: the download itself may have filled it) is kept in
memory, shown as if saved and written again every few seconds, so a download never reads
"downloading" after its worker has stopped; cancel and retry also act on a download whose
worker is gone.
"""

from __future__ import annotations

import errno
import logging
import queue
import shutil
import threading
import time
import uuid
from collections import deque
from pathlib import Path, PurePosixPath
from typing import Callable

import tqdm

from diffbox.engine.memory import format_bytes
from diffbox.engine.weight_files import sha256_file
from diffbox.hub import Cancelled, HubError, Interrupted, TransientError
from diffbox.hub.civitai import Civitai
from diffbox.hub.huggingface import HuggingFace
from diffbox.hub.library import KIND_FOLDERS, Library, detect_file, normalise_source
from diffbox.hub.plan import Plan, PlannedFile
from diffbox.hub.safety import WEIGHT_SUFFIXES, git_blob_sha1, inside, safe_filename, validate_weights
from diffbox.hub.transfer import Backoff, fetch_resumable
from diffbox.store import RETRY_S, describe_storage_error, open_db
from tinydb import Query

log = logging.getLogger(__name__)

QUEUED, DOWNLOADING, VERIFYING, DONE, FAILED, CANCELLED = (
    "queued", "downloading", "verifying", "done", "failed", "cancelled")
ACTIVE = (QUEUED, DOWNLOADING, VERIFYING)
STAGING = ".downloads"  # hidden: the library scan skips it
PERSIST_EVERY_S = 2.0
SPEED_WINDOW_S = 5.0
ROOM_CHECK_S = 1.0  # how often a running download checks that the queue still fits the disk


class HashMismatch(HubError):
    discard = True


class NoRoom(HubError):
    """The disk cannot hold what the queue still has to fetch; what was fetched is kept for a Retry."""


class Live:
    """Progress of a running download, in memory (the UI polls it every second)."""

    def __init__(self):
        self.cancel = threading.Event()
        self.wake = threading.Event()  # set on cancel and on shutdown, to cut a backoff wait short
        self.bytes_done = 0
        self.bytes_total: int | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self.persisted_at = 0.0

    def set(self, bytes_done: int) -> None:
        now = time.monotonic()
        self.bytes_done = bytes_done
        self._samples.append((now, bytes_done))
        while len(self._samples) > 2 and now - self._samples[0][0] > SPEED_WINDOW_S:
            self._samples.popleft()

    def speed(self) -> float:
        """Bytes per second over the last few seconds; 0 when stalled."""
        if len(self._samples) < 2 or time.monotonic() - self._samples[-1][0] > SPEED_WINDOW_S:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return max(0.0, (b1 - b0) / (t1 - t0)) if t1 > t0 else 0.0


class _NullFile:
    def write(self, _text):
        pass

    def flush(self):
        pass


def progress_bar_class(report: Callable[[int], None], check: Callable[[], None]) -> type:
    """A tqdm class for hf_hub_download that reports file bytes to `report` and stops on `check()`."""

    class DownloadBar(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["file"] = _NullFile()  # a real bar, drawn nowhere: its state is what we read
            super().__init__(*args, **kwargs)
            self.file_bytes = self.n

        def update(self, n=1):
            check()  # raising here stops huggingface_hub's HTTP loop, which then deletes its temp file
            self.file_bytes += n
            report(self.file_bytes)
            return super().update(n)

        def update_transfer(self, n):
            pass  # Xet's compressed transfer bytes: the file bytes above are what the table shows

    return DownloadBar


def _move(source: Path, dest: Path) -> None:
    """Rename into place; across filesystems (a symlinked models/ subfolder), copy to a temp name first."""
    try:
        source.replace(dest)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    temporary = dest.with_name(f".tmp-{dest.name}.{uuid.uuid4().hex[:6]}")
    if source.is_dir():
        shutil.copytree(source, temporary)
        temporary.replace(dest)
        shutil.rmtree(source)
    else:
        shutil.copy2(source, temporary)
        temporary.replace(dest)
        source.unlink()


def _and_the_others(count: int, where: str, pending: int) -> str:
    """", and the 2 downloads already queued need 3.1 GB more" (nothing when they need nothing)."""
    if not pending:
        return ""
    who = "the download" if count == 1 else f"the {count} downloads"
    return f", and {who} {where} need{'s' if count == 1 else ''} {format_bytes(pending)} more"


DISK_RESERVE = 2 * 1024 ** 3  # bytes downloads leave free (several videos, the databases)


class DownloadManager:
    def __init__(self, models_dir: Path, db_path: Path, library: Library, hf: HuggingFace, civitai: Civitai, *,
                 workers: int = 2, backoff: Backoff = Backoff(),
                 free_space: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free,
                 reserve: int = DISK_RESERVE):
        self.models_dir = Path(models_dir)
        self.reserve = reserve
        self.library, self.hf, self.civitai = library, hf, civitai
        self.backoff = backoff
        self._free_space = free_space
        self._db = open_db(db_path)
        self._table = self._db.table("downloads")
        self._lock = threading.RLock()
        self._finalize_lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._live: dict[str, Live] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, name=f"download-{i}", daemon=True)
                         for i in range(workers)]
        self._unsaved: dict[str, dict] = {}  # download id → fields the disk refused so far
        self._retrier: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Queues what a previous run left unfinished, clears leftovers, starts the workers."""
        with self._lock:
            records = sorted(self._table.all(), key=lambda r: r["created_at"])
            resume = [r["id"] for r in records if r["state"] in ACTIVE]
            if resume:
                self._table.update({"state": QUEUED}, Query().id.one_of(resume))
                log.info("resuming %d unfinished download(s)", len(resume))
            keep = set(resume) | {r["id"] for r in records if r["state"] == FAILED}
        staging_root = self.models_dir / STAGING
        if staging_root.is_dir():
            for folder in staging_root.iterdir():
                if folder.name not in keep:
                    shutil.rmtree(folder, ignore_errors=True)
                else:  # huggingface_hub's per-process temp files cannot be resumed; they only take space
                    for stale in folder.glob("files/.cache/huggingface/download/**/*.incomplete"):
                        stale.unlink(missing_ok=True)
        for download_id in resume:
            self._queue.put(download_id)
        for thread in self._threads:
            thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stops the workers at their next chunk; unfinished downloads resume at the next start."""
        self._stop.set()
        for live in list(self._live.values()):
            live.wake.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)
        self._flush_unsaved()
        self._db.close()

    # -- requests -------------------------------------------------------------------------------

    def request(self, source: str, model_id: str, file: str = "", without: tuple[str, ...] = ()) -> str:
        """Plans the download (raising HubError for anything the user must fix) and queues it. `without`:
        component folders of a whole HF repo fetched without their weights (HuggingFace.plan)."""
        try:
            source = normalise_source(source)
        except ValueError as exc:
            raise HubError(str(exc)) from None
        if not str(model_id or "").strip():
            raise HubError("say which model to download (a Hugging Face repo id or a Civitai model id)")
        if source == "hf":
            plan = self.hf.plan(model_id, file or "", tuple(without))
        elif source == "civitai":
            plan = self.civitai.plan(model_id, file or "")
        else:
            raise HubError("downloads come from hf or civitai")
        paths = [f.path for f in plan.files]
        with self._lock:
            for record in map(self._merged, self._table.all()):
                same = (record["plan"]["source"], record["plan"]["model_id"], record["plan"]["revision"],
                        [f["path"] for f in record["plan"]["files"]]) == (plan.source, plan.model_id,
                                                                         plan.revision, paths)
                if same and record["state"] in ACTIVE:
                    return record["id"]  # asked twice: one download
        existing = self._already_in_library(plan)
        download_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        record = {"id": download_id, "plan": plan.to_dict(), "state": DONE if existing else QUEUED,
                  "bytes_done": plan.total_size if existing else 0, "bytes_total": plan.total_size,
                  "error": None, "name": existing, "created_at": time.time(), "queued_at": time.time(),
                  "started_at": None, "finished_at": time.time() if existing else None}
        with self._lock:  # the check and the insert together: two requests at once cannot both take the last GB
            if existing is None:
                self._refuse_without_room(plan)
            try:
                self._table.insert(record)
            except OSError as exc:
                raise HubError(f"cannot record the download of {plan.title}: {describe_storage_error(exc)}") from None
        if existing:
            log.info("%s is already in the library as %s", plan.title, existing)
        else:
            log.info("queued download %s: %s (%d file(s), %d bytes)", download_id, plan.title, len(plan.files),
                     plan.total_size)
            self._queue.put(download_id)
        return download_id

    def _already_in_library(self, plan: Plan) -> str | None:
        """A single file whose source hash is already on disk: record where it came from, fetch nothing."""
        if plan.whole_repo or len(plan.files) != 1 or not plan.files[0].sha256:
            return None
        model = self.library.find_sha256(plan.files[0].sha256)
        if model is None:
            return None
        if model.source == "local":
            self.library.record_download(model.name, source=plan.source, model_id=plan.model_id,
                                         revision=plan.revision, sha256={}, verified=True, base_model=plan.base_model,
                                         kind=plan.kind)
        return model.name

    def cancel(self, download_id: str) -> dict:
        """Stops a queued or running download and deletes its partial files (also clears a failed one)."""
        with self._lock:
            record = self._require(download_id)
            if record["state"] in (DONE, CANCELLED):
                return self._public(record)
            live = self._live.get(download_id)
            if record["state"] in (QUEUED, FAILED) or self._orphaned(record):
                self._update(download_id, state=CANCELLED, finished_at=time.time())
                shutil.rmtree(self._staging(download_id), ignore_errors=True)
        if live is not None:  # the worker notices at its next chunk, then cleans up
            live.cancel.set()
            live.wake.set()
        return self.get(download_id)

    def retry(self, download_id: str) -> dict:
        """Queues a failed or cancelled download again; it resumes from whatever partial file is left."""
        with self._lock:
            record = self._require(download_id)
            if record["state"] not in (FAILED, CANCELLED) and not self._orphaned(record):
                return self._public(record)
            self._update(download_id, state=QUEUED, error=None, finished_at=None, queued_at=time.time())
        self._queue.put(download_id)
        return self.get(download_id)

    # -- disk space for the whole queue -----------------------------------------------------------

    def _refuse_without_room(self, plan: Plan) -> None:
        """Raises HubError unless the new plan and everything still to fetch for the queue fit the free disk."""
        queued = self._active_ahead(None)
        pending = sum(map(self._still_to_fetch, queued))
        free = self._free_space(self.models_dir)
        if plan.total_size + pending > free - self.reserve:
            others = _and_the_others(len(queued), "already queued", pending)
            raise HubError(f"not enough disk space for {plan.title}: it needs {format_bytes(plan.total_size)}{others}, "
                           f"{self._free_text(free)}")

    def _check_room(self, download_id: str) -> None:
        """Raises NoRoom when this download and those ahead of it in the queue no longer fit the free disk."""
        with self._lock:
            record = self._require(download_id)
            ahead = self._active_ahead(record)
            own, pending = self._still_to_fetch(record), sum(map(self._still_to_fetch, ahead))
            free = self._free_space(self.models_dir)
        if own + pending > free - self.reserve:
            others = _and_the_others(len(ahead), "ahead of it", pending)
            raise NoRoom(f"not enough disk space to go on with {record['plan']['title']}: it still needs "
                         f"{format_bytes(own)}{others}, {self._free_text(free)}. Free some space and press Retry.")

    def _free_text(self, free: int) -> str:
        kept = (f", of which downloads leave {format_bytes(self.reserve)} for outputs and the job history"
                if self.reserve else "")
        return f"{format_bytes(free)} are free in the models folder{kept}"

    def _active_ahead(self, record: dict | None) -> list[dict]:
        """Queued, running and verifying downloads queued before `record` (all of them for None)."""
        def place(r: dict) -> tuple:
            return r.get("queued_at") or r["created_at"], r["id"]

        active = [r for r in map(self._merged, self._table.all()) if r["state"] in ACTIVE]
        return [r for r in active if record is None or place(r) < place(record)]

    def _still_to_fetch(self, record: dict) -> int:
        """A download's size less the bytes its staging folder already holds (fetched files and partial ones)."""
        if record["state"] == VERIFYING:  # every byte is fetched; its staging folder empties as it moves into place
            return 0
        held = 0
        for path in self._staging(record["id"]).rglob("*"):
            try:
                held += path.lstat().st_size if path.is_file() and not path.is_symlink() else 0
            except OSError:  # a temp file renamed or deleted while we looked
                pass
        return max(0, record["bytes_total"] - held)

    # -- reading --------------------------------------------------------------------------------

    def list(self, limit: int = 200) -> list[dict]:
        with self._lock:
            records = sorted((self._merged(r) for r in self._table.all()), key=lambda r: r["created_at"],
                             reverse=True)[:limit]
        return [self._public(r) for r in records]

    def get(self, download_id: str) -> dict:
        with self._lock:
            return self._public(self._require(download_id))

    def plan(self, download_id: str) -> dict:
        """What the download resolved: revision (HF commit / Civitai version id) and each file's path,
        size and source sha256 (a config pin records these)."""
        with self._lock:
            return dict(self._require(download_id)["plan"])

    def wait(self, download_id: str, timeout: float = 60.0) -> dict:
        """Blocks until the download is done, failed or cancelled (for scripts and tests)."""
        deadline = time.monotonic() + timeout
        while (state := self.get(download_id))["state"] in ACTIVE:
            if time.monotonic() > deadline:
                raise TimeoutError(f"download {download_id} still {state['state']} after {timeout:.0f} s")
            time.sleep(0.05)
        return state

    def _require(self, download_id: str) -> dict:
        record = self._table.get(Query().id == download_id)
        if record is None:
            raise HubError(f"there is no download {download_id!r}")
        return self._merged(record)

    def _merged(self, record: dict) -> dict:
        """The record as it stands: what the disk holds, plus what it refused."""
        return {**record, **self._unsaved.get(record["id"], {})}

    def _orphaned(self, record: dict) -> bool:
        """Downloading or verifying by the record, but no worker holds it (it ended without saying so)."""
        return record["state"] in (DOWNLOADING, VERIFYING) and record["id"] not in self._live

    def _public(self, record: dict) -> dict:
        plan = record["plan"]
        files = plan["files"]
        live = self._live.get(record["id"])
        running = live is not None and record["state"] in ACTIVE
        bytes_done = live.bytes_done if running else record["bytes_done"]
        bytes_total = (live.bytes_total if running and live.bytes_total else None) or record["bytes_total"]
        speed = live.speed() if running else 0.0
        remaining = max(0, bytes_total - bytes_done)
        return {
            "id": record["id"], "source": plan["source"], "model_id": plan["model_id"], "revision": plan["revision"],
            "file": plan["model_id"] if plan["whole_repo"] else (files[0]["path"] if files else ""),
            "title": plan["title"], "state": record["state"], "error": record["error"],
            "bytes_done": int(bytes_done), "bytes_total": int(bytes_total), "speed": round(speed, 1),
            "eta_s": round(remaining / speed, 1) if speed > 0 else None, "name": record.get("name"),
            "files_done": sum(1 for f in files if f["done"]), "files_total": len(files),
            "created_at": record["created_at"], "finished_at": record.get("finished_at"),
        }

    def _update(self, download_id: str, **fields) -> None:
        """Saves `fields`; if the disk refuses, keeps them (reads show them) and retries every few seconds."""
        with self._lock:
            pending = {**self._unsaved.pop(download_id, {}), **fields}
            try:
                self._table.update(pending, Query().id == download_id)
            except OSError as exc:
                self._unsaved[download_id] = pending
                log.warning("download %s: could not save its state (%s); keeping it in memory and retrying",
                            download_id, describe_storage_error(exc))
                self._start_retrying()

    def _flush_unsaved(self) -> bool:
        """Writes what the disk refused before; True once nothing is left over."""
        with self._lock:
            for download_id in list(self._unsaved):
                self._update(download_id)
            return not self._unsaved

    def _start_retrying(self) -> None:
        if self._retrier is not None and self._retrier.is_alive():
            return

        def retry() -> None:
            while not self._stop.wait(RETRY_S):
                if self._flush_unsaved():
                    return

        self._retrier = threading.Thread(target=retry, name="downloads-retry", daemon=True)
        self._retrier.start()

    def _staging(self, download_id: str) -> Path:
        return self.models_dir / STAGING / download_id

    # -- the worker -----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            download_id = self._queue.get()
            if download_id is None or self._stop.is_set():
                return
            try:
                self._run(download_id)
            except Exception as exc:  # noqa: BLE001 - a worker must survive any one download
                log.exception("download %s crashed", download_id)
                self._update(download_id, state=FAILED, error=f"unexpected error: {exc}", finished_at=time.time())

    def _run(self, download_id: str) -> None:
        with self._lock:
            record = self._table.get(Query().id == download_id)
            record = self._merged(record) if record is not None else None
            if record is None or record["state"] != QUEUED:
                return  # cancelled while queued, or queued twice
            live = self._live[download_id] = Live()
            self._update(download_id, state=DOWNLOADING, started_at=time.time())
        plan = Plan.from_dict(record["plan"])
        staging = self._staging(download_id)
        for planned in plan.files:  # a file verified earlier counts only if it is still there
            planned.done = planned.done and self._staged(plan, planned, staging).is_file()
        staging.mkdir(parents=True, exist_ok=True)
        live.bytes_total = plan.total_size
        room_checked = [float("-inf")]

        def check() -> None:
            if self._stop.is_set():
                raise Interrupted()
            if live.cancel.is_set():
                raise Cancelled()
            if time.monotonic() - room_checked[0] > ROOM_CHECK_S:
                room_checked[0] = time.monotonic()
                self._check_room(download_id)

        def wait(seconds: float) -> None:
            live.wake.wait(seconds)
            check()

        try:
            check()  # before the first byte: the disk may have filled since the download was queued
            for planned in plan.files:
                if planned.done:
                    continue
                offset = sum(f.size for f in plan.files if f.done)

                def report(n: int, offset=offset) -> None:
                    live.set(offset + n)
                    if time.monotonic() - live.persisted_at > PERSIST_EVERY_S:
                        live.persisted_at = time.monotonic()
                        self._update(download_id, bytes_done=live.bytes_done)

                if plan.source == "hf":
                    self._fetch_hf(plan, planned, staging, report, check, wait)
                else:
                    self._fetch_civitai(plan, planned, staging, report, check, wait, live)
                planned.done = True
                self._update(download_id, plan=plan.to_dict(), bytes_total=plan.total_size,
                             bytes_done=sum(f.size for f in plan.files if f.done))
            check()
            self._update(download_id, state=VERIFYING)
            name = self._finalize(plan, staging)
            self._update(download_id, state=DONE, name=name, finished_at=time.time(), bytes_done=plan.total_size,
                         bytes_total=plan.total_size)
            log.info("download %s done: %s", download_id, name)
        except Interrupted:
            self._update(download_id, bytes_done=live.bytes_done)
            log.info("download %s interrupted by shutdown; it resumes at the next start", download_id)
        except Cancelled:
            shutil.rmtree(staging, ignore_errors=True)
            self._update(download_id, state=CANCELLED, finished_at=time.time())
            log.info("download %s cancelled", download_id)
        except HubError as exc:
            if exc.discard:
                shutil.rmtree(staging, ignore_errors=True)
            self._update(download_id, state=FAILED, error=str(exc), finished_at=time.time(),
                         bytes_done=0 if exc.discard else live.bytes_done, plan=plan.to_dict())
            log.warning("download %s failed: %s", download_id, exc)
        except OSError as exc:  # disk full, permissions: the partial file is kept for a retry
            self._update(download_id, state=FAILED, error=f"could not write the file: {describe_storage_error(exc)}",
                         finished_at=time.time(), bytes_done=live.bytes_done)
            log.warning("download %s failed: %s", download_id, exc)
        except Exception as exc:  # a bug must not leave the download "downloading" forever
            self._update(download_id, state=FAILED, error=f"unexpected error: {exc}", finished_at=time.time())
            log.exception("download %s crashed", download_id)
        finally:
            with self._lock:
                self._live.pop(download_id, None)

    @staticmethod
    def _staged(plan: Plan, planned: PlannedFile, staging: Path) -> Path:
        """Where a verified file waits for the final move."""
        return staging / "files" / planned.path if plan.source == "hf" else staging / planned.path

    def _fetch_civitai(self, plan: Plan, planned: PlannedFile, staging: Path, report, check, wait, live: Live) -> None:
        part, final = staging / f"{planned.path}.part", staging / planned.path
        if not final.exists():  # (it exists when the app stopped between the rename and the record update)
            size, digest = fetch_resumable(lambda: self.civitai.resolve(planned.url, plan.title), part,
                                           on_size=report, check=check, wait=wait, backoff=self.backoff)
            if planned.sha256 and digest != planned.sha256:
                part.unlink(missing_ok=True)
                raise HashMismatch(self._mismatch(planned.path, planned.sha256, digest))
            planned.size = size  # Civitai's sizeKB is only approximate
            live.bytes_total = plan.total_size
            part.replace(final)
            planned.actual_sha256 = digest
        elif not planned.actual_sha256:
            planned.actual_sha256 = sha256_file(final)
        validate_weights(final)  # UnsafeFile (discard) for a pickle or a truncated header

    def _fetch_hf(self, plan: Plan, planned: PlannedFile, staging: Path, report, check, wait) -> None:
        failures = 0
        while True:
            try:
                path = self.hf.download(plan, planned, staging / "files", progress_bar_class(report, check))
                break
            except TransientError as exc:  # huggingface_hub retries drops itself; this covers 5xx
                failures += 1
                if failures > self.backoff.tries:
                    raise
                log.info("%s: %s; retrying", planned.path, exc)
                wait(self.backoff.delay(failures))
        check()
        digest = sha256_file(path)
        if planned.sha256 and digest != planned.sha256:
            path.unlink(missing_ok=True)
            raise HashMismatch(self._mismatch(planned.path, planned.sha256, digest))
        if planned.git_sha1 and (actual := git_blob_sha1(path)) != planned.git_sha1:
            path.unlink(missing_ok=True)
            raise HashMismatch(self._mismatch(planned.path, planned.git_sha1, actual, "git blob id"))
        if path.name.lower().endswith(WEIGHT_SUFFIXES):
            validate_weights(path)
        planned.actual_sha256 = digest
        report(planned.size)

    @staticmethod
    def _mismatch(name: str, expected: str, actual: str, what: str = "SHA256") -> str:
        return (f"{name}: the downloaded bytes do not match the source's {what} (expected {expected[:12]}…, got "
                f"{actual[:12]}…); the file was discarded. Press Retry to download it again.")

    def _finalize(self, plan: Plan, staging: Path) -> str:
        """Moves the verified files into models/ (one rename) and records them in the library."""
        verified = all(f.sha256 or f.git_sha1 for f in plan.files)
        with self._finalize_lock:
            if plan.whole_repo:
                source = staging / "files"
                shutil.rmtree(source / ".cache", ignore_errors=True)  # huggingface_hub's local_dir bookkeeping
                dest = self._unique(self.models_dir / KIND_FOLDERS["diffusers"] / plan.model_id.replace("/", "--"),
                                    plan.revision)
                hashes = {f.path: f.actual_sha256 for f in plan.files}
            else:
                planned = plan.files[0]
                source = self._staged(plan, planned, staging)
                kind = detect_file(source).kind
                if kind == "checkpoint" and plan.kind in ("lora", "vae", "controlnet"):
                    kind = plan.kind
                dest = self.models_dir / KIND_FOLDERS[kind] / safe_filename(PurePosixPath(planned.path).name)
                if dest.is_file() and sha256_file(dest) == planned.actual_sha256:
                    source.unlink()  # the very same file is already there (copied in by hand)
                else:
                    dest = self._unique(dest, plan.revision)
                hashes = {dest.name: planned.actual_sha256}
            inside(self.models_dir, dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if source.exists():
                _move(source, dest)
        shutil.rmtree(staging, ignore_errors=True)
        name = dest.relative_to(self.models_dir).as_posix()
        self.library.record_download(name, source=plan.source, model_id=plan.model_id, revision=plan.revision,
                                     sha256=hashes, verified=verified, base_model=plan.base_model, kind=plan.kind)
        return name

    @staticmethod
    def _unique(dest: Path, revision: str) -> Path:
        """`dest`, or a sibling name that does not overwrite anything a user already has."""
        if not dest.exists():
            return dest
        suffix = "".join(dest.suffixes[-1:]) if dest.suffix in WEIGHT_SUFFIXES else ""
        stem = dest.name[: len(dest.name) - len(suffix)]
        for n in range(1, 1000):
            tag = str(revision)[:10] + (f"-{n}" if n > 1 else "")
            candidate = dest.with_name(f"{stem}-{tag}{suffix}")
            if not candidate.exists():
                return candidate
        raise HubError(f"too many copies of {dest.name} in {dest.parent}")
