"""Gradio routes diffbox does not use are answered 404 before Gradio sees them.

Gradio 6.31 serves some routes to anyone, login or not, that do things this app never needs:

- `/gradio_api/run-history/…` (connect, buckets, records, assets) and the `/gradio_api/runs` page: a
  run history kept in a Hugging Face bucket. Their token comes from the request, or — when Host and
  peer are loopback, as behind a local reverse proxy — from the server's own HF_TOKEN: anyone could
  then list the owner's buckets, read any bucket's records and create buckets with the owner's token.
  `launch(run_history=False)` also turns the feature off; refusing the paths here keeps them shut
  should a Gradio update register them regardless.
- `/gradio_api/custom_component/{id}/{environment}/{type}/{file_name}` print()s its four path
  parameters to stdout before any check: unlimited raw text (escape codes, a fake "password" line)
  into the terminal where the generated password is printed once. diffbox has no custom components.
- the vibe editor's routes (`/gradio_api/vibe-…`, `/gradio_api/undo-vibe-edit`), off unless Gradio
  runs with --vibe, which diffbox never does.

Paths no file or route has are answered 404 too: a control character (NUL, ESC…; a browser
percent-encodes them, so only a script sends them), a name longer than NAME_MAX (255 bytes) or a
path longer than PATH_MAX (4096). Gradio hands such paths on to the operating system (its file and
static routes) or to httpx (the heartbeat, when the client goes away), which raise: a 500 and a
traceback of some 2.5 KB in the server's output for every request, without a login.
"""

from __future__ import annotations

import re

CLOSED = re.compile(r"/gradio_api/(run-history(/|$)|runs(/|$)|custom_component/|vibe-|undo-vibe-edit)")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NAME_MAX = 255
PATH_MAX = 4096


def is_closed(path: str) -> bool:
    """`path` as Starlette routes it (percent-decoded); repeated slashes count as one."""
    return CLOSED.match(re.sub(r"/{2,}", "/", path)) is not None


def impossible(path: str) -> bool:
    raw = path.encode("utf-8", "surrogateescape")
    return (CONTROL.search(path) is not None or len(raw) > PATH_MAX
            or any(len(part) > NAME_MAX for part in raw.split(b"/")))


class ClosedRoutes:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (is_closed(scope["path"]) or impossible(scope["path"])):
            return await self.app(scope, receive, send)
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "http.response.body", "body": b"Not Found"})
