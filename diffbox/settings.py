"""The storage contract and the command line, resolved once into a frozen Settings.

Precedence for every setting: command-line flag, then environment variable, then default.
Home folder: --home / DIFFBOX_HOME, else /workspace/diffbox when /workspace is writable
(the RunPod volume, which survives pod restarts), else ./data.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import urlsplit

from diffbox import __version__

RUNPOD_VOLUME = Path("/workspace")
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 100.0  # far above any start image or mask; a config file is capped much lower
DEFAULT_UPLOAD_TTL_HOURS = 24.0
DEFAULT_CATALOG_HOURS = 24.0
DEFAULT_PORTS = {"http": 80, "https": 443}


class SettingsError(ValueError):
    """A flag or environment variable the app cannot start with; the message names it."""


@dataclass(frozen=True)
class Settings:
    home: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    share: bool = False
    auth: tuple[str, str] | None = field(default=None, repr=False)
    config: str | None = None
    demo: bool = False
    hf_token: str | None = field(default=None, repr=False)
    civitai_token: str | None = field(default=None, repr=False)
    no_auth: bool = False
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    upload_ttl_hours: float = DEFAULT_UPLOAD_TTL_HOURS
    catalog_hours: float = 0.0  # built in code (tests, scripts): no background walk; the command line: 24
    allowed_origins: tuple[str, ...] = ()  # scheme://host:port, besides the app's own address

    @property
    def loopback_only(self) -> bool:
        """Bound to this machine only (127.0.0.0/8, ::1, localhost): nobody else can reach it."""
        return is_loopback(self.host)

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def outputs_dir(self) -> Path:
        return self.home / "outputs"

    @property
    def db_dir(self) -> Path:
        return self.home / "db"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "diffbox.log"

    @property
    def demo_models_dir(self) -> Path:
        return self.models_dir / "demo"

    @property
    def private_dirs(self) -> tuple[Path, Path]:
        """The job history (prompts, output names) and the log: only the owner may read them, whatever the
        umask. tokens.json is written 0600 on its own; models/ and outputs/ keep the umask's modes."""
        return self.db_dir, self.log_file.parent

    def secrets(self) -> list[str]:
        """Values that must never reach a log line or an export."""
        values = [self.hf_token, self.civitai_token, self.auth[1] if self.auth else None]
        return [v for v in values if v]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py",
        description=f"diffbox {__version__}: Wan 2.2 I2V, SVI 2.0 Pro and Qwen-Image-Edit in one Gradio app.",
    )
    parser.add_argument("--host", help="interface to listen on (env DIFFBOX_HOST; default 127.0.0.1, "
                        "use 0.0.0.0 on a pod)")
    # --port is read as text so that a bad value gets the same one-line message as DIFFBOX_PORT.
    parser.add_argument("--port", help=f"port (env DIFFBOX_PORT; default {DEFAULT_PORT})")
    parser.add_argument("--share", action="store_true", default=None,
                        help="ask Gradio for a public share link (env DIFFBOX_SHARE=1)")
    parser.add_argument("--auth", metavar="USER:PASS", help="require a login (env DIFFBOX_AUTH); on a host other "
                        "than this machine's loopback a password is generated when none is given")
    parser.add_argument("--no-auth", action="store_true", default=None,
                        help="serve a non-loopback host or share link with no login at all (env DIFFBOX_NO_AUTH=1); "
                             "anyone who reaches the port can run jobs, see outputs and download with your tokens")
    parser.add_argument("--max-upload-mb", metavar="MB", help=f"largest file a browser or client may upload "
                        f"(env DIFFBOX_MAX_UPLOAD_MB; default {DEFAULT_MAX_UPLOAD_MB:g})")
    parser.add_argument("--upload-ttl-hours", metavar="HOURS", help="uploads and Gradio's copies of outputs are "
                        f"deleted after this long (env DIFFBOX_UPLOAD_TTL_HOURS; default {DEFAULT_UPLOAD_TTL_HOURS:g})")
    parser.add_argument("--catalog-hours", metavar="HOURS", help="refresh the local model catalog at start when it is "
                        "older than this, then as often; 0: only when asked (env DIFFBOX_CATALOG_HOURS; default "
                        f"{DEFAULT_CATALOG_HOURS:g})")
    parser.add_argument("--home", metavar="DIR", help="where models, outputs, db and cache live (env DIFFBOX_HOME)")
    parser.add_argument("--config", metavar="FILE", help="import a diffbox config at start (env DIFFBOX_CONFIG)")
    parser.add_argument("--demo", action="store_true", default=None,
                        help="build and use tiny random-weight models; runs on a CPU with no downloads "
                             "(env DIFFBOX_DEMO=1)")
    return parser


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def parse_auth(value: str | None, source: str) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SettingsError(f"{source} must look like USER:PASS (both parts non-empty)")
    return user, password


def parse_auth_value(value: str | None, source: str) -> tuple[str, str] | None:
    """parse_auth, plus a RunPod template whose secret was never created: its `{{ RUNPOD_SECRET_… }}`
    would otherwise become a password anyone can read in the template."""
    if value and ("{{" in value or "RUNPOD_SECRET_" in value):
        raise SettingsError(f"{source} holds an unfilled RunPod secret reference: create the secret (the "
                            f"RunPod console's Secrets page), or leave {source} empty to get a generated password")
    return parse_auth(value, source)


def parse_port(value: int | str | None, source: str) -> int:
    if value is None or value == "":
        return DEFAULT_PORT
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{source} must be a port number, got {value!r}") from None
    if not 1 <= port <= 65535:
        raise SettingsError(f"{source} must be between 1 and 65535, got {port}")
    return port


def parse_positive(value: str | None, source: str, default: float) -> float:
    if value is None or str(value).strip() == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{source} must be a number, got {value!r}") from None
    if not 0 < number < float("inf"):
        raise SettingsError(f"{source} must be more than 0, got {value!r}")
    return number


def parse_hours(value: str | None, source: str, default: float) -> float:
    """A number of hours where 0 means never."""
    if value is not None and str(value).strip() in ("0", "0.0"):
        return 0.0
    return parse_positive(value, source, default)


def parse_origin(text: str) -> tuple[str, str, int] | None:
    """`scheme://host[:port]` (http or https, nothing after the port) → (scheme, host, port); else None."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def parse_origins(value: str | None, source: str) -> tuple[str, ...]:
    """A comma- or space-separated list of origins, each normalised to scheme://host:port."""
    origins = []
    for item in re.split(r"[\s,]+", (value or "").strip()):
        if not item:
            continue
        origin = parse_origin(item)
        if origin is None:
            raise SettingsError(f"{source} must list origins like https://host or http://host:8080 (no path), "
                                f"got {item[:80]!r}")
        scheme, host, port = origin
        origins.append(f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}")
    return tuple(origins)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; everything else (0.0.0.0, ::, a LAN address, a name) is reachable
    from elsewhere, or may be."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def resolve_home(explicit: str | None, env: Mapping[str, str]) -> tuple[Path, str]:
    """Returns the home folder and which rule chose it (for error messages and the log)."""
    if explicit:
        return Path(explicit).expanduser().absolute(), "--home"
    if env.get("DIFFBOX_HOME"):
        return Path(env["DIFFBOX_HOME"]).expanduser().absolute(), "DIFFBOX_HOME"
    if _is_writable_dir(RUNPOD_VOLUME):
        return RUNPOD_VOLUME / "diffbox", "/workspace volume"
    return Path("data").absolute(), "default ./data"


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Parses flags (argparse exits with a usage message on unknown flags) and reads the environment."""
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    home, _ = resolve_home(args.home, env)
    auth_source = "--auth" if args.auth else "DIFFBOX_AUTH"
    port_source = "--port" if args.port is not None else "DIFFBOX_PORT"
    upload_source = "--max-upload-mb" if args.max_upload_mb is not None else "DIFFBOX_MAX_UPLOAD_MB"
    ttl_source = "--upload-ttl-hours" if args.upload_ttl_hours is not None else "DIFFBOX_UPLOAD_TTL_HOURS"
    auth = parse_auth_value(args.auth or env.get("DIFFBOX_AUTH"), auth_source)
    no_auth = bool(args.no_auth) or _truthy(env.get("DIFFBOX_NO_AUTH"))
    if auth and no_auth:
        raise SettingsError(f"{auth_source} and --no-auth/DIFFBOX_NO_AUTH contradict each other: keep one")
    return Settings(
        home=home,
        host=args.host or env.get("DIFFBOX_HOST") or "127.0.0.1",
        port=parse_port(args.port if args.port is not None else env.get("DIFFBOX_PORT"), port_source),
        share=bool(args.share) or _truthy(env.get("DIFFBOX_SHARE")),
        auth=auth,
        config=args.config or env.get("DIFFBOX_CONFIG") or None,
        demo=bool(args.demo) or _truthy(env.get("DIFFBOX_DEMO")),
        hf_token=env.get("HF_TOKEN") or None,
        civitai_token=env.get("CIVITAI_TOKEN") or None,
        no_auth=no_auth,
        max_upload_mb=parse_positive(args.max_upload_mb if args.max_upload_mb is not None
                                     else env.get("DIFFBOX_MAX_UPLOAD_MB"), upload_source, DEFAULT_MAX_UPLOAD_MB),
        upload_ttl_hours=parse_positive(args.upload_ttl_hours if args.upload_ttl_hours is not None
                                        else env.get("DIFFBOX_UPLOAD_TTL_HOURS"), ttl_source,
                                        DEFAULT_UPLOAD_TTL_HOURS),
        catalog_hours=parse_hours(args.catalog_hours if args.catalog_hours is not None
                                  else env.get("DIFFBOX_CATALOG_HOURS"),
                                  "--catalog-hours" if args.catalog_hours is not None else "DIFFBOX_CATALOG_HOURS",
                                  DEFAULT_CATALOG_HOURS),
        allowed_origins=parse_origins(env.get("DIFFBOX_ALLOWED_ORIGINS"), "DIFFBOX_ALLOWED_ORIGINS"),
    )


def prepare_home(settings: Settings, env: dict[str, str] | None = None) -> None:
    """Creates the folder layout and proves it writable; points the HF cache into it.

    HF_HOME is set only when the user has not set it, so an existing cache on a pod is kept.
    It must happen before huggingface_hub is imported, which reads it at import time.
    """
    env = os.environ if env is None else env
    for folder in (settings.home, settings.models_dir, settings.outputs_dir, settings.db_dir,
                   settings.cache_dir, settings.log_file.parent):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError(f"home folder {settings.home} is not usable (DIFFBOX_HOME / --home): "
                                f"cannot create {folder}: {exc.strerror or exc}") from None
    keep_private(settings)
    try:
        with tempfile.NamedTemporaryFile(dir=settings.home, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise SettingsError(f"home folder {settings.home} is not writable (DIFFBOX_HOME / --home): "
                            f"{exc.strerror or exc}") from None
    env.setdefault("HF_HOME", str(settings.cache_dir / "huggingface"))


def keep_private(settings: Settings) -> None:
    """db/ and logs/ 0700, the files in them 0600 (a home made by an earlier version, or under umask 022,
    has them world-readable). Run again once the app has created its database and log. A file system
    that cannot change modes (some network mounts) is left as it is: the app still starts."""
    for folder in settings.private_dirs:
        try:
            folder.chmod(0o700)
            for entry in folder.iterdir():
                if entry.is_file() and not entry.is_symlink():
                    entry.chmod(0o600)
        except OSError:
            continue
