"""One file over HTTP into a `.part` file that survives drops, expired links and app restarts.

Every attempt asks for `Range: bytes=<size of the .part>-`, so a dropped connection, a 5xx or a
restarted app costs at most the bytes that were in flight. The sha256 is computed while writing
(and re-read from the .part once after a restart), so verification needs no second pass.
Server answers handled as other downloaders learned them: 206 resumes, 200 means the Range was
ignored (start over), 416 means we already have it all (or too much), 401/403/404/410 from a
storage host mean the signed URL expired: ask the API for a fresh one.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests

from diffbox.engine.weight_files import sha256_file
from diffbox.hub import HubError, TransientError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT = (15, 120)  # connect, and a stall of two minutes without a byte
MAX_RESOLVES_WITHOUT_PROGRESS = 4
EXPIRED = (401, 403, 404, 410)
QUERY = re.compile(r"\?[^\s'\"()]+")
CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


def without_query(error: Exception) -> str:
    """An error's text without URL query strings: a signed URL's signature is a credential too."""
    return QUERY.sub("?…", str(error))


@dataclass(frozen=True)
class Backoff:
    """Waits 1, 2, 4, … up to 30 s between failed attempts; gives up after `tries` with no progress."""

    base: float = 1.0
    cap: float = 30.0
    tries: int = 6

    def delay(self, failures: int) -> float:
        return min(self.cap, self.base * 2 ** max(0, failures - 1))


def _content_range(response: requests.Response) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header; None where unknown."""
    match = CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


class ResumableFile:
    """The .part file and the running sha256 of what it holds."""

    def __init__(self, path: Path, on_size: Callable[[int], None]):
        self.path = path
        self._on_size = on_size
        self.hasher = hashlib.sha256()
        self.size = 0
        if path.exists():
            self.size = path.stat().st_size
            sha256_file(path, self.hasher)  # once per start; cheaper than fetching the bytes again
        on_size(self.size)

    def restart(self) -> None:
        self.path.write_bytes(b"")
        self.hasher = hashlib.sha256()
        self.size = 0
        self._on_size(0)

    def append(self, chunks, check: Callable[[], None]) -> None:
        with open(self.path, "ab") as out:
            for chunk in chunks:
                check()
                out.write(chunk)
                self.hasher.update(chunk)
                self.size += len(chunk)
                self._on_size(self.size)


def fetch_resumable(resolve: Callable[[], tuple[str, dict]], part: Path, *, on_size: Callable[[int], None],
                    check: Callable[[], None], wait: Callable[[float], None], backoff: Backoff = Backoff(),
                    session: requests.Session | None = None) -> tuple[int, str]:
    """Downloads into `part` until complete; returns (size, sha256 hex).

    `resolve()` gives the URL and headers to use (called again when a signed URL expires);
    `check()` raises to stop (cancel, app shutdown); `wait(seconds)` sleeps but wakes on stop.
    Raises HubError when it gives up; the .part file stays for a later resume.
    """
    if session is None:
        with requests.Session() as own:
            return fetch_resumable(resolve, part, on_size=on_size, check=check, wait=wait, backoff=backoff,
                                   session=own)
    target = ResumableFile(part, on_size)
    source: tuple[str, dict] | None = None
    total: int | None = None
    failures = resolves = 0
    mark = target.size
    while True:
        check()
        if total is not None and target.size == total:
            return target.size, target.hasher.hexdigest()
        if target.size != mark:  # bytes arrived since the last failure: the budget of tries starts over
            failures = resolves = 0
            mark = target.size
        try:
            if source is None:
                resolves += 1
                if resolves > MAX_RESOLVES_WITHOUT_PROGRESS:
                    raise HubError("the download link kept failing even after asking for a fresh one")
                source = resolve()
            url, headers = source
            headers = {**headers, "Accept-Encoding": "identity"}
            if target.size:
                headers["Range"] = f"bytes={target.size}-"
            with session.get(url, headers=headers, stream=True, timeout=TIMEOUT) as response:
                status = response.status_code
                if status in EXPIRED:
                    log.info("file host answered %s for %s; asking for a fresh link", status, part.name)
                    source = None
                    continue
                if status == 416:  # nothing left to send from where we are
                    _, total = _content_range(response)
                    if total is None or target.size > total:
                        target.restart()
                    continue
                if status == 429 or status >= 500:
                    raise TransientError(f"the file host answered HTTP {status}")
                if status == 200:
                    if target.size:
                        log.info("file host ignored Range for %s; starting it over", part.name)
                        target.restart()
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                elif status == 206:
                    start, total = _content_range(response)
                    if start != target.size:
                        target.restart()
                        continue
                else:
                    raise HubError(f"the file host answered HTTP {status}")
                target.append(response.iter_content(CHUNK), check)
            if total is None:
                return target.size, target.hasher.hexdigest()  # no length given: what came is the file
            if target.size > total:
                error = HubError(f"the file host sent {target.size} bytes for a {total}-byte file")
                error.discard = True
                raise error
            if target.size < total:
                raise TransientError("the connection closed before the end of the file")
        except (TransientError, requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            if target.size != mark:
                failures = resolves = 0
                mark = target.size
            failures += 1
            if failures > backoff.tries:
                raise TransientError(f"gave up after {failures} failed attempts: {without_query(exc)}") from None
            log.info("download of %s interrupted (%s); retrying from byte %d", part.name, without_query(exc),
                     target.size)
            wait(backoff.delay(failures))
