"""Failed logins cost time, so a password cannot be guessed at speed; the owner is never locked out.

Gradio checks passwords at POST /login (its login page and gradio_client's `auth=` both use it);
this ASGI middleware sits in front of that route. The trade-off between slowing guesses and
locking the owner out is settled like this:

- **Per client.** A client's first FREE_FAILURES wrong passwords are answered at once (a typo costs
  nothing); after that each attempt first waits FIRST_DELAY_S, doubling per further failure up to
  MAX_DELAY_S. A client's attempts run one at a time, so parallel guesses queue behind each other's
  waits; more than CLIENT_MAX_WAITING at once are answered 429 (only that client's). The right
  password clears the count. One real address therefore gets about one guess per 30 s.
- **Who the client is.** The address that connected, as the socket reports it: the app tells uvicorn
  to trust no X-Forwarded-For (FORWARDED_ALLOW_IPS="" unless the user set it), so nobody on the
  pod's loopback can pose as a fresh client. When that address is not a public one — the RunPod
  proxy, the share tunnel, a load balancer — the last X-Forwarded-For entry, the one that proxy
  appended, tells its clients apart; anything a client wrote into the header itself comes first and
  is ignored. An IPv6 client counts by its /64 network: it may own all of it.
- **Per proxy.** Clients behind one proxy address can be forged (a proxy that passes the header on
  unchanged, anyone on the pod) or many, so all their failures also count together: from
  SHARED_FREE_FAILURES on, every attempt through that address waits the shared delay too (the same
  doubling, same cap). Attempts wait; none is refused until MAX_WAITING are waiting through that
  address at once (each costs a sleeping coroutine and an open connection: bounded memory). An
  attacker with forged or many addresses thus gets at most MAX_WAITING guesses per MAX_DELAY_S,
  and someone else's right password gets in after at most MAX_DELAY_S unless MAX_WAITING
  connections are held open.
- **The owner's browser.** A successful login also gets a device cookie (DEVICE_COOKIE, signed with a
  key made at start, HttpOnly, SameSite=Strict, DEVICE_MAX_AGE_S). An attempt that carries a valid one
  counts in that device's own lane only: no shared delay, nothing anyone else does slows it, so the
  owner's browser gets straight in during any flood (its own wrong passwords still slow it down).
  Device cookies last until the app restarts. The generated password has 96 bits, out of reach at
  any of these rates; a password you choose should be long (README).
- Waiting is asyncio.sleep: everything else keeps being served meanwhile. At most MAX_TRACKED lanes are
  remembered (least recently seen dropped first), and failures are forgotten FORGET_AFTER_S after the last.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

FREE_FAILURES = 5
SHARED_FREE_FAILURES = 50
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0
CLIENT_MAX_WAITING = 8
MAX_WAITING = 256
MAX_TRACKED = 10_000
FORGET_AFTER_S = 3600.0
LOGIN_PATHS = ("/login", "/login/")
DEVICE_COOKIE = "diffbox-device"
DEVICE_MAX_AGE_S = 30 * 24 * 3600


def delay_after(failures: int, free: int) -> float:
    if failures < free:
        return 0.0
    return min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** min(failures - free, 16))


def _is_public(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False


def _grouped(address: str) -> str:
    """An IPv6 address → its /64 network; anything else as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def _last_forwarded(headers: list[tuple[bytes, bytes]]) -> str | None:
    values = b",".join(v for k, v in headers if k == b"x-forwarded-for").decode("latin-1")
    last = values.rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return None


def client_of(scope) -> tuple[str, str]:
    """(the address that connected, the client it stands for), IPv6 grouped by /64."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if _is_public(peer):
        return _grouped(peer), _grouped(peer)
    return _grouped(peer), _grouped(_last_forwarded(scope.get("headers") or []) or peer)


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
        self._device_key = secrets.token_bytes(32)

    def _record(self, key: str) -> _Record:
        record = self._records.pop(key, None) or _Record()
        if record.failures and self._clock() - record.last_failure > FORGET_AFTER_S:
            record.failures = 0
        self._records[key] = record  # most recently seen last
        while len(self._records) > MAX_TRACKED:
            self._records.popitem(last=False)
        return record

    def _sign(self, device: str) -> str:
        return hmac.new(self._device_key, device.encode(), hashlib.sha256).hexdigest()[:32]

    def _device(self, scope) -> str | None:
        """The device id of a valid device cookie on the request, else None."""
        for key, value in scope.get("headers") or []:
            if key != b"cookie":
                continue
            for pair in value.decode("latin-1").split(";"):
                name, _, token = pair.strip().partition("=")
                device, _, signature = token.partition(".")
                if name == DEVICE_COOKIE and device and hmac.compare_digest(signature.encode("latin-1"),
                                                                            self._sign(device).encode()):
                    return device
        return None

    def _new_device_cookie(self) -> bytes:
        device = secrets.token_urlsafe(16)
        return (f"{DEVICE_COOKIE}={device}.{self._sign(device)}; Path=/; Max-Age={DEVICE_MAX_AGE_S}; "
                "HttpOnly; SameSite=Strict").encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in LOGIN_PATHS:
            return await self.app(scope, receive, send)
        device = self._device(scope)
        if device:
            own, shared = self._record(f"device {device}"), None
        else:
            peer, client = client_of(scope)
            own, shared = self._record(f"{peer} for {client}"), self._record(f"via {peer}")
        if own.waiting >= CLIENT_MAX_WAITING or (shared and shared.waiting >= MAX_WAITING):
            return await _answer(send, 429, "Too many login attempts at once; try again in a minute.")
        lanes = [record for record in (own, shared) if record]
        status: list[int] = []

        async def watch(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
                if message["status"] == 200:
                    message["headers"] = [*message.get("headers", []), (b"set-cookie", self._new_device_cookie())]
            await send(message)

        for record in lanes:
            record.waiting += 1
        try:
            async with own.lock:
                wait = max(delay_after(own.failures, FREE_FAILURES),
                           delay_after(shared.failures, SHARED_FREE_FAILURES) if shared else 0.0)
                if wait:
                    await asyncio.sleep(wait)
                await self.app(scope, receive, watch)
                if status and status[0] == 400:  # Gradio's "Incorrect credentials."
                    for record in lanes:
                        record.failures += 1
                        record.last_failure = self._clock()
                elif status and status[0] == 200:
                    for record in lanes:
                        record.failures = 0
        finally:
            for record in lanes:
                record.waiting -= 1


async def _answer(send, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"60")]})
    await send({"type": "http.response.body", "body": text.encode()})
