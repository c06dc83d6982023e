"""The storage contract and the command line, resolved once into a frozen Settings.

Precedence for every setting: command-line flag, then environment variable, then default.
Home folder: --home / DIFFBOX_HOME, else /workspace/diffbox when /workspace is writable
(the RunPod volume, which survives pod restarts), else ./data.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from diffbox import __version__

RUNPOD_VOLUME = Path("/workspace")
DEFAULT_PORT = 7860


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
    parser.add_argument("--port", type=int, help=f"port (env DIFFBOX_PORT; default {DEFAULT_PORT})")
    parser.add_argument("--share", action="store_true", default=None,
                        help="ask Gradio for a public share link (env DIFFBOX_SHARE=1)")
    parser.add_argument("--auth", metavar="USER:PASS", help="require a login (env DIFFBOX_AUTH)")
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
    return Settings(
        home=home,
        host=args.host or env.get("DIFFBOX_HOST") or "127.0.0.1",
        port=parse_port(args.port if args.port is not None else env.get("DIFFBOX_PORT"), port_source),
        share=bool(args.share) or _truthy(env.get("DIFFBOX_SHARE")),
        auth=parse_auth(args.auth or env.get("DIFFBOX_AUTH"), auth_source),
        config=args.config or env.get("DIFFBOX_CONFIG") or None,
        demo=bool(args.demo) or _truthy(env.get("DIFFBOX_DEMO")),
        hf_token=env.get("HF_TOKEN") or None,
        civitai_token=env.get("CIVITAI_TOKEN") or None,
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
    try:
        with tempfile.NamedTemporaryFile(dir=settings.home, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise SettingsError(f"home folder {settings.home} is not writable (DIFFBOX_HOME / --home): "
                            f"{exc.strerror or exc}") from None
    env.setdefault("HF_HOME", str(settings.cache_dir / "huggingface"))

