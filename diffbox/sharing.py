"""Who may open the app: a public share link always needs a login.

With --share and no --auth/DIFFBOX_AUTH, a password is generated for this run and printed once
to the terminal (stdout), never to the log file, and registered for redaction.
"""

from __future__ import annotations

import secrets

from diffbox.logs import register_secrets
from diffbox.settings import Settings

GENERATED_USER = "diffbox"


def resolve_auth(settings: Settings) -> tuple[tuple[str, str] | None, str | None]:
    """(the auth to launch with, the generated password or None)."""
    if settings.auth or not settings.share:
        return settings.auth, None
    password = secrets.token_urlsafe(12)
    register_secrets([password])
    return (GENERATED_USER, password), password


def login_note(password: str) -> str:
    return (f"diffbox: a share link is public, so a login is required: user {GENERATED_USER!r}, password "
            f"{password!r} (generated for this run; set DIFFBOX_AUTH=user:pass to choose your own)")


def offline_note(local_url: str) -> str:
    return (f"diffbox: could not create a Gradio share link (offline, or the share server is unreachable); "
            f"still serving locally on {local_url}")
