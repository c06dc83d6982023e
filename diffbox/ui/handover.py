"""Files handed over once, such as a config export that may hold tokens: fetched, then gone.

`private_folder()` makes a fresh random folder (0700) inside Gradio's upload folder, so Gradio
serves a file written there in place — no copy in its cache, nothing under the diffbox home — and
`launch(allowed_paths=…)` need not widen. `hand_over(path)` then registers the file: it is deleted
as soon as one GET of it through Gradio's file route has been answered in full (the middleware
below watches for that), or EXPIRE_S after it was registered, whichever comes first; `retire(path)`
shortens that to RETIRE_S for a file no longer offered. One sweeper thread deletes files whose
time is up (not a timer per file), and at most MAX_PENDING files wait at once: registering one more
deletes the one closest to its end, so repeated exports cannot pile up threads or folders.

Only whole reads count, so nothing reads a handed-over file without using it up: a HEAD is answered
405, a Range request gets the whole file (200, then it is gone), and while one GET is being answered
any other request for the file is refused (409). A GET that breaks off leaves the file for another try.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from gradio.utils import get_upload_folder

EXPIRE_S = 600.0
RETIRE_S = 30.0
MAX_PENDING = 64  # far more than one user's open Config tabs; the oldest goes first
PREFIX = "diffbox-handover-"
FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")

_pending: dict[str, float] = {}  # file → time.monotonic() at which it is deleted
_sending: set[str] = set()  # pending files a GET is being answered with right now
_lock = threading.Lock()
_changed = threading.Condition(_lock)  # a file was registered or its time shortened
_sweeper: threading.Thread | None = None
PARTIAL_READS = (b"range", b"if-range")


def private_folder() -> Path:
    root = Path(get_upload_folder())
    root.mkdir(parents=True, exist_ok=True)
    _sweep(root)
    return Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))


def _sweep(root: Path) -> None:
    """Folders left by a run that was killed before its sweeper got to them: gone once past EXPIRE_S."""
    now = time.time()
    for folder in root.glob(PREFIX + "*"):
        try:
            if now - folder.stat().st_mtime > EXPIRE_S:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


def hand_over(path: Path | str) -> str:
    """Registers a file written in a private_folder(); returns its path for the handler to return."""
    real = os.path.realpath(path)
    with _changed:
        _pending[real] = time.monotonic() + EXPIRE_S
        crowded = sorted(_pending, key=_pending.__getitem__)[:max(0, len(_pending) - MAX_PENDING)]
        _start_sweeper()
        _changed.notify()
    for old in crowded:
        discard(old)
    return real


def retire(path: str | None) -> None:
    """A file no longer offered (a newer export replaced it) goes after RETIRE_S, not at once: a
    download the browser started a moment ago must still finish."""
    real = os.path.realpath(path) if path else ""
    with _changed:
        if real in _pending:
            _pending[real] = min(_pending[real], time.monotonic() + RETIRE_S)
            _changed.notify()


def _start_sweeper() -> None:
    global _sweeper
    if _sweeper is None or not _sweeper.is_alive():
        _sweeper = threading.Thread(target=_sweep_forever, name="diffbox-handover-sweeper", daemon=True)
        _sweeper.start()


def _sweep_forever() -> None:
    while True:
        with _changed:
            now = time.monotonic()
            due = [path for path, deadline in _pending.items() if deadline <= now]
            if not due:
                _changed.wait(min(_pending.values(), default=now + EXPIRE_S) - now)
                continue
        for path in due:
            discard(path)


def discard(path: str | None) -> None:
    """Deletes a handed-over file and its folder now; any other path is left alone."""
    real = os.path.realpath(path) if path else ""
    with _lock:
        if _pending.pop(real, None) is None:
            return
        _sending.discard(real)
    shutil.rmtree(os.path.dirname(real), ignore_errors=True)  # its private folder holds only this file


def is_pending(path: str) -> bool:
    with _lock:
        return path in _pending


def _start_sending(path: str) -> bool:
    """Claims a pending file for one GET; False when another request is being answered with it."""
    with _lock:
        if path in _sending:
            return False
        _sending.add(path)
        return True


def _stop_sending(path: str) -> None:
    with _lock:
        _sending.discard(path)


class OneShotDownloads:
    """ASGI middleware: a handed-over file is sent whole, to one GET at a time, and deleted once sent."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        route = next((r for r in FILE_ROUTES if scope["type"] == "http" and scope["path"].startswith(r)), None)
        if route and "\0" in scope["path"]:  # no file has such a name; realpath() would raise (a 500 and a traceback)
            return await _refuse(send, 404, b"Not Found")
        path = os.path.realpath(scope["path"][len(route):]) if route else ""
        if route is None or not is_pending(path):
            return await self.app(scope, receive, send)
        if scope["method"] != "GET":
            return await _refuse(send, 405, b"This file can be downloaded once, with a plain GET.",
                                 [(b"allow", b"GET")])
        if not _start_sending(path):
            return await _refuse(send, 409, b"This file is being downloaded already; it can be downloaded once.")
        whole = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() not in PARTIAL_READS]}
        sent = {"status": None, "done": False}

        async def watch(message):
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                sent["done"] = True
            await send(message)

        try:
            await self.app(whole, receive, watch)
        finally:
            if sent["status"] == 200 and sent["done"]:
                discard(path)
            else:
                _stop_sending(path)


async def _refuse(send, status: int, text: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *(headers or [])]})
    await send({"type": "http.response.body", "body": text})
