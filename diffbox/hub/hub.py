"""The model hub wired together once: tokens, the two clients, search cache, library, downloads.

HF_ENDPOINT and DIFFBOX_CIVITAI_URL are read here, at start, and handed to the clients explicitly
(huggingface_hub would read HF_ENDPOINT only at import time); that is how tests reach local fakes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Mapping

from diffbox.config import SHA256
from diffbox.hub import HubError
from diffbox.hub.catalog import Catalog
from diffbox.hub.catalog_store import CatalogStore
from diffbox.hub.civitai import Civitai
from diffbox.hub.downloads import DownloadManager
from diffbox.hub.huggingface import HuggingFace
from diffbox.hub.library import Library, normalise_source
from diffbox.hub.safety import UnsafeFile, safe_filename
from diffbox.hub.search import ModelSearch, SearchPage
from diffbox.hub.tokens import TokenStore
from diffbox.hub.transfer import Backoff
from diffbox.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ModelHub:
    library: Library
    tokens: TokenStore
    hf: HuggingFace
    civitai: Civitai
    finder: ModelSearch
    catalog: Catalog
    downloads: DownloadManager
    _stop: threading.Event

    @classmethod
    def start(cls, settings: Settings, env: Mapping[str, str] | None = None, *, backoff: Backoff = Backoff(),
              workers: int = 2, catalog_hours: float = 0.0, catalog_intervals: dict[str, float] | None = None
              ) -> "ModelHub":
        """`catalog_hours`: refresh the model catalog at start when it is older than this, then as often (0: only
        when asked). `catalog_intervals`: seconds between listing requests per hub where it advertises no limit."""
        env = os.environ if env is None else env
        tokens = TokenStore(settings.home / "tokens.json", {"hf": settings.hf_token, "civitai": settings.civitai_token})
        hf = HuggingFace(env.get("HF_ENDPOINT"), lambda: tokens.get("hf"))
        civitai = Civitai(env.get("DIFFBOX_CIVITAI_URL"), lambda: tokens.get("civitai"))
        library = Library(settings.models_dir, settings.db_dir / "library.json")
        library.refresh()
        downloads = DownloadManager(settings.models_dir, settings.db_dir / "downloads.json", library, hf, civitai,
                                    workers=workers, backoff=backoff)
        downloads.start()
        store = CatalogStore(settings.db_dir / "catalog.sqlite3")
        _import_search_cache(settings.db_dir / "search.json", store)
        catalog = Catalog(store, hf, civitai, intervals=catalog_intervals, backoff=backoff)
        hub = cls(library, tokens, hf, civitai, ModelSearch(store, hf, civitai), catalog, downloads,
                  threading.Event())
        catalog.run_daily(catalog_hours)
        threading.Thread(target=hub._hash_in_background, name="library-hash", daemon=True).start()
        return hub

    def _hash_in_background(self) -> None:
        """sha256 of models copied in by hand (a 20 GB file takes a while to read), now and then again."""
        while not self._stop.is_set():
            try:
                self.library.hash_missing(self._stop)
            except OSError as exc:  # a file or the home vanished under us (shutdown, a user deleting)
                log.debug("background hashing stopped: %s", exc)
            self._stop.wait(30)

    def search(self, query: str = "", source: str = "all", kind: str = "any", base_model: str = "any",
               sort: str = "downloads", nsfw: bool = False, cursors: dict | None = None, limit: int = 30,
               live: bool = True) -> SearchPage:
        page = self.finder.search(query, source, kind, base_model, sort, nsfw, cursors, limit, live)
        local = {(m.source, m.model_id) for m in self.library.models()}
        pins = {(p["source"], p["model_id"]) for p in self.library.pins()}
        for result in page.results:
            key = (result["source"], result["id"])
            result["in_library"], result["pinned"] = key in local, key in pins
        return page

    def pin(self, source: str, model_id: str, pinned: bool, revision: str = "") -> dict:
        try:
            source = normalise_source(source)
        except ValueError as exc:
            raise HubError(str(exc)) from None
        model_id = str(model_id).strip()
        seen = self.finder.seen(source, model_id) or {}
        if revision and revision != seen.get("version_id"):  # another version than search saw: its files unknown
            seen = {"version_id": revision}
        files = [f for f in (_fetchable(f) for f in seen.get("files") or []) if f]
        try:
            return self.library.pin(source, model_id, bool(pinned), revision=seen.get("version_id", ""), files=files)
        except (KeyError, ValueError) as exc:
            raise HubError(str(exc).strip("'\"")) from None

    def close(self) -> None:
        self._stop.set()
        self.downloads.close()
        self.catalog.close()
        self.library.close()


def _import_search_cache(path, store: CatalogStore) -> None:
    """Results the search cache of earlier versions (db/search.json) held move into the catalog, once."""
    if not path.exists():
        return
    try:
        seen = json.loads(path.read_text(encoding="utf-8")).get("results", {})
        results = [r for r in seen.values() if isinstance(r, dict) and r.get("source") in ("hf", "civitai")
                   and r.get("id")]
        oldest = min((float(r.get("seen_at") or 0) for r in results), default=0.0)  # confirmed no later than that
        store.add([{k: v for k, v in r.items() if k != "seen_at"} for r in results], now=oldest)
        path.unlink()
        log.info("moved %d search result(s) seen before into the model catalog", len(results))
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
        log.warning("the old search cache %s was not imported (%s); it is left as it was", path, exc)


def _fetchable(file: dict) -> dict | None:
    """A file a search result lists, as a pin records it, or None when diffbox would never fetch it (a pickle,
    an archive, a name that is a path): a pin lists what a config export asks another pod to download."""
    name = file.get("name")
    try:
        if not isinstance(name, str) or safe_filename(name) != name:
            return None
    except UnsafeFile:
        return None
    size, sha = file.get("size"), str(file.get("sha256") or "").lower()
    return {"name": name, "size": size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else 0,
            "sha256": sha if SHA256.fullmatch(sha) else ""}
