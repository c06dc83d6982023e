"""One search over Hugging Face and Civitai, with every result kept in db/search.json.

The cache is what makes browsing work offline (a pod whose network hiccups, a Civitai outage):
the same query answers from its last results, any other query from everything seen before,
filtered locally, with a note saying so.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, zip_longest

from tinydb import Query

from diffbox.hub import HubError, TransientError
from diffbox.hub.civitai import Civitai
from diffbox.hub.huggingface import SORTS, HuggingFace
from diffbox.hub.library import BASE_MODELS, KINDS, normalise_source
from diffbox.store import open_db

log = logging.getLogger(__name__)

ANY = "any"
SOURCE_NAMES = {"hf": "Hugging Face", "civitai": "Civitai"}
MAX_QUERIES = 300
MAX_SEEN = 5000


@dataclass
class SearchPage:
    results: list[dict]
    cursors: dict[str, str | None] = field(default_factory=dict)  # per source, for "Load more"
    notes: list[str] = field(default_factory=list)                # offline fallbacks, per-source errors


def _normalise(source: str, kind: str, base_model: str, sort: str) -> tuple[list[str], str | None, str | None, str]:
    source = (source or "all").strip().lower()
    sources = ["hf", "civitai"] if source in ("all", "both", ANY, "") else [normalise_source(source)]
    if "local" in sources:
        raise HubError("search looks on hf or civitai; the local models are in /library")
    kind = None if (kind or ANY) == ANY else kind
    if kind is not None and kind not in KINDS:
        raise HubError(f"unknown kind {kind!r}; use one of {ANY}, {', '.join(KINDS)}")
    base_model = None if (base_model or ANY) == ANY else base_model
    if base_model is not None and base_model not in BASE_MODELS:
        raise HubError(f"unknown base model {base_model!r}; use one of {ANY}, {', '.join(BASE_MODELS)}")
    sort = sort or "downloads"
    if sort not in SORTS and sort != "rating":
        raise HubError(f"unknown sort {sort!r}; use one of {', '.join([*SORTS, 'rating'])}")
    return sources, kind, base_model, sort


class ModelSearch:
    def __init__(self, db_path, hf: HuggingFace, civitai: Civitai):
        self.hf, self.civitai = hf, civitai
        self._db = open_db(db_path)
        self._queries = self._db.table("queries")
        self._seen = self._db.table("results")
        self._lock = threading.RLock()

    def search(self, query: str = "", source: str = "all", kind: str = ANY, base_model: str = ANY,
               sort: str = "downloads", nsfw: bool = False, cursors: dict[str, str | None] | None = None,
               limit: int = 30) -> SearchPage:
        try:
            sources, kind_f, base_f, sort = _normalise(source, kind, base_model, sort)
        except ValueError as exc:
            raise HubError(str(exc)) from None
        if cursors:  # "Load more": only the sources that have another page
            sources = [s for s in sources if cursors.get(s)]
        query = (query or "").strip()
        page = SearchPage([])
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {s: pool.submit(self._one, s, query, kind_f, base_f, sort, nsfw, (cursors or {}).get(s), limit)
                       for s in sources}
        per_source, answered = [], False
        for name, future in futures.items():
            results, cursor, note = future.result()
            answered = answered or note is None
            per_source.append(results)
            page.cursors[name] = cursor
            if note:
                page.notes.append(note)
        page.results = [r for r in chain.from_iterable(zip_longest(*per_source)) if r is not None]
        if sources and not answered and not page.results:
            raise HubError(" ".join(page.notes))  # nothing live, nothing cached: say why
        return page

    def _one(self, source: str, query: str, kind, base_model, sort: str, nsfw: bool, cursor, limit: int):
        key = json.dumps([source, query.lower(), kind, base_model, sort, nsfw, cursor])
        try:
            if source == "hf":
                results, next_cursor = self.hf.search(query, kind or ANY, base_model or ANY, sort, nsfw, limit), None
            else:
                results, next_cursor = self.civitai.search(query, kind or ANY, base_model or ANY, sort, nsfw, limit,
                                                           cursor)
        except TransientError as exc:
            cached = self._cached(key)
            if cached is None:
                cached = self._seen_locally(source, query, kind, base_model, nsfw)
            log.info("search on %s failed (%s); answering from the cache", source, exc)
            return ([dict(r, cached=True) for r in cached], None,
                    f"{SOURCE_NAMES[source]} is unreachable ({exc}); showing {len(cached)} result(s) seen before.")
        except HubError as exc:
            return [], None, f"{SOURCE_NAMES[source]} search failed: {exc}"
        self._remember(key, results, next_cursor)
        return [dict(r, cached=False) for r in results], next_cursor, None

    # -- the cache ------------------------------------------------------------------------------

    def _remember(self, key: str, results: list[dict], cursor) -> None:
        now = time.time()
        with self._lock:
            self._queries.upsert({"key": key, "results": results, "cursor": cursor, "at": now}, Query().key == key)
            for result in results:
                self._seen.upsert({**result, "seen_at": now},
                                  (Query().source == result["source"]) & (Query().id == result["id"]))
            self._prune(self._queries, MAX_QUERIES, "at")
            self._prune(self._seen, MAX_SEEN, "seen_at")

    @staticmethod
    def _prune(table, keep: int, stamp: str) -> None:
        if len(table) > keep:
            oldest = sorted(table.all(), key=lambda r: r[stamp])[: len(table) - keep]
            table.remove(doc_ids=[r.doc_id for r in oldest])

    def _cached(self, key: str) -> list[dict] | None:
        with self._lock:
            record = self._queries.get(Query().key == key)
        return list(record["results"]) if record else None

    def _seen_locally(self, source: str, query: str, kind, base_model, nsfw: bool) -> list[dict]:
        words = query.lower().split()
        with self._lock:
            seen = [dict(r) for r in self._seen.search(Query().source == source)]
        found = [r for r in seen
                 if (kind is None or r.get("kind") == kind) and (base_model is None or r.get("base_model") == base_model)
                 and (nsfw or not r.get("nsfw"))
                 and all(w in f"{r.get('id')} {r.get('name')} {r.get('author')}".lower() for w in words)]
        for r in found:
            r.pop("seen_at", None)
        return sorted(found, key=lambda r: r.get("downloads") or 0, reverse=True)[:50]

    def seen(self, source: str, model_id: str) -> dict | None:
        with self._lock:
            return self._seen.get((Query().source == source) & (Query().id == str(model_id)))

    def close(self) -> None:
        self._db.close()
