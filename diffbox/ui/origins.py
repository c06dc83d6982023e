"""Only this app's own pages may use its login: requests from other sites are refused.

Gradio (6.x) answers a request from any other site with that site echoed in
Access-Control-Allow-Origin plus Allow-Credentials whenever the Host is not localhost — a pod's
proxy URL, a share link — and sets its login cookie SameSite=None. A page elsewhere, opened in the
owner's browser, could then call the API with the owner's login and read the answers (a config
export with tokens, the history, the outputs). On an app bound to this machine, a DNS-rebinding
page (its own name pointed at 127.0.0.1) is even same-origin with itself. `OriginGuard` stands in
front of Gradio, its CORS middleware included, and:

- refuses (403, with no CORS headers) every request, preflights and WebSockets included, whose
  `Origin` is not this app's own. Own means: the `Host` the request was sent to, or the
  `X-Forwarded-Host` a proxy that rewrote Host passed on (a browser cannot add that header to a
  request for another site without a preflight, and the preflight is refused), plus the origins in
  DIFFBOX_ALLOWED_ORIGINS, GRADIO_ROOT_PATH's and the share link's. A request with no Origin
  (gradio_client, curl, a page's own GET) passes: browsers add Origin to every request from another
  site that could change something or read the answer.
- turns every cookie's SameSite=None (or no SameSite) into Lax, so a request from another site
  never carries the login (top-level navigation still does, so links to the app keep working).
  Not Strict: the two differ only on a link from another *site* (with Strict, the owner arriving from
  the RunPod console would have to log in again), and such a navigation can only show the owner the
  app. A same-site page (another pod) gets the cookie with either, so the next rule keeps it out;
- refuses every request another site's page made (Sec-Fetch-Site `same-site` or `cross-site`) unless it
  opens the app in a tab or window (Sec-Fetch-Mode `navigate` + Sec-Fetch-Dest `document`), or carries
  an allowed origin. `proxy.runpod.net` and `gradio.live` are not on the Public Suffix List, so another
  pod or share link is the *same site* as the owner's: its frames, `<img>` and `<script>` GETs carry
  the Lax login cookie and no Origin. Refused, they can neither frame the logged-in app (clickjacking)
  nor use an output's load/error as an oracle. Clients that send no Sec-Fetch headers (gradio_client,
  curl, browsers older than 2023) are judged by Origin alone;
- says on every response that only the app's own pages may frame it (X-Frame-Options SAMEORIGIN and
  CSP frame-ancestors 'self'): a frame's request carries no Origin, so an allowed origin could not be
  told apart from another pod's page, and no origin may frame the app;
- refuses GET /logout coming from another site (Sec-Fetch-Site), even as a link, so no page can log the
  owner out;
- on a loopback bind answers only when Host names this machine (localhost, 127.0.0.0/8, [::1]) or
  an allowed origin's host: a rebinding name pointed at 127.0.0.1 gets 403.

Gradio adds its CORS middleware outside every middleware the app passes in, so the guard is put in
place by `guarded_lifespan`: at server start-up, before the first request, it goes in front of
the whole stack.
"""

from __future__ import annotations

import ipaddress
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.middleware import Middleware

from diffbox.settings import DEFAULT_PORTS, parse_origin

HOST_HEADER = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?")
SAME_SITE = re.compile(r";\s*samesite\s*=\s*([^;]*)", re.IGNORECASE)
FOREIGN_FETCH = ("cross-site", "same-site")  # Sec-Fetch-Site values of a request another site's page made
FRAME_HEADERS = [(b"x-frame-options", b"SAMEORIGIN"), (b"content-security-policy", b"frame-ancestors 'self'")]
REFUSED_ORIGIN = b"Refused: this request came from a page that is not this app's own (see DIFFBOX_ALLOWED_ORIGINS)."
REFUSED_HOST = b"Refused: this app answers only to localhost here (see DIFFBOX_ALLOWED_ORIGINS)."


def parse_host(value: str | None) -> tuple[str, int | None] | None:
    """A Host header → (name, port or None); None when it is not a plain host name or address."""
    value = (value or "").strip()
    if not HOST_HEADER.fullmatch(value):
        return None
    try:
        parts = urlsplit("//" + value)
        return (parts.hostname or "").lower(), parts.port
    except ValueError:  # a port above 65535
        return None


def same_place(origin: tuple[str, str, int], host: tuple[str, int | None] | None) -> bool:
    """Host names no port when the browser used the scheme's default one."""
    if host is None:
        return False
    scheme, name, port = origin
    return name == host[0] and (host[1] or DEFAULT_PORTS[scheme]) == port


def names_this_machine(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass
class OriginPolicy:
    loopback_only: bool  # bound to this machine only: Host must name it (DNS rebinding)
    allowed: set[tuple[str, str, int]] = field(default_factory=set)

    def allow(self, url: str | None) -> None:
        """Also accept the origin of `url` (an allowed origin, a share link, a root URL); others are ignored."""
        parts = urlsplit(url or "")
        origin = parse_origin(f"{parts.scheme}://{parts.netloc}") if parts.netloc else None
        if origin:
            self.allowed.add(origin)

    def host_ok(self, host: str | None) -> bool:
        if not self.loopback_only or host is None:
            return True
        parsed = parse_host(host)
        return parsed is not None and (names_this_machine(parsed[0]) or
                                       any(parsed[0] == name for _, name, _ in self.allowed))

    def allowed_origin(self, origin: str | None) -> bool:
        """One of the origins allowed besides the app's own address (DIFFBOX_ALLOWED_ORIGINS, the share link…)."""
        return origin is not None and parse_origin(origin) in self.allowed

    def origin_ok(self, origin: str, host: str | None, forwarded_host: str | None) -> bool:
        parsed = parse_origin(origin)
        if parsed is None:  # "null" (a sandboxed frame, a file:// page) or garbage
            return False
        first_forwarded = (forwarded_host or "").split(",")[0].strip() or None
        return (parsed in self.allowed or same_place(parsed, parse_host(host))
                or same_place(parsed, parse_host(first_forwarded)))


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return value.decode("latin-1")
    return None


def lax_cookie(value: bytes) -> bytes:
    """A Set-Cookie value with SameSite=None or none at all → SameSite=Lax; Strict and Lax stay."""
    text = value.decode("latin-1")
    current = SAME_SITE.search(text)
    if current and current.group(1).strip().lower() in ("lax", "strict"):
        return value
    return (SAME_SITE.sub("", text) + "; SameSite=Lax").encode("latin-1")


class OriginGuard:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app, policy: OriginPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if not self.policy.host_ok(_header(scope, b"host")):
            return await _refuse(scope, send, REFUSED_HOST)
        origin = _header(scope, b"origin")
        if origin is not None and not self.policy.origin_ok(origin, _header(scope, b"host"),
                                                           _header(scope, b"x-forwarded-host")):
            return await _refuse(scope, send, REFUSED_ORIGIN)
        foreign = _header(scope, b"sec-fetch-site") in FOREIGN_FETCH
        if foreign and scope["type"] == "http" and scope["path"].rstrip("/").endswith("/logout"):
            return await _refuse(scope, send, REFUSED_ORIGIN)
        if foreign and not opens_a_page(scope) and not self.policy.allowed_origin(origin):
            return await _refuse(scope, send, REFUSED_ORIGIN)
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)

        async def same_site_cookies(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*((k, lax_cookie(v) if k.lower() == b"set-cookie" else v)
                                        for k, v in message.get("headers") or []), *FRAME_HEADERS]
            await send(message)

        await self.app(scope, receive, same_site_cookies)


def opens_a_page(scope) -> bool:
    """A top-level navigation (a link, a typed address, a bookmark): the page it opens is the user's to see,
    not the page that linked to it."""
    return (scope["type"] == "http" and _header(scope, b"sec-fetch-mode") == "navigate"
            and _header(scope, b"sec-fetch-dest") == "document")


async def _refuse(scope, send, text: bytes) -> None:
    if scope["type"] == "websocket":  # closing before accepting answers the handshake with 403
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"vary", b"Origin"), *FRAME_HEADERS]})
    await send({"type": "http.response.body", "body": text})


def guarded_lifespan(policy: OriginPolicy):
    """A lifespan (for launch's app_kwargs) that puts OriginGuard in front of the whole middleware stack.

    Starlette builds the stack on the first ASGI call, the lifespan's own start-up; uvicorn serves no
    request before the lifespan has started, so rebuilding the stack here leaves no request unguarded.
    Should this fail, start-up fails and the server does not serve at all."""

    @asynccontextmanager
    async def lifespan(app):
        app.user_middleware.insert(0, Middleware(OriginGuard, policy=policy))
        app.middleware_stack = app.build_middleware_stack()
        yield

    return lifespan


def is_guarded(app) -> bool:
    return any(m.cls is OriginGuard for m in getattr(app, "user_middleware", []))
