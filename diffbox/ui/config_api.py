"""The portable config over gradio_client, named as in README's API section.

    /config_export(include_tokens) → the config file (tokens only when asked for)
    /config_import(file) → report dict: what changed, which downloads were queued
    /config_preview(file) → the same report, without applying anything
    /presets(workflow) → the presets for a workflow (the user's first, then the shipped ones)

A refused document raises one error naming every bad field, and nothing of it is applied.
"""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
from gradio import FileData

from diffbox import portable
from diffbox.config import MAX_FILE_BYTES, ConfigError
from diffbox.logs import redact
from diffbox.services import Services
from diffbox.ui.handover import hand_over, private_folder
from diffbox.ui.uploads import RefusedFile, UploadGuard

log = logging.getLogger(__name__)

LIGHT = {"concurrency_limit": None}


def read_upload(guard: UploadGuard, file) -> bytes:
    """Bytes of an uploaded config (a FileData dict from the API, a path from the UI), size-capped."""
    try:
        path = guard.file(file, "file")
    except RefusedFile as exc:
        raise ConfigError(exc.errors) from None
    if not path:
        raise ConfigError({"file": "no file was given"})
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError({"file": f"is larger than {MAX_FILE_BYTES:,} bytes; a diffbox config is smaller"})
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError({"file": f"cannot be read ({exc.strerror or exc})"}) from None


def import_upload(services: Services, file, dry_run: bool) -> dict:
    """ConfigError → gr.Error carrying the field-by-field message (redacted: it may quote a token)."""
    try:
        return portable.import_bytes(services, read_upload(UploadGuard(services.settings.outputs_dir), file),
                                     dry_run=dry_run)
    except ConfigError as exc:
        log.info("request refused: %s", exc)
        raise gr.Error(redact(str(exc)), title="Config refused", print_exception=False) from None


def export_once(services: Services, include_tokens: bool) -> str:
    """The export's path, in a folder of its own that goes once the file has been downloaded."""
    return hand_over(portable.export_file(services, include_tokens, folder=private_folder()))


def register_config_api(services: Services) -> None:
    def config_export(include_tokens: bool = False) -> FileData:
        """The config as a JSON file: defaults, presets, pinned models, UI preferences; tokens only if asked.
        The file can be downloaded once; export again for another copy."""
        return FileData(path=export_once(services, bool(include_tokens)))

    def config_import(file: FileData) -> dict:
        """Import a config: applies defaults and presets, pins its models and queues their downloads.
        Returns the report (changes, download ids); importing the same file twice changes nothing."""
        return import_upload(services, file, dry_run=False)

    def config_preview(file: FileData) -> dict:
        """What importing this config would change (nothing is applied)."""
        return import_upload(services, file, dry_run=True)

    def presets(workflow: str = "i2v") -> list[dict]:
        """The presets of a workflow: the user's own first, then the shipped ones (shipped: true)."""
        return services.presets.list(str(workflow))

    for fn in (config_export, config_import, config_preview, presets):
        gr.api(fn, api_name=fn.__name__, **LIGHT)
