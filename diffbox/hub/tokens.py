"""Hugging Face and Civitai tokens: from the environment or the UI, kept in <home>/tokens.json (0600).

A token saved in the UI wins over the environment's (it is the newer decision); clearing it
falls back to HF_TOKEN / CIVITAI_TOKEN. Every value is registered for log redaction, and the UI
only ever learns whether a token is set, never the token itself.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from diffbox.logs import register_secrets
from diffbox.store import atomic_write_bytes

log = logging.getLogger(__name__)

SOURCES = {"hf": "Hugging Face", "civitai": "Civitai"}


class TokenError(ValueError):
    pass


class TokenStore:
    def __init__(self, path: Path, env_tokens: dict[str, str | None]):
        self.path = Path(path)
        self._env = {k: v for k, v in env_tokens.items() if v}
        self._lock = threading.Lock()
        self._saved = self._read()
        register_secrets([*self._env.values(), *self._saved.values()])

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.warning("%s is unreadable; ignoring saved tokens", self.path)
            return {}
        if self.path.stat().st_mode & 0o077:
            os.chmod(self.path, 0o600)  # someone loosened it; tokens are nobody else's business
        return {k: v for k, v in data.items() if k in SOURCES and isinstance(v, str) and v}

    def get(self, source: str) -> str | None:
        with self._lock:
            return self._saved.get(source) or self._env.get(source)

    def set(self, source: str, token: str | None) -> None:
        """Saves (or, with an empty value, clears) the UI token for `source`."""
        if source not in SOURCES:
            raise TokenError(f"unknown token source {source!r}; use one of {', '.join(SOURCES)}")
        token = (token or "").strip()
        if token and (len(token) < 8 or any(c.isspace() or ord(c) < 32 for c in token)):
            raise TokenError(f"that does not look like a {SOURCES[source]} token (too short, or it contains spaces)")
        register_secrets([token])
        with self._lock:
            if token:
                self._saved[source] = token
            else:
                self._saved.pop(source, None)
            atomic_write_bytes(self.path, json.dumps(self._saved).encode("utf-8"), mode=0o600)
        log.info("%s token %s", SOURCES[source], "saved" if token else "cleared")

    def status(self, source: str) -> str:
        """'set (saved)', 'set (from environment)' or 'not set': all the UI ever shows."""
        with self._lock:
            if self._saved.get(source):
                return "set (saved)"
            return "set (from environment)" if self._env.get(source) else "not set"
