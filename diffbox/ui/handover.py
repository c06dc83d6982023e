"""Files handed over once, such as a config export that may hold tokens: fetched, then gone.

`private_folder()` makes a fresh random folder (0700) inside Gradio's upload folder, so Gradio
serves a file written there in place — no copy in its cache, nothing under the diffbox home — and
`launch(allowed_paths=…)` need not widen. `hand_over(path)` then registers the file: it is deleted
as soon as one GET of it through Gradio's file route has been answered in full (the middleware
below watches for that), or EXPIRE_S after it was registered, whichever comes first; `retire(path)`
shortens that to RETIRE_S for a file no longer offered.
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
PREFIX = "diffbox-handover-"
FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")

_pending: set[str] = set()
_lock = threading.Lock()


def private_folder() -> Path:
    root = Path(get_upload_folder())
    root.mkdir(parents=True, exist_ok=True)
    _sweep(root)
    return Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))


def _sweep(root: Path) -> None:
    """Folders left by a run that was killed before its timers fired: gone once they are past EXPIRE_S."""
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
    with _lock:
        _pending.add(real)
    _discard_later(real, EXPIRE_S)
    return real


def retire(path: str | None) -> None:
    """A file no longer offered (a newer export replaced it) goes after RETIRE_S, not at once: a
    download the browser started a moment ago must still finish."""
    if path:
        _discard_later(os.path.realpath(path), RETIRE_S)


def _discard_later(path: str, seconds: float) -> None:
    timer = threading.Timer(seconds, discard, [path])
    timer.daemon = True
    timer.start()


def discard(path: str | None) -> None:
    """Deletes a handed-over file and its folder now; any other path is left alone."""
    real = os.path.realpath(path) if path else ""
    with _lock:
        if real not in _pending:
            return
        _pending.discard(real)
    shutil.rmtree(os.path.dirname(real), ignore_errors=True)  # its private folder holds only this file


def is_pending(path: str) -> bool:
    with _lock:
        return path in _pending


class OneShotDownloads:
    """ASGI middleware: after a handed-over file has been sent in full once, it is deleted."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        route = next((r for r in FILE_ROUTES if scope["type"] == "http" and scope["path"].startswith(r)), None)
        if route is None or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        path = os.path.realpath(scope["path"][len(route):])
        if not is_pending(path):
            return await self.app(scope, receive, send)
        sent = {"status": None, "done": False}

        async def watch(message):
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                sent["done"] = True
            await send(message)

        await self.app(scope, receive, watch)
        if sent["status"] == 200 and sent["done"]:
            discard(path)
