"""The model hub's scriptable API (gradio_client), named as in README's API section.

    /models_search(query, source, kind, base_model, sort, nsfw, live) → list of result dicts
    /catalog_refresh() → the refresh report; /catalog_stop(); /catalog_status() → size, age, progress
    /catalog_refresh_model(source, model_id) → the model's fresh catalog entry
    /download(source, model_id, file) → download id
    /downloads() → list of {id, file, bytes_done, bytes_total, state, error, ...}
    /library() → local models
    /variants() → every variant (base + single-file parts), with `ready` and what is `missing`
    /pin(source, model_id, pinned) → the pin
    /cancel_download(download_id), /retry_download(download_id) → the download

None of these touch the GPU, so they never wait behind a generation job.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import gradio as gr

from diffbox.base_models import BASE_MODELS
from diffbox.config import HF_ID, HF_REVISION, NUMBER_ID
from diffbox.hub import HubError
from diffbox.hub.library import normalise_source
from diffbox.logs import redact
from diffbox.services import Services

log = logging.getLogger(__name__)

LIGHT = {"concurrency_limit": None}
ID_RULES = {"hf": "must be owner/name, a Hugging Face repo id, optionally @ a commit or branch",
            "civitai": "must be a Civitai model id, optionally @ a version id (numbers only)"}


def pin_reference(source: str, model_id: str) -> tuple[str, str, str]:
    """(source, id, version) for /pin, by the id rules a config import applies to its models, so that a
    pinned model always exports into a config that imports. The refusal does not quote the id back."""
    try:
        source = normalise_source(source)
    except ValueError as exc:
        raise HubError(str(exc)) from None
    text = str(model_id).strip()
    if source == "local":  # a library name: the library refuses one it does not hold
        return source, text, ""
    model, at, version = text.partition("@")  # model@version, as /download takes it
    model_rule, version_rule = (HF_ID, HF_REVISION) if source == "hf" else (NUMBER_ID, NUMBER_ID)
    fits = (model_rule.fullmatch(model) and ".." not in model
            and (version_rule.fullmatch(version) if at else True))
    if not fits:
        raise HubError(f"model_id {ID_RULES[source]}")
    return source, model, version


@contextmanager
def explained(title: str):
    """HubError (a bad id, a missing token, a refused file) → a gr.Error whose text is the sentence."""
    try:
        yield
    except HubError as exc:
        log.info("request refused: %s", exc)  # one line; the caller has the sentence
        raise gr.Error(redact(str(exc)), title=title, print_exception=False) from None


def register_hub_api(services: Services) -> None:
    hub = services.hub

    def models_search(query: str = "", source: str = "all", kind: str = "any", base_model: str = "any",
                      sort: str = "downloads", nsfw: bool = False, live: bool = True) -> list[dict]:
        """Search the model catalog, topped up by Hugging Face and Civitai. source: all | hf | civitai. kind: any |
        lora | checkpoint | diffusers | vae | controlnet | upscaler. base_model: any | {bases}.
        sort: downloads | likes | newest | updated | trending. Catalogued results carry cached: true (stale: true
        when no refresh confirmed them for 36 h); live: false answers from the catalog alone, at once."""
        with explained("Search failed"):
            return hub.search(query, source, kind, base_model, sort, bool(nsfw), live=bool(live)).results

    models_search.__doc__ = models_search.__doc__.replace("{bases}", " | ".join(BASE_MODELS))

    def download(source: str, model_id: str, file: str = "") -> str:
        """Queue a download; returns its id. source: hf | civitai. model_id: `owner/name[@revision]` on Hugging
        Face, `model[@version]` on Civitai. file: a file in the repo / version ("" = the whole diffusers repo, or
        Civitai's primary file)."""
        with explained("Cannot download"):
            return hub.downloads.request(source, model_id, file or "")

    def downloads() -> list[dict]:
        """Every download, newest first: id, file, bytes_done, bytes_total, state, error, speed, eta_s, name."""
        return hub.downloads.list()

    def library() -> list[dict]:
        """Every model under models/: name, kind, base_model, source, model_id, revision, files, sha256, pinned."""
        return [m.to_dict() for m in hub.library.models()]

    def variants() -> list[dict]:
        """Every variant: name, base_model, base and parts ({source, id, file}), ready (every file is here: the
        model pickers offer it by its name), missing (what is not here yet: "base" or a component)."""
        return [{**v.to_dict(), "ready": v.ready, "missing": v.missing} for v in hub.library.variants()]

    def pin(source: str, model_id: str, pinned: bool = True) -> dict:
        """Pin (or unpin) a model; pinned models are what a config export lists. model_id: `owner/name[@revision]`
        on Hugging Face, `model[@version]` on Civitai (as /download takes them), or a library name with source
        local."""
        with explained("Cannot pin"):
            source, model, version = pin_reference(source, model_id)
            return hub.pin(source, model, pinned, revision=version)

    def catalog_refresh() -> dict:
        """Walk both hubs for every Wan / Qwen model now (or join the refresh under way) and return its report:
        {sources: {hf: {...}, civitai: {...}}, models, added, updated, errors}. Minutes on the real hubs."""
        return hub.catalog.refresh()

    def catalog_stop() -> bool:
        """Stop the catalog refresh under way after the page in flight (the next one resumes there); false when
        none was running."""
        return hub.catalog.stop_refresh()

    def catalog_status() -> dict:
        """The catalog's size, when it was last complete (completed_at, epoch seconds) and a refresh's progress."""
        return hub.catalog.progress()

    def catalog_refresh_model(source: str, model_id: str) -> dict:
        """Ask the hub for one model now and store it in the catalog; returns its entry. source: hf | civitai."""
        with explained("Cannot refresh"):
            source, model, _ = pin_reference(source, model_id)
            if source == "local":
                raise HubError("source must be hf or civitai")
            return hub.catalog.refresh_model(source, model)

    def cancel_download(download_id: str) -> dict:
        """Stop a download and delete its partial file."""
        with explained("Cannot cancel"):
            return hub.downloads.cancel(download_id)

    def retry_download(download_id: str) -> dict:
        """Queue a failed or cancelled download again (it resumes from its partial file)."""
        with explained("Cannot retry"):
            return hub.downloads.retry(download_id)

    for fn in (models_search, download, downloads, library, variants, pin, cancel_download, retry_download,
               catalog_refresh, catalog_stop, catalog_status, catalog_refresh_model):
        gr.api(fn, api_name=fn.__name__, **LIGHT)
