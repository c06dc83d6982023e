"""Who may open the app: anything reachable from another machine needs a login.

That is a public share link, and any host other than this machine's loopback (0.0.0.0 on a pod sits
behind a proxy URL anyone can type). With no --auth/DIFFBOX_AUTH a password is generated for this
run, printed once to the terminal (stdout), never to the log file, and registered for redaction.
--no-auth/DIFFBOX_NO_AUTH turns the login off, with a warning that cannot be missed.
"""

from __future__ import annotations

import os
import secrets
import socket

from diffbox.logs import register_secrets
from diffbox.settings import Settings

GENERATED_USER = "diffbox"


def reachable_from_elsewhere(settings: Settings) -> bool:
    return settings.share or not settings.loopback_only


def _where(settings: Settings) -> str:
    if settings.share:
        return "a share link is public"
    return f"host {settings.host} can be reached from other machines"


def resolve_auth(settings: Settings) -> tuple[tuple[str, str] | None, str | None]:
    """(the auth to launch with, the generated password or None)."""
    if settings.auth:
        return settings.auth, None
    if settings.no_auth or not reachable_from_elsewhere(settings):
        return None, None
    password = secrets.token_urlsafe(12)
    register_secrets([password])
    return (GENERATED_USER, password), password


def login_note(settings: Settings, password: str) -> str:
    return (f"diffbox: {_where(settings)}, so a login is required: user {GENERATED_USER!r}, password "
            f"{password!r} (generated for this run; set DIFFBOX_AUTH=user:pass to choose your own)")


def login_hint(generated: bool) -> str:
    """The login page's line (Gradio's auth_message): whose login it asks for and where the password is."""
    if generated:
        return (f"User: {GENERATED_USER}. The password was generated for this run and printed once in the "
                "terminal that started diffbox (on RunPod: the pod's log).")
    return "Log in with the user and password given to diffbox with --auth or DIFFBOX_AUTH."


def no_auth_warning(settings: Settings) -> str | None:
    """The warning for --no-auth where it matters (on loopback there is nobody else to keep out)."""
    if not settings.no_auth or not reachable_from_elsewhere(settings):
        return None
    return (f"diffbox: WARNING: --no-auth: {_where(settings)} and NO LOGIN is required. Anyone who reaches "
            "it can run jobs, see every output and the history, and download with your saved tokens. "
            "Drop --no-auth (a password is then generated) or set DIFFBOX_AUTH=user:pass.")


def offline_note(local_url: str) -> str:
    return (f"diffbox: could not create a Gradio share link (offline, or the share server is unreachable); "
            f"still serving locally on {local_url}")


def open_at(settings: Settings, local_url: str) -> str:
    """Where a user can open the app. Gradio's local URL for 0.0.0.0 is http://localhost:PORT/, which only
    works on the server itself: then the pod's RunPod proxy address (RUNPOD_POD_ID is set on a pod) and
    this machine's network address come first."""
    if settings.host not in ("0.0.0.0", "::", ""):
        return local_url
    port = local_url.rstrip("/").rsplit(":", 1)[-1]
    urls = []
    if pod := os.environ.get("RUNPOD_POD_ID"):
        urls.append(f"https://{pod}-{port}.proxy.runpod.net/")
    if address := network_address():
        urls.append(f"http://{address}:{port}/")
    urls.append(f"{local_url} (on this machine)")
    return " or ".join(urls)


def network_address() -> str | None:
    """This machine's address on its default route (a UDP connect sends nothing); None offline."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.254.254.254", 1))
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address

