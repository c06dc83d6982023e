"""Failed logins cost time: a growing delay per client, so a password cannot be guessed at speed.

Gradio checks passwords at POST /login (its login page and gradio_client's `auth=` both use it);
this ASGI middleware sits in front of that route.

- A client's first FREE_FAILURES wrong passwords are answered at once (a typo costs nothing); after
  that each attempt first waits FIRST_DELAY_S, doubling per further failure up to MAX_DELAY_S. The
  right password clears the count.
- One client's attempts run one at a time, so parallel guesses queue behind each other's waits.
- The client is the address uvicorn reports (it already replaces a loopback peer by the forwarded
  address). When that address is not a public one — the RunPod proxy, a load balancer — the last
  X-Forwarded-For entry, the one that proxy appended, tells its clients apart; anything a client
  wrote into the header itself comes before it and is ignored. Should a proxy pass a forged header
  through anyway, little is gained: all failures through one proxy address also count together,
  with a larger allowance (SHARED_FREE_FAILURES), and at most MAX_WAITING attempts per proxy
  address wait at once (the rest are answered 429 straight away).
- Waiting is asyncio.sleep: everything else keeps being served meanwhile.
- Memory is bounded: at most MAX_TRACKED clients (least recently seen dropped first), and a
  client's failures are forgotten FORGET_AFTER_S after the last one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass, field

FREE_FAILURES = 5
SHARED_FREE_FAILURES = 50
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0
MAX_WAITING = 16
MAX_TRACKED = 10_000
FORGET_AFTER_S = 3600.0
LOGIN_PATHS = ("/login", "/login/")


def delay_after(failures: int, free: int) -> float:
    if failures < free:
        return 0.0
    return min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** min(failures - free, 16))


def _is_public(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False


def _last_forwarded(headers: list[tuple[bytes, bytes]]) -> str | None:
    values = b",".join(v for k, v in headers if k == b"x-forwarded-for").decode("latin-1")
    last = values.rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return None


def client_of(scope) -> tuple[str, str]:
    """(the address that connected, the client it stands for)."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if _is_public(peer):
        return peer, peer
    return peer, _last_forwarded(scope.get("headers") or []) or peer


@dataclass
class _Record:
    failures: int = 0
    last_failure: float = 0.0
    waiting: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LoginThrottle:
    """ASGI middleware; everything but POST /login passes straight through."""

    def __init__(self, app, clock=time.monotonic):
        self.app = app
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def _record(self, key: str) -> _Record:
        record = self._records.pop(key, None) or _Record()
        if record.failures and self._clock() - record.last_failure > FORGET_AFTER_S:
            record.failures = 0
        self._records[key] = record  # most recently seen last
        while len(self._records) > MAX_TRACKED:
            self._records.popitem(last=False)
        return record

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in LOGIN_PATHS:
            return await self.app(scope, receive, send)
        peer, client = client_of(scope)
        shared, own = self._record(f"via {peer}"), self._record(f"{peer} for {client}")
        if shared.waiting >= MAX_WAITING:
            return await _answer(send, 429, "Too many login attempts at once; try again in a minute.")
        status: list[int] = []

        async def watch(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        shared.waiting += 1
        try:
            async with own.lock:
                wait = max(delay_after(own.failures, FREE_FAILURES), delay_after(shared.failures, SHARED_FREE_FAILURES))
                if wait:
                    await asyncio.sleep(wait)
                await self.app(scope, receive, watch)
                if status and status[0] == 400:  # Gradio's "Incorrect credentials."
                    for record in (own, shared):
                        record.failures += 1
                        record.last_failure = self._clock()
                elif status and status[0] == 200:
                    own.failures = shared.failures = 0
        finally:
            shared.waiting -= 1


async def _answer(send, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"60")]})
    await send({"type": "http.response.body", "body": text.encode()})
