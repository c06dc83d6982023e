"""Local fake Hugging Face and Civitai servers, plus a Range-capable file host, for the hub tests.

Real HTTP on 127.0.0.1 (huggingface_hub 2.x speaks httpx2, which request mocks cannot intercept),
with knobs for what real servers do to downloads: drop the connection mid-file, pause, answer
429/503, expire a signed URL, corrupt bytes. Every request is logged with its headers and the
body bytes actually sent, so tests can assert what was (re)fetched.

    python tests/fake_hubs.py serve-file FILE   # a file host for bench/download.py
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, quote, urlencode, urlsplit

PIECE = 64 * 1024
CUT = 0  # a Reply with this status cuts the connection instead of answering


class RateLimit:
    """A fixed window of `quota` requests per `window` seconds, as the Hub advertises it (RateLimit headers);
    a request over it is answered 429 and counted."""

    def __init__(self, quota: int, window: float):
        self.quota, self.window = quota, window
        self.started, self.used, self.refused = time.monotonic(), 0, 0
        self.lock = threading.Lock()

    def take(self) -> tuple[bool, dict[str, str]]:
        with self.lock:
            now = time.monotonic()
            if now - self.started >= self.window:
                self.started, self.used = now, 0
            reset = max(0, int(self.window - (now - self.started) + 0.999))
            allowed = self.used < self.quota
            self.used += allowed
            self.refused += not allowed
            headers = {"RateLimit": f'"api";r={max(0, self.quota - self.used)};t={reset}',
                       "RateLimit-Policy": f'"fixed window";"api";q={self.quota};w={self.window:g}'}
            if not allowed:
                headers["Retry-After"] = f"{self.window - (now - self.started):.3f}"
            return allowed, headers


class Faults:
    """What a listing does to its pages: `pages[n]` is a list of faults consumed one per request of page n
    (0-based): "cut" drops the connection, "garbage" answers a body that is not JSON (HF: with its Link),
    "broken" (Civitai) answers the page with some of its items mangled, an int answers that status."""

    def __init__(self):
        self.pages: dict[int, list] = {}

    def next(self, page: int):
        queue = self.pages.get(page)
        return queue.pop(0) if queue else None


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    match: dict[str, str] = field(default_factory=dict)
    status: int = 0
    body_bytes: int = 0  # body bytes actually written to the socket

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, [default])[0]


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Path = b""
    start: int = 0                 # first byte of `body` to send (Range)
    length: int | None = None      # how many bytes to send; None: all from `start`
    drop_at: int | None = None     # absolute offset at which to cut the connection
    pause_at: int | None = None    # absolute offset at which to wait for `resume`
    resume: threading.Event | None = None
    rate: float | None = None      # bytes per second


def json_reply(data, status: int = 200, headers: dict | None = None) -> Reply:
    return Reply(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(data).encode())


def ranged(request: Request, data: bytes | Path, **knobs) -> Reply:
    """200 / 206 / 416 for `data` as a static file host answers a (Range) GET or HEAD."""
    size = data.stat().st_size if isinstance(data, Path) else len(data)
    headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
    if not match:
        return Reply(200, {**headers, "Content-Length": str(size)}, data, **knobs)
    start = int(match.group(1))
    end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
    if start >= size:
        return Reply(416, {**headers, "Content-Range": f"bytes */{size}", "Content-Length": "0"})
    headers.update({"Content-Range": f"bytes {start}-{end}/{size}", "Content-Length": str(end - start + 1)})
    return Reply(206, headers, data, start=start, length=end - start + 1, **knobs)


class FakeServer:
    def __init__(self, host: str = "127.0.0.1"):
        self.routes: list[tuple[str, re.Pattern, Callable[[Request], Reply]]] = []
        self.log: list[Request] = []
        self.name = host
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                owner._handle(self, "GET")

            def do_HEAD(self):
                owner._handle(self, "HEAD")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.name}:{self.server.server_address[1]}"

    def route(self, methods: str, pattern: str):
        def register(fn):
            for method in methods.split(","):
                self.routes.append((method, re.compile(pattern), fn))
            return fn
        return register

    def requests(self, path_contains: str = "") -> list[Request]:
        return [r for r in self.log if path_contains in r.path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        request = Request(method, parts.path, parse_qs(parts.query),
                          {k.lower(): v for k, v in handler.headers.items()})
        self.log.append(request)
        for route_method, pattern, fn in self.routes:
            match = pattern.fullmatch(parts.path)
            if route_method == method and match:
                request.match = match.groupdict()
                reply = fn(request)
                break
        else:
            reply = json_reply({"error": "not found"}, 404)
        request.status = reply.status
        if reply.status == CUT:  # the connection drops before any answer (a proxy restart, a cable)
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        handler.send_response(reply.status)
        body_length = reply.length if reply.length is not None else (
            (reply.body.stat().st_size if isinstance(reply.body, Path) else len(reply.body)) - reply.start)
        reply.headers.setdefault("Content-Length", str(body_length))
        for key, value in reply.headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        if method == "HEAD" or not body_length:
            return
        self._send_body(handler, request, reply, body_length)

    def _send_body(self, handler, request: Request, reply: Reply, length: int) -> None:
        handler.wfile.flush()
        position, end = reply.start, reply.start + length
        plain = reply.drop_at is None and reply.pause_at is None and reply.rate is None
        try:
            if isinstance(reply.body, Path) and plain:  # fast path for the bench: sendfile
                with open(reply.body, "rb") as source:
                    request.body_bytes = handler.connection.sendfile(source, position, length)
                return
            source = open(reply.body, "rb") if isinstance(reply.body, Path) else None
            started = time.monotonic()
            while position < end:
                stop = end
                for mark in (reply.drop_at, reply.pause_at):
                    if mark is not None and position < mark:
                        stop = min(stop, mark)
                stop = min(stop, position + PIECE)
                if source:
                    source.seek(position)
                    piece = source.read(stop - position)
                else:
                    piece = reply.body[position:stop]
                handler.connection.sendall(piece)
                position += len(piece)
                request.body_bytes += len(piece)
                if reply.rate:
                    ahead = request.body_bytes / reply.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                if position == reply.drop_at:
                    handler.close_connection = True
                    handler.connection.shutdown(socket.SHUT_RDWR)
                    return
                if position == reply.pause_at and reply.resume is not None:
                    reply.resume.wait(60)
        except (BrokenPipeError, ConnectionResetError, OSError):
            handler.close_connection = True


@dataclass
class Behaviour:
    """What the file host does to one file. Lists are consumed one entry per GET."""

    drops: list[int] = field(default_factory=list)      # cut the connection at these offsets
    statuses: list[int] = field(default_factory=list)   # answer these (429, 503, ...) before serving
    pause_at: int | None = None                         # stall at this offset until `resume` is set
    resume: threading.Event = field(default_factory=threading.Event)
    corrupt: bool = False                               # flip one byte in the middle
    rate: float | None = None


class FileHost(FakeServer):
    """Serves /files/<name>, Range-capable; signed URLs (?sig=N) can expire."""

    def __init__(self, host: str = "127.0.0.1"):
        super().__init__(host)
        self.files: dict[str, bytes | Path] = {}
        self.behaviour: dict[str, Behaviour] = {}
        self.expired_sigs: set[str] = set()
        self.expire_after_first_request = False  # each signed URL works for one GET only
        self._used_sigs: set[str] = set()
        self.route("GET,HEAD", r"/files/(?P<name>[^/]+)")(self._serve)

    def add(self, name: str, data: bytes | Path, behaviour: Behaviour | None = None) -> str:
        self.files[name] = data
        self.behaviour[name] = behaviour or Behaviour()
        return f"{self.url}/files/{quote(name)}"

    def _serve(self, request: Request) -> Reply:
        name = request.match["name"]
        if name not in self.files:
            return json_reply({"error": "no such file"}, 404)
        sig = request.arg("sig")
        if sig is not None:
            if sig in self.expired_sigs or (self.expire_after_first_request and sig in self._used_sigs):
                return Reply(403, {"Content-Type": "text/plain"}, b"Request has expired")
            self._used_sigs.add(sig)
        rules = self.behaviour[name]
        if rules.statuses and request.method == "GET":
            return Reply(rules.statuses.pop(0), {"Content-Type": "text/plain"}, b"try later")
        data = self.files[name]
        if rules.corrupt and isinstance(data, bytes):
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
        drop = rules.drops.pop(0) if rules.drops and request.method == "GET" else None
        pause, rules.pause_at = rules.pause_at, None
        reply = ranged(request, data, drop_at=drop, pause_at=pause, resume=rules.resume, rate=rules.rate)
        if request.arg("response-content-disposition"):  # as S3/R2 do for a signed URL that asks for it
            reply.headers["Content-Disposition"] = request.arg("response-content-disposition")
        return reply

    def body_bytes(self, name: str) -> int:
        return sum(r.body_bytes for r in self.requests(f"/files/{name}"))


# ---------------------------------------------------------------------------------------------
# Civitai
# ---------------------------------------------------------------------------------------------


class FakeCivitai(FakeServer):
    """`/api/v1/models` (search with cursor), `/models/{id}`, `/model-versions/{id}` and
    `/api/download/models/{version}`, which answers 302 to a signed URL on `files` (another host)."""

    def __init__(self, files: FileHost, token: str = "civitai-test-token-123"):
        super().__init__("127.0.0.1")
        self.files = files
        self.token = token
        self.models: list[dict] = []
        self.protected: set[int] = set()  # version ids that need the token
        self.rate_limit: RateLimit | None = None
        self.faults = Faults()
        self._sigs = itertools.count(1)
        self.route("GET", r"/api/v1/models")(self._search)
        self.route("GET", r"/api/v1/models/(?P<id>\d+)")(self._model)
        self.route("GET", r"/api/v1/model-versions/(?P<id>\d+)")(self._version)
        self.route("GET", r"/api/download/models/(?P<id>\d+)")(self._download)

    def add_model(self, model_id: int, version_id: int, name: str, files: dict[str, bytes], *, type: str = "LORA",
                  base_model: str = "Wan Video 2.2 I2V-A14B", nsfw: bool = False, needs_token: bool = False,
                  fmt: str = "SafeTensor", sha256: dict[str, str] | None = None, behaviour: Behaviour | None = None,
                  downloads: int = 10, likes: int = 5, disposition: str | None = None) -> dict:
        version_files = []
        for index, (file_name, data) in enumerate(files.items()):
            stored = f"{version_id}-{index}"
            self.files.add(stored, data, behaviour)
            digest = (sha256 or {}).get(file_name) or hashlib.sha256(data).hexdigest().upper()
            version_files.append({
                "id": version_id * 10 + index, "name": file_name, "type": "Model", "sizeKB": len(data) / 1024,
                "metadata": {"format": fmt, "size": "pruned", "fp": "fp16"}, "primary": index == 0,
                "pickleScanResult": "Success", "virusScanResult": "Success",
                "hashes": {"SHA256": digest, "AutoV2": digest[:10]}, "_stored": stored, "_disposition": disposition,
                "downloadUrl": f"https://civitai.com/api/download/models/{version_id}"
                               + ("" if index == 0 else f"?type=Model&format={fmt}&fileIndex={index}"),
            })
        model = {"id": model_id, "name": name, "type": type, "nsfw": nsfw, "tags": ["video"],
                 "creator": {"username": "maker"}, "stats": {"downloadCount": downloads, "thumbsUpCount": likes},
                 "modelVersions": [{"id": version_id, "name": "v1", "baseModel": base_model,
                                    "baseModelType": "Standard", "publishedAt": "2026-01-02T03:04:05.000Z",
                                    "files": version_files,
                                    "images": [{"url": f"{self.url}/img/{version_id}-x.jpg", "nsfwLevel": 8,
                                                "type": "image"},
                                               {"url": f"{self.url}/img/{version_id}.jpg", "nsfwLevel": 1,
                                                "type": "image"}],
                                    "downloadUrl": f"https://civitai.com/api/download/models/{version_id}"}]}
        self.models.append(model)
        if needs_token:
            self.protected.add(version_id)
        return model

    @staticmethod
    def _public(data):
        """Without the test-only `_stored` keys."""
        if isinstance(data, dict):
            return {k: FakeCivitai._public(v) for k, v in data.items() if not k.startswith("_")}
        if isinstance(data, list):
            return [FakeCivitai._public(v) for v in data]
        return data

    def add_listing(self, count: int, start_id: int = 100000, *, base_model: str = "Wan Video 2.2 I2V-A14B",
                    words: tuple[str, ...] = ("orbit", "dolly", "glow", "anime", "rain", "neon", "portrait", "fog")):
        """`count` catalog-only models (no files to download), each with a unique word in its description."""
        for n in range(count):
            model_id = start_id + n
            self.models.append({
                "id": model_id, "name": f"Civitai {words[n % len(words)]} {model_id}", "type": "LORA", "nsfw": False,
                "tags": ["video", words[(n + 3) % len(words)]], "creator": {"username": f"maker{n % 50}"},
                "description": f"<p>A <b>LoRA</b> numbered civ{model_id}x for {words[n % len(words)]} shots.</p>",
                "stats": {"downloadCount": n, "thumbsUpCount": n % 17},
                "modelVersions": [{"id": model_id * 10, "name": "v1", "baseModel": base_model,
                                   "baseModelType": "Standard", "publishedAt": "2026-03-04T05:06:07.000Z",
                                   "trainedWords": [f"trig{model_id}"], "files": [], "images": [],
                                   "downloadUrl": f"https://civitai.com/api/download/models/{model_id * 10}"}]})

    def _search(self, request: Request) -> Reply:
        limited = None
        if self.rate_limit is not None:
            allowed, limited = self.rate_limit.take()
            if not allowed:
                return json_reply({"error": "Too Many Requests"}, 429, {"Retry-After": limited["Retry-After"]})
        if request.arg("page") and request.arg("query"):
            return json_reply({"error": "Cannot use page param with query search. Use cursor-based pagination."}, 400)
        query = (request.arg("query") or "").lower()
        types, bases = request.query.get("types", []), request.query.get("baseModels", [])
        nsfw = request.arg("nsfw") == "true"
        found = [m for m in self.models if query in m["name"].lower() and (not types or m["type"] in types)
                 and (not bases or m["modelVersions"][0]["baseModel"] in bases) and (nsfw or not m["nsfw"])]
        start, limit = int(request.arg("cursor") or 0), int(request.arg("limit") or 100)
        page = self._public(found[start:start + limit])
        metadata = {"nextCursor": str(start + limit)} if start + limit < len(found) else {}
        fault = self.faults.next(start // limit)
        if fault == "cut":
            return Reply(CUT)
        if isinstance(fault, int):
            return json_reply({"error": "fault"}, fault)
        if fault == "garbage":
            return Reply(200, {"Content-Type": "application/json"}, b'{"items": [{"id": 1, "na')
        if fault == "broken":  # an item that is no model, one with a text id, one without versions
            page = [42, {"id": "abc", "name": "x", "modelVersions": [{"id": 1}]}, {"id": 7, "modelVersions": []},
                    *page[3:]]
        return json_reply({"items": page, "metadata": metadata})

    def _find_version(self, version_id: int):
        for model in self.models:
            for version in model["modelVersions"]:
                if version["id"] == version_id:
                    return model, version
        return None, None

    def _model(self, request: Request) -> Reply:
        model = next((m for m in self.models if m["id"] == int(request.match["id"])), None)
        return json_reply(self._public(model)) if model else json_reply({"error": "No model with id"}, 404)

    def _version(self, request: Request) -> Reply:
        model, version = self._find_version(int(request.match["id"]))
        if not version:
            return json_reply({"error": "No version with id"}, 404)
        return json_reply(self._public({**version, "modelId": model["id"],
                                        "model": {"name": model["name"], "type": model["type"]}}))

    def _download(self, request: Request) -> Reply:
        version_id = int(request.match["id"])
        _, version = self._find_version(version_id)
        if not version:
            return json_reply({"error": "Not found"}, 404)
        if version_id in self.protected and request.headers.get("authorization") != f"Bearer {self.token}":
            return json_reply({"error": "Unauthorized", "message": "The creator of this asset requires you to be "
                               "logged in to download it"}, 401)
        index = int(request.arg("fileIndex") or 0)
        chosen = version["files"][index]
        # Like Civitai: the file name reaches the storage host in the signed URL, which answers with it;
        # the redirect itself carries none.
        disposition = chosen["_disposition"] or f"attachment; filename=\"{chosen['name']}\""
        location = (f"{self.files.url}/files/{chosen['_stored']}?sig={next(self._sigs)}"
                    f"&response-content-disposition={quote(disposition, safe='')}")
        return Reply(302, {"Location": location, "Cache-Control": "no-store"})


# ---------------------------------------------------------------------------------------------
# Hugging Face
# ---------------------------------------------------------------------------------------------

LFS_THRESHOLD = 1024  # files this big or bigger are "LFS" files with a sha256


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHF(FakeServer):
    """`/api/models` (list), `/api/models/{repo}[/revision/{rev}]` (info with blobs) and
    `/{repo}/resolve/{rev}/{path}` (HEAD metadata + Range GET), as huggingface_hub 2.4 needs them."""

    def __init__(self):
        super().__init__("127.0.0.1")
        self.repos: dict[str, dict] = {}
        self.behaviour: dict[str, Behaviour] = {}
        self.rate_limit: RateLimit | None = None
        self.faults = Faults()
        self.route("GET", r"/api/models")(self._list)
        self.route("GET", r"/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?")(self._info)
        self.route("GET,HEAD", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)")(self._resolve)

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, tags=(), library_name=None, pipeline_tag=None,
                 downloads=100, likes=7, lfs_sha256: dict[str, str] | None = None) -> dict:
        sha = hashlib.sha1(repo_id.encode()).hexdigest()
        siblings = []
        for path, data in files.items():
            sibling = {"rfilename": path, "size": len(data), "blobId": git_blob_id(data)}
            if len(data) >= LFS_THRESHOLD:
                sibling["lfs"] = {"size": len(data), "pointerSize": 134,
                                  "sha256": (lfs_sha256 or {}).get(path) or hashlib.sha256(data).hexdigest()}
            siblings.append(sibling)
        repo = {"id": repo_id, "author": repo_id.split("/")[0], "sha": sha, "downloads": downloads, "likes": likes,
                "tags": list(tags), "library_name": library_name, "pipeline_tag": pipeline_tag,
                "lastModified": "2026-02-03T04:05:06.000Z", "usedStorage": sum(len(d) for d in files.values()),
                "private": False, "siblings": siblings, "_files": files}
        self.repos[repo_id] = repo
        return repo

    def add_listing(self, count: int, owner: str = "creator", *, base_repo: str = "Wan-AI/Wan2.2-I2V-A14B",
                    words: tuple[str, ...] = ("orbit", "dolly", "glow", "anime", "rain", "neon", "portrait", "fog")):
        """`count` listing-only LoRA repos in `base_repo`'s model tree, each with a unique trigger word."""
        for n in range(count):
            repo_id = f"{owner}/wan-{words[n % len(words)]}-lora-{n}"
            self.repos[repo_id] = {
                "id": repo_id, "author": owner, "sha": hashlib.sha1(repo_id.encode()).hexdigest(), "downloads": n,
                "likes": n % 13, "tags": ["lora", "diffusers", f"base_model:{base_repo}",
                                          f"base_model:adapter:{base_repo}", words[(n + 5) % len(words)]],
                "library_name": "diffusers", "pipeline_tag": "image-to-video", "private": False,
                "lastModified": "2026-02-03T04:05:06.000Z", "createdAt": f"2026-01-01T00:00:{n % 60:02d}.000Z",
                "cardData": {"instance_prompt": f"hft{n}k", "widget": [{"text": f"a {words[n % len(words)]} shot"}]},
                "siblings": [], "_files": {}}

    def _list(self, request: Request) -> Reply:
        headers = {}
        if self.rate_limit is not None:
            allowed, headers = self.rate_limit.take()
            if not allowed:
                return json_reply({"error": "rate limited"}, 429, headers)
        search = (request.arg("search") or "").lower()
        filters = request.query.get("filter", [])
        found = [r for r in self.repos.values() if search in r["id"].lower() and all(f in r["tags"] for f in filters)]
        sort = request.arg("sort") or "downloads"
        found.sort(key=lambda r: r.get(sort) or 0, reverse=True)
        # Pages of `limit` models (at most 1000), the next one named by an opaque cursor in the Link header,
        # as the Hub pages /api/models.
        limit = min(int(request.arg("limit") or 1000), 1000)
        start = int(bytes.fromhex(request.arg("cursor")).decode()) if request.arg("cursor") else 0
        page = [{k: v for k, v in r.items() if k not in ("siblings", "_files")} for r in found[start:start + limit]]
        if start + limit < len(found):
            query = [(k, v) for k, values in request.query.items() if k != "cursor" for v in values]
            query.append(("cursor", str(start + limit).encode().hex()))
            headers["Link"] = f'<{self.url}/api/models?{urlencode(query)}>; rel="next"'
        fault = self.faults.next(start // limit)
        if fault == "cut":
            return Reply(CUT)
        if isinstance(fault, int):
            return json_reply({"error": "fault"}, fault, headers)
        if fault == "garbage":
            return Reply(200, {"Content-Type": "application/json", **headers}, b"<html>502 Bad Gateway</html>")
        return json_reply(page, 200, headers)

    def _info(self, request: Request) -> Reply:
        repo = self.repos.get(request.match["repo"])
        if repo is None:
            return json_reply({"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"})
        return json_reply({k: v for k, v in repo.items() if k != "_files"})

    def _resolve(self, request: Request) -> Reply:
        repo = self.repos.get(request.match["repo"])
        if repo is None:
            return json_reply({"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"})
        path = request.match["path"]
        data = repo["_files"].get(path)
        if data is None:
            return json_reply({"error": "Entry not found"}, 404, {"X-Error-Code": "EntryNotFound"})
        sibling = next(s for s in repo["siblings"] if s["rfilename"] == path)
        etag = sibling["lfs"]["sha256"] if "lfs" in sibling else sibling["blobId"]
        rules = self.behaviour.get(path, Behaviour())
        if request.method == "GET" and rules.statuses:
            return Reply(rules.statuses.pop(0), {"Content-Type": "text/plain"}, b"try later")
        if rules.corrupt:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
        drop = rules.drops.pop(0) if rules.drops and request.method == "GET" else None
        reply = ranged(request, data, drop_at=drop)
        reply.headers.update({"X-Repo-Commit": repo["sha"], "ETag": f'"{etag}"'})
        return reply

    def body_bytes(self, path: str) -> int:
        return sum(r.body_bytes for r in self.requests("/resolve/") if r.path.endswith("/" + path))


# ---------------------------------------------------------------------------------------------
# Weights files built by hand (no torch needed)
# ---------------------------------------------------------------------------------------------


def make_safetensors(tensors: dict[str, list[int]], metadata: dict[str, str] | None = None, seed: int = 0) -> bytes:
    """A valid safetensors file with F32 tensors of the given shapes, filled with seeded bytes."""
    header, chunks, offset = {}, [], 0
    for index, (name, shape) in enumerate(tensors.items()):
        count = 1
        for dim in shape:
            count *= dim
        size = count * 4
        block = hashlib.sha256(f"{seed}:{index}".encode()).digest()
        chunks.append((block * (size // len(block) + 1))[:size])
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + b"".join(chunks)


def wan_lora(size_mb: float = 0.05, seed: int = 0) -> bytes:
    """A Wan LoRA (diffusers keys) of about `size_mb` MB."""
    width = max(8, int(size_mb * 1024 * 1024 / 4 / 16 / 2))
    return make_safetensors({"transformer.blocks.0.attn1.to_q.lora_A.weight": [16, width],
                             "transformer.blocks.0.attn1.to_q.lora_B.weight": [width, 16]}, seed=seed)


def qwen_lora(seed: int = 0) -> bytes:
    return make_safetensors({"transformer.transformer_blocks.0.attn.add_q_proj.lora_A.weight": [4, 16],
                             "transformer.transformer_blocks.0.attn.add_q_proj.lora_B.weight": [16, 4]}, seed=seed)



# ---------------------------------------------------------------------------------------------
# Fixtures (imported by the tests/test_hub_*.py modules)
# ---------------------------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # bench/download.py uses FileHost without pytest
    pytest = None

if pytest is not None:
    from types import SimpleNamespace

    @pytest.fixture
    def fakes():
        files = FileHost("localhost")  # another host name than the APIs': auth must not follow the redirect
        civitai, hf = FakeCivitai(files), FakeHF()
        yield SimpleNamespace(files=files, civitai=civitai, hf=hf)
        for behaviour in [*files.behaviour.values(), *hf.behaviour.values()]:
            behaviour.resume.set()
        for server in (files, civitai, hf):
            server.close()

    @pytest.fixture
    def hub_settings(tmp_path):
        from diffbox.settings import Settings, prepare_home

        settings = Settings(home=tmp_path / "home")
        prepare_home(settings, env={})
        return settings

    @pytest.fixture
    def start_hub(fakes):
        """Starts a ModelHub on the fakes (several per test = app restarts); all closed at the end."""
        from diffbox.hub.hub import ModelHub
        from diffbox.hub.transfer import Backoff

        started = []

        def start(settings, **kwargs):
            env = {"HF_ENDPOINT": fakes.hf.url, "DIFFBOX_CIVITAI_URL": fakes.civitai.url}
            hub = ModelHub.start(settings, env=env, backoff=Backoff(base=0.01, cap=0.05, tries=3), **kwargs)
            started.append(hub)
            return hub

        yield start
        for hub in started:
            hub.close()

    @pytest.fixture
    def hub(start_hub, hub_settings):
        return start_hub(hub_settings)


if __name__ == "__main__" and sys.argv[1:2] == ["serve-file"]:
    host = FileHost()
    print(host.add("file.bin", Path(sys.argv[2])), flush=True)
    threading.Event().wait()
