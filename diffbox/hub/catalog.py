"""The model catalog: walks Hugging Face and Civitai for every model of the supported base models, page by
page, into the local store that search answers from (offline, in milliseconds).

What is walked (`scopes()`): on Hugging Face the model tree of each base repo (`base_model:<repo>` tags: LoRAs,
fine-tunes, quantised and merged files) and the repos whose names carry a base's word (repackaged files often
have no model-tree tag); on Civitai each base model's LoRAs, checkpoints, VAEs and ControlNets, and upscalers.

How: one thread per hub, one request at a time, paced to the hub's limit — Hugging Face advertises it
(RateLimit-Policy, e.g. 500 requests per 300 s), Civitai publishes none (one request a second). A 429 waits
what the hub asks (Retry-After / the window's reset), other network trouble backs off 1, 2, 4… s; a hub that
stays away ends its part of the refresh with the cursor kept, and the next refresh resumes there. Each page is
stored with its successor's cursor in one transaction. Unchanged models are not rewritten: a second refresh
adds and updates only what changed. The refresh runs at start when the catalog is older than a day (the
`--catalog-hours` setting), then daily, and on demand (/catalog_refresh, the Models tab).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from diffbox.base_models import BASES
from diffbox.hub import HubError, Interrupted, RateLimited, TransientError
from diffbox.hub.catalog_store import CatalogStore
from diffbox.hub.civitai import KIND_TYPES, parse_ref
from diffbox.hub.transfer import Backoff
from diffbox.store import describe_storage_error

log = logging.getLogger(__name__)

HUB_NAMES = {"hf": "Hugging Face", "civitai": "Civitai"}
DEFAULT_INTERVALS = {"hf": 0.65, "civitai": 1.0}  # seconds between requests when the hub advertises no limit
RATE_LIMIT_TRIES = 8
MAX_REPORTED = 20  # skipped-item reasons kept in a report (all are logged)
MAX_PAGES = 1000   # per listing, first walk: beyond any real one (Civitai's largest here is a few hundred pages)
GROWTH_PAGES = 50  # a listing may grow by this many pages (and double) since its last complete walk
MAX_WAIT_S = 300.0  # a 429 asking for longer stops that hub's part (the next refresh resumes): no years-long waits
PRUNE_AFTER_S = 30 * 86400  # a model no walk or search has listed for a month is dropped
CHECK_EVERY_S = 600.0      # how often the schedule looks whether the catalog is due
OFFLINE_RETRY_S = 3600.0   # after a refresh a hub did not answer: not every 10 minutes on an offline pod


@dataclass(frozen=True)
class Scope:
    source: str
    key: str                               # stable: a walk's resume point is stored under it
    params: tuple[tuple[str, str], ...]


def scopes(source: str | None = None) -> list[Scope]:
    found: list[Scope] = []
    for repo in dict.fromkeys(r for b in BASES for r in b.hf_tree):
        found.append(Scope("hf", f"hf:tree:{repo}", (("filter", f"base_model:{repo}"), ("sort", "createdAt"))))
    for word in dict.fromkeys(w for b in BASES for w in b.hf_words):
        found.append(Scope("hf", f"hf:name:{word}", (("search", word), ("sort", "createdAt"))))
    types = tuple(("types", t) for kind in ("lora", "checkpoint", "vae", "controlnet") for t in KIND_TYPES[kind])
    for labels in dict.fromkeys(b.civitai for b in BASES):  # Qwen-Image and -Edit share Civitai's "Qwen"
        found.append(Scope("civitai", f"civitai:base:{'|'.join(labels)}",
                           (*(("baseModels", label) for label in labels), *types, ("sort", "Newest"))))
    found.append(Scope("civitai", "civitai:upscalers",
                       (*(("types", t) for t in KIND_TYPES["upscaler"]), ("sort", "Newest"))))
    return [s for s in found if source in (None, s.source)]


class Pace:
    """At most one request per `interval` seconds; a hub's advertised limit replaces the default."""

    def __init__(self, interval: float, halt: threading.Event, stats: dict):
        self.default = self.interval = interval
        self.halt = halt
        self.stats = stats
        self.next_at = 0.0
        self.waited = 0.0

    def wait(self, seconds: float | None = None, why: str = "its rate limit") -> None:
        now = time.monotonic()
        until = max(self.next_at, now + (seconds or 0.0))
        if until > now:
            if until - now > 2:  # worth showing in the status line
                self.stats["waiting_until"], self.stats["waiting_for"] = time.time() + (until - now), why
            stopped = self.halt.wait(until - now)
            self.waited += time.monotonic() - now
            self.stats["waiting_until"] = self.stats["waiting_for"] = None
            if stopped:
                raise Interrupted("stopped")
        self.next_at = time.monotonic() + self.interval

    def learn(self, interval: float | None, wait: float | None, hub: str) -> None:
        """The hub's advertised pace (seconds per request) and a wait it asks for (its window is used up).
        Either beyond MAX_WAIT_S stops this hub's part of the refresh, as a long 429 does."""
        for seconds, what in ((interval, "a request every"), (wait, "a wait of")):
            if seconds and seconds > MAX_WAIT_S:
                raise TransientError(f"{hub} advertises a rate limit of {what} {duration(seconds)} (at most "
                                     f"{duration(MAX_WAIT_S)} is waited)")
        self.interval = interval * 1.05 if interval else self.default
        if wait:
            self.next_at = max(self.next_at, time.monotonic() + wait)


def duration(seconds: float) -> str:
    """3 s, 5 min, 9 h 43 min, 1,157 days: a wait as a person reads it."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 3 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400:,} days"


class Catalog:
    def __init__(self, store: CatalogStore, hf, civitai, *, intervals: dict[str, float] | None = None,
                 backoff: Backoff = Backoff(), rate_limit_tries: int = RATE_LIMIT_TRIES):
        self.store = store
        self.clients = {"hf": hf, "civitai": civitai}
        self.intervals = {**DEFAULT_INTERVALS, **(intervals or {})}
        self.backoff = backoff
        self.rate_limit_tries = rate_limit_tries
        self._lock = threading.Lock()
        self._future: Future | None = None
        self._progress: dict = {}
        self._stop = threading.Event()   # the app is closing
        self._halt = threading.Event()   # the refresh under way is to stop (the app closing, or asked to)
        self.last_report: dict | None = None

    # -- refresh -----------------------------------------------------------------------------------

    def start_refresh(self, fresh_within_s: float = 0.0) -> Future:
        """Starts a refresh in the background (or joins the one running); the future's result is its report.
        Listings walked to their end less than `fresh_within_s` ago are left as they are (the daily schedule
        finishing what an outage interrupted does not walk the other hub again)."""
        with self._lock:
            if self._future is not None and not self._future.done():
                return self._future
            future: Future = Future()
            self._future = future
            self._progress = {"started_at": time.time(), "sources": {}}
            self._halt = threading.Event()
        threading.Thread(target=self._run, args=(future, fresh_within_s), name="catalog-refresh", daemon=True).start()
        return future

    def refresh(self, timeout: float | None = None) -> dict:
        return self.start_refresh().result(timeout)

    def stop_refresh(self) -> bool:
        """Stops the refresh under way after the page in flight (what is stored stays; the next one resumes).
        False when none was running."""
        with self._lock:
            running = self._future is not None and not self._future.done()
            self._halt.set()
        return running

    def _run(self, future: Future, fresh_within_s: float) -> None:
        started = time.time()
        try:
            threads = [threading.Thread(target=self._walk_source, args=(source, fresh_within_s),
                                        name=f"catalog-{source}", daemon=True) for source in self.clients]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            sources = {s: dict(self._progress["sources"][s]) for s in self.clients}
            report = {"sources": sources, "models": self.store.count(),
                      "added": sum(s["added"] for s in sources.values()),
                      "updated": sum(s["updated"] for s in sources.values()),
                      "errors": [e for s in sources.values() for e in s["errors"]],
                      "started_at": started, "seconds": round(time.time() - started, 2)}
            log.info("model catalog refreshed in %.1f s: %d models, %d added, %d updated, %d error(s)",
                     report["seconds"], report["models"], report["added"], report["updated"], len(report["errors"]))
            self.last_report = report
            future.set_result(report)
        except BaseException as exc:  # noqa: BLE001 - the waiting caller gets it
            log.exception("the catalog refresh failed")
            future.set_exception(exc)

    def _walk_source(self, source: str, fresh_within_s: float = 0.0) -> None:
        todo = scopes(source)
        stats = {"state": "running", "scopes": len(todo), "scopes_done": 0, "pages": 0, "models": 0, "added": 0,
                 "updated": 0, "pruned": 0, "skipped": 0, "rate_limited": 0, "retries": 0, "waited_s": 0.0,
                 "waiting_until": None, "waiting_for": None, "errors": []}
        self._progress["sources"][source] = stats
        try:
            self._walk_scopes(source, todo, stats, fresh_within_s)
        except Exception as exc:  # noqa: BLE001 - a full disk, a broken store: the report says so, the app goes on
            stats["state"] = "failed"
            stats["errors"].append(f"{HUB_NAMES[source]}: the catalog could not be stored "
                                   f"({describe_storage_error(exc, self.store.path.parent)}); it keeps what it had")
            log.warning("catalog: %s", stats["errors"][-1])

    def _walk_scopes(self, source: str, todo: list[Scope], stats: dict, fresh_within_s: float) -> None:
        client, name = self.clients[source], HUB_NAMES[source]
        pace = Pace(self.intervals[source], self._halt, stats)
        started = time.time()
        for scope in todo:
            previous = self.store.walk(scope.key)
            if previous and previous["finished_at"] and time.time() - previous["finished_at"] < fresh_within_s:
                stats["scopes_done"] += 1
                continue
            # A hub may not list more than its listing ever had, and then some: a broken or hostile one that
            # pages forever stops there instead of filling the disk for hours.
            last_complete = previous and previous["last_pages"]
            page_cap = min(MAX_PAGES, 2 * last_complete + GROWTH_PAGES) if last_complete else MAX_PAGES
            walk = self.store.start_walk(scope.key, source)
            cursor, pages = walk["cursor"], walk["pages"]  # pages stored so far (a resumed walk's included)
            if cursor:
                log.info("catalog: resuming %s at page %d", scope.key, pages + 1)
            try:
                while True:
                    page = self._fetch(client, scope, cursor, pace, stats)
                    for reason in page.skipped:
                        log.warning("catalog %s: %s", scope.key, reason)
                        stats["skipped"] += 1
                        if len(stats["errors"]) < MAX_REPORTED:
                            stats["errors"].append(f"{name}: {reason}")
                    added, updated = self.store.add(page.results, scope=scope.key, cursor=page.next_cursor,
                                                    finished=page.next_cursor is None)
                    pages += 1
                    stats["pages"] += 1
                    stats["models"] += len(page.results)
                    stats["added"] += added
                    stats["updated"] += updated
                    if page.next_cursor is None:
                        stats["scopes_done"] += 1
                        break
                    if page.next_cursor == cursor or pages >= page_cap:
                        raise HubError(f"the listing does not end (page {pages} points to itself or past "
                                       f"{page_cap} pages); left it there")
                    cursor = page.next_cursor
            except Interrupted:
                stats["state"] = "interrupted" if self._stop.is_set() else "stopped by you"
                break
            except TransientError as exc:  # the hub stays away: stop here, the next refresh resumes
                self.store.walk_failed(scope.key, str(exc))
                stats["errors"].append(f"{exc}; stopped at page {pages + 1} "
                                       f"of {scope.key}, the next refresh resumes there")
                log.warning("catalog: %s", stats["errors"][-1])
                stats["state"] = "stopped"
                break
            except HubError as exc:  # this listing is refused (a bad filter, a token): the others still run
                self.store.walk_failed(scope.key, str(exc), ended=True)
                stats["errors"].append(f"{name}: {scope.key}: {exc}")
                log.warning("catalog: %s", stats["errors"][-1])
            finally:
                stats["waited_s"] = round(pace.waited, 2)
        if stats["state"] == "running":
            stats["state"] = "done" if stats["scopes_done"] == stats["scopes"] else "partial"
        if stats["state"] == "done":  # every listing walked: what none listed for a month is gone from the hub
            stats["pruned"] = self.store.prune(source, PRUNE_AFTER_S, now=started)

    def _fetch(self, client, scope: Scope, cursor: str | None, pace: Pace, stats: dict):
        failures = limited = 0
        delay, why = None, "its rate limit"
        while True:
            pace.wait(delay, why)
            try:
                page = client.catalog_page(list(scope.params), cursor)
            except RateLimited as exc:
                limited += 1
                stats["rate_limited"] += 1
                if limited > self.rate_limit_tries:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else self.backoff.delay(limited)
                why = "its rate limit"
                if delay > MAX_WAIT_S:
                    raise TransientError(f"{HUB_NAMES[scope.source]} answered HTTP 429 and asked to wait "
                                         f"{duration(delay)} (at most {duration(MAX_WAIT_S)} is waited)"
                                         ) from None
                log.info("catalog: %s; waiting %.1f s", exc, delay)
                continue
            except TransientError as exc:
                failures += 1
                stats["retries"] += 1
                if failures >= self.backoff.tries:
                    raise
                delay = self.backoff.delay(failures)
                why = "the hub to answer again"
                log.info("catalog: %s; trying again in %.1f s", exc, delay)
                continue
            pace.learn(page.interval, page.wait, HUB_NAMES[scope.source])
            return page

    # -- one model ----------------------------------------------------------------------------------

    def refresh_model(self, source: str, model_id: str) -> dict:
        """Asks the hub for one model now and stores what it says ("refresh this model" on a card)."""
        if source not in self.clients:
            raise HubError(f"source must be one of {', '.join(self.clients)}")
        model_id = parse_ref(model_id)[0] if source == "civitai" else str(model_id).strip().partition("@")[0]
        self.store.add([self.clients[source].model(model_id)])
        return self.store.get(source, model_id)

    # -- state --------------------------------------------------------------------------------------

    def completed_at(self) -> float | None:
        """When the whole catalog was last walked to its end (None: never, or a walk is unfinished)."""
        return self.store.completed_at([s.key for s in scopes()])

    def due(self, every_s: float) -> bool:
        completed = self.completed_at()
        return completed is None or time.time() - completed >= every_s

    def progress(self) -> dict:
        """For the Models tab and /catalog_status: running or not, each hub's counts, the catalog's age."""
        with self._lock:
            running = self._future is not None and not self._future.done()
            progress = {"running": running, "started_at": self._progress.get("started_at"),
                        "sources": {s: {k: v for k, v in stats.items() if k != "errors"}
                                    for s, stats in dict(self._progress.get("sources", {})).items()}}
        return {**progress, "models": self.store.count(), "completed_at": self.completed_at(),
                "last_report": self.last_report}

    def run_daily(self, every_hours: float) -> None:
        """Refreshes now if the catalog is older than `every_hours`, then whenever it gets that old."""
        if every_hours <= 0:
            return
        every_s = every_hours * 3600

        def loop() -> None:
            while not self._stop.is_set():
                pause = min(CHECK_EVERY_S, every_s)
                try:
                    if self.due(every_s):
                        report = self.start_refresh(fresh_within_s=every_s).result()
                        if any(s["state"] == "stopped" for s in report["sources"].values()):
                            pause = min(OFFLINE_RETRY_S, every_s)  # a hub away (an offline pod): try hourly
                except Exception:  # noqa: BLE001 - the schedule must outlive one bad refresh
                    log.exception("the scheduled catalog refresh failed")
                self._stop.wait(pause)

        threading.Thread(target=loop, name="catalog-daily", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._halt.set()
        future = self._future
        if future is not None:
            try:
                future.result(timeout=10)
            except Exception:  # noqa: BLE001 - closing; it was logged
                pass
        self.store.close()
