"""One search over Hugging Face and Civitai: the local catalog answers first, the hubs top it up.

The catalog (hub/catalog.py) holds every model the daily walk listed and every result a live search
returned, so a search answers in milliseconds with no network (a pod whose network hiccups, a Civitai
outage); results the hubs have not confirmed for a while are marked `stale`. With `live`, the same
query then goes to the hubs, whose answer replaces the catalogued copies and adds what the catalog
did not hold yet (and is stored in it).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from diffbox.hub import HubError, TransientError
from diffbox.hub.catalog_store import SORT_COLUMNS, CatalogStore, plain_text
from diffbox.hub.civitai import Civitai
from diffbox.hub.huggingface import SORTS, HuggingFace
from diffbox.hub.library import BASE_MODELS, KINDS, normalise_source

log = logging.getLogger(__name__)

ANY = "any"
SOURCE_NAMES = {"hf": "Hugging Face", "civitai": "Civitai"}
CATALOG = "catalog"   # the "Load more" cursor of the catalog's part: the next offset
SNIPPET = 300         # characters of a description a result carries to the browser


@dataclass
class SearchPage:
    results: list[dict]
    cursors: dict[str, str | None] = field(default_factory=dict)  # per source and the catalog, for "Load more"
    notes: list[str] = field(default_factory=list)                # offline fallbacks, per-source errors


def _normalise(source: str, kind: str, base_model: str, sort: str) -> tuple[list[str], str | None, str | None, str]:
    source = (source or "all").strip().lower()
    sources = ["hf", "civitai"] if source in ("all", "both", ANY, "") else [normalise_source(source)]
    if "local" in sources:
        raise HubError("search looks on hf or civitai; the local models are in /library")
    kind = None if (kind or ANY) == ANY else kind
    if kind is not None and kind not in KINDS:
        raise HubError(f"kind: unknown kind {str(kind)[:40]!r}; use one of {ANY}, {', '.join(KINDS)}")
    base_model = None if (base_model or ANY) == ANY else base_model
    if base_model is not None and base_model not in BASE_MODELS:
        raise HubError(f"base_model: unknown base model {str(base_model)[:40]!r}; use one of {ANY}, "
                       f"{', '.join(BASE_MODELS)}")
    sort = sort or "downloads"
    if sort not in SORTS and sort != "rating":
        raise HubError(f"sort: unknown sort {str(sort)[:40]!r}; use one of {', '.join([*SORTS, 'rating'])}")
    return sources, kind, base_model, sort


def for_browser(result: dict) -> dict:
    """A result as the Models tab holds it: the description as a short text."""
    return {**result, "description": plain_text(result.get("description"))[:SNIPPET]}


class ModelSearch:
    def __init__(self, catalog: CatalogStore, hf: HuggingFace, civitai: Civitai):
        self.catalog, self.hf, self.civitai = catalog, hf, civitai

    def search(self, query: str = "", source: str = "all", kind: str = ANY, base_model: str = ANY,
               sort: str = "downloads", nsfw: bool = False, cursors: dict[str, str | None] | None = None,
               limit: int = 30, live: bool = True) -> SearchPage:
        try:
            sources, kind_f, base_f, sort = _normalise(source, kind, base_model, sort)
        except ValueError as exc:
            raise HubError(str(exc)) from None
        query = (query or "").strip()
        page = SearchPage([])
        more = cursors is not None  # "Load more": only the parts that have another page
        offset = (cursors or {}).get(CATALOG)
        results: dict[tuple[str, str], dict] = {}
        if not more or offset:
            found, has_more = self.catalog.search(query, sources, kind_f, base_f, nsfw, sort, limit,
                                                  int(offset or 0))
            results.update({(r["source"], r["id"]): for_browser(r) for r in found})
            page.cursors[CATALOG] = str(int(offset or 0) + limit) if has_more else None
        live_sources = [s for s in sources if not more or (cursors or {}).get(s)] if live else []
        answered = False
        if live_sources:
            with ThreadPoolExecutor(max_workers=2) as pool:
                futures = {s: pool.submit(self._one, s, query, kind_f, base_f, sort, nsfw, (cursors or {}).get(s),
                                          limit) for s in live_sources}
            for name, future in futures.items():
                found, cursor, note = future.result()
                answered = answered or note is None
                page.cursors[name] = cursor
                if note:
                    page.notes.append(note)
                for result in found:  # the hub's answer is the newer copy
                    results[(result["source"], result["id"])] = for_browser(result)
        column = SORT_COLUMNS.get(sort, "downloads")
        blank = "" if column == "updated" else 0
        page.results = sorted(results.values(), key=lambda r: r.get(column) or blank, reverse=True)
        if live_sources and not answered and not page.results:
            raise HubError(" ".join(page.notes))  # nothing live, nothing catalogued: say why
        if page.notes and page.results:
            page.notes.append(f"Showing {sum(1 for r in page.results if r.get('cached'))} catalogued result(s).")
        return page

    def _one(self, source: str, query: str, kind, base_model, sort: str, nsfw: bool, cursor, limit: int):
        try:
            if source == "hf":
                results, next_cursor = self.hf.search(query, kind or ANY, base_model or ANY, sort, nsfw, limit), None
            else:
                results, next_cursor = self.civitai.search(query, kind or ANY, base_model or ANY, sort, nsfw, limit,
                                                           cursor)
        except TransientError as exc:
            log.info("search on %s failed (%s); answering from the catalog", source, exc)
            return [], None, f"{SOURCE_NAMES[source]} is unreachable ({exc})."
        except HubError as exc:
            return [], None, f"{SOURCE_NAMES[source]} search failed: {exc}"
        try:
            self.catalog.add(results)  # what a search saw is catalogued too
        except Exception as exc:  # noqa: BLE001 - a full disk must not lose the live answer
            log.warning("could not add %d search result(s) to the catalog: %s", len(results), exc)
        return [dict(r, cached=False, stale=False) for r in results], next_cursor, None

    def seen(self, source: str, model_id: str) -> dict | None:
        return self.catalog.get(source, str(model_id))
