"""Structured logging to the home folder's log file and stderr, with secrets redacted.

Redaction happens on the fully formatted line (message, arguments and traceback together),
so a token cannot slip through a format argument or an exception text.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Iterable

REDACTED = "***"

_PATTERNS = [
    re.compile(r"hf_[A-Za-z0-9]{16,}"),  # Hugging Face user access tokens
    re.compile(r"(?i)(\b(?:token|api_?key|access_token|password)=)[^&\s\"'\\]+"),  # ?token=... in URLs
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)\s+)[^\s\"',]+"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)((?:hf|civitai)_?token[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
]

_known_secrets: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Exact values to scrub wherever they appear (tokens from env or the UI, the auth password)."""
    _known_secrets.update(v for v in values if v and len(v) >= 4)


def redact(text: str) -> str:
    for secret in sorted(_known_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line in the log file, so it can be grepped and parsed."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key in ("job_id", "workflow"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["traceback"] = redact(self.formatException(record.exc_info))
        # Redacted field by field: redacting the JSON text could cut through an escape sequence.
        return json.dumps(entry, ensure_ascii=False, default=str)


_HANDLER_MARK = "_diffbox_handler"


def setup_logging(log_file: Path | None, level: int = logging.INFO, secrets: Iterable[str | None] = ()) -> None:
    """Idempotent: calling again (tests build several apps) replaces our handlers, not adds more."""
    register_secrets(secrets)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = RotatingFileHandler(log_file, maxBytes=10_000_000, backupCount=3, encoding="utf-8")
        file_handler.setFormatter(JsonFormatter())
        handlers.append(file_handler)
    for handler in handlers:
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    root.setLevel(level)
    # Libraries that chat at INFO on every request would drown the job log.
    for noisy in ("httpx", "httpx2", "httpcore", "urllib3", "uvicorn.access", "gradio_client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
