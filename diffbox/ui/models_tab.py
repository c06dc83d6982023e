"""The Models tab: search Hugging Face and Civitai, follow downloads, manage the library and tokens.

Everything here is a thin layer over services.hub (the same calls the /models_search, /download,
/downloads, /library and /pin endpoints make); events are private and unqueued, so the tab stays
responsive while a generation holds the GPU queue.
"""

from __future__ import annotations

import html
import time
from urllib.parse import urlsplit

import gradio as gr

from diffbox import base_models
from diffbox.engine.memory import format_bytes
from diffbox.hub import HubError
from diffbox.hub.library import UNKNOWN
from diffbox.hub.search import for_browser
from diffbox.hub.library import KINDS as KIND_NAMES
from diffbox.logs import redact
from diffbox.markup import code, md, plain
from diffbox.services import Services
from diffbox.ui.variants_panel import build_variants_panel

PRIVATE = {"api_visibility": "private", "queue": False}
SOURCES = [("Both", "all"), ("Hugging Face", "hf"), ("Civitai", "civitai")]
KINDS = [("Any kind", "any"), ("LoRA", "lora"), ("Checkpoint", "checkpoint"), ("Diffusers folder", "diffusers"),
         ("VAE", "vae"), ("ControlNet", "controlnet"), ("Upscaler", "upscaler")]
BASES = [("Any base model", "any"), *((b.label, b.key) for b in base_models.BASES)]
SORTS = [("Most downloaded", "downloads"), ("Most liked", "likes"), ("Newest", "newest"), ("Trending", "trending")]
DOWNLOAD_COLUMNS = ["id", "file", "source", "state", "progress", "size", "speed", "ETA", "error"]
LIBRARY_COLUMNS = ["name", "kind", "base model", "source", "id", "revision", "size", "pinned", "sha256"]
CSS = """
.hub-card img {width: 100%; height: 150px; object-fit: cover; border-radius: 6px}
.hub-card .hub-noimg {height: 150px; display: flex; align-items: center; justify-content: center;
  background: var(--block-background-fill); border-radius: 6px; opacity: .6}
.hub-card .hub-meta {font-size: .85em; opacity: .85}
"""


def human_eta(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds >= 60 else f"{seconds:.0f} s"


def card_html(result: dict) -> str:
    """One result card. Everything from the APIs is escaped: names and URLs come from strangers."""
    e = lambda value: html.escape(str(value or ""))  # noqa: E731
    thumb = result.get("thumbnail") or ""
    image = (f'<img src="{e(thumb)}" alt="" loading="lazy" referrerpolicy="no-referrer">'
             if urlsplit(thumb).scheme in ("http", "https") else '<div class="hub-noimg">no preview</div>')
    link = result.get("url") if urlsplit(result.get("url") or "").scheme in ("http", "https") else ""
    title = f'<a href="{e(link)}" target="_blank" rel="noopener">{e(result["name"])}</a>' if link else e(result["name"])
    badges = " · ".join(x for x in [
        "Hugging Face" if result["source"] == "hf" else "Civitai", e(result.get("kind")),
        # One vocabulary on every card (the filter's labels); a base diffbox has no key for keeps the hub's words.
        e(getattr(base_models.BY_KEY.get(result.get("base_model")), "label", "") or result.get("base_model_label")
          or result.get("base_model")),
        "in library" if result.get("in_library") else "", "pinned" if result.get("pinned") else "",
        catalogued_badge(result)] if x)
    about = str(result.get("description") or "")
    about = f'<div class="hub-meta">{e(about[:160])}{"…" if len(about) > 160 else ""}</div>' if about else ""
    return (f'<div class="hub-card">{image}<div><b>{title}</b></div>'
            f'<div class="hub-meta">by {e(result.get("author"))} · ⬇ {int(result.get("downloads") or 0):,} · '
            f'♥ {int(result.get("rating") or 0):,} · {format_bytes(result.get("size") or None)}</div>'
            f'<div class="hub-meta">{badges}</div>{about}</div>')


def ago(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    seconds = max(0.0, time.time() - timestamp)
    if seconds >= 3 * 86400:
        return f"{int(seconds // 86400)} days ago"
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


CATALOGUED = ("from the local catalog (answers at once, offline too); the hub's own answer, when it comes, "
              "replaces it")
STALE = "no catalog refresh has confirmed it for 36 hours: the hub was unreachable, or the model is gone"


def catalogued_badge(result: dict) -> str:
    """Where a result came from: the hub just now (no badge), or the catalog (and whether that copy is stale)."""
    if not result.get("cached"):
        return ""
    if result.get("stale"):
        return (f'<span title="{html.escape(STALE)}">catalogued · stale, last confirmed '
                f'{ago(result.get("catalogued_at"))}</span>')
    return f'<span title="{html.escape(CATALOGUED)}">catalogued</span>'


def catalog_line(progress: dict) -> str:
    """The catalog's state in one line: its size and age, and how far a refresh under way has got."""
    line = f"**Model catalog:** {progress['models']:,} models · last complete refresh {ago(progress['completed_at'])}"
    if progress["running"]:
        parts = []
        for source, stats in progress["sources"].items():
            part = (f"{'Hugging Face' if source == 'hf' else 'Civitai'} {stats['scopes_done']}/{stats['scopes']} "
                    f"listings, {stats['models']:,} models")
            if stats.get("waiting_until"):
                part += (f", waiting {max(0, int(stats['waiting_until'] - time.time()))} s for "
                         f"{stats.get('waiting_for') or 'its rate limit'}")
            parts.append(part)
        return f"{line} · **refreshing now:** " + "; ".join(parts)
    report = progress.get("last_report")
    unfinished = [f"{'Hugging Face' if source == 'hf' else 'Civitai'} {stats['state']} at "
                  f"{stats['scopes_done']}/{stats['scopes']} listings"
                  for source, stats in (report or {}).get("sources", {}).items() if stats["state"] != "done"]
    if unfinished:
        line += " · last refresh " + ", ".join(unfinished)
    if report and report["errors"]:
        shown = "; ".join(md(e) for e in report["errors"][:2])
        more = f" (and {len(report['errors']) - 2} more in the log)" if len(report["errors"]) > 2 else ""
        return (f"{line} · last refresh: {report['added']:,} added, {report['updated']:,} updated, "
                f"{len(report['errors'])} problem(s): {shown}{more}")
    if report:
        return f"{line} · last refresh: {report['added']:,} added, {report['updated']:,} updated"
    return line


def download_rows(services: Services) -> list[list]:
    rows = []
    for d in services.hub.downloads.list():
        total = d["bytes_total"] or 0
        progress = f"{100 * d['bytes_done'] / total:.0f}%" if total else "—"
        rows.append([d["id"], d["file"], d["source"], d["state"], progress,
                     f"{format_bytes(d['bytes_done'])} / {format_bytes(total or None)}",
                     f"{format_bytes(d['speed'])}/s" if d["speed"] else "—", human_eta(d["eta_s"]),
                     redact(d["error"] or "")])
    return rows


def library_rows(services: Services) -> list[list]:
    return [[m.name, m.kind, m.base_model, m.source, m.model_id if m.source != "local" else "", m.revision,
             format_bytes(m.size), "yes" if m.pinned else "", (m.sha256 or "")[:12]]
            for m in services.hub.library.models()]


def _fail(title: str, exc: Exception):
    # A hub's answer may be quoted in it.
    raise gr.Error(plain(redact(str(exc))), title=title, print_exception=False) from None


def build_models_tab(services: Services) -> None:
    gr.HTML(f"<style>{CSS}</style>", visible=True)
    with gr.Tabs():
        with gr.Tab("Search", id="models-search"):
            _search_panel(services)
        with gr.Tab("Downloads", id="models-downloads"):
            _downloads_panel(services)
        with gr.Tab("Library", id="models-library"):
            _library_panel(services)
        with gr.Tab("Tokens", id="models-tokens"):
            _tokens_panel(services)


def _search_panel(services: Services) -> None:
    hub = services.hub
    catalog = gr.Markdown(lambda: catalog_line(hub.catalog.progress()), elem_id="hub-catalog-status")
    with gr.Row():  # its own row: beside the line, on a phone, the buttons squeezed it to a letter per line
        refresh = gr.Button("Refresh catalog", size="sm", min_width=140, elem_id="hub-catalog-refresh")
        halt = gr.Button("Stop refresh", size="sm", min_width=140, elem_id="hub-catalog-stop")
    ticker = gr.Timer(2.0)
    with gr.Row():
        query = gr.Textbox(label="Search", placeholder="e.g. camera motion, lightx2v, anime style",
                           scale=4, elem_id="hub-query")
        search = gr.Button("Search", variant="primary", scale=1, elem_id="hub-search")
    with gr.Row():
        source = gr.Radio(SOURCES, value="all", label="Source", elem_id="hub-source")
        kind = gr.Dropdown(KINDS, value="any", label="Kind", elem_id="hub-kind")
        base = gr.Dropdown(BASES, value="any", label="Base model", elem_id="hub-base")
        sort = gr.Dropdown(SORTS, value="downloads", label="Sort", elem_id="hub-sort")
        nsfw = gr.Checkbox(value=False, label="Show NSFW", elem_id="hub-nsfw")
    status = gr.Markdown(elem_id="hub-search-status")
    results = gr.State([])
    cursors = gr.State({})
    more = gr.Button("Load more", visible=False, elem_id="hub-more", render=False)  # drawn below the cards

    def merged(previous, page_results):
        seen = {(r["source"], r["id"]) for r in previous or []}
        return list(previous or []) + [r for r in page_results if (r["source"], r["id"]) not in seen]

    def run(q, s, k, b, o, n, previous=None, previous_cursors=None):
        """The catalog's answer at once, then the same topped up by the hubs."""
        for live in (False, True):
            try:
                page = hub.search(q, s, k, b, o, n, cursors=previous_cursors or None, live=live)
            except HubError as exc:
                if live:
                    _fail("Search failed", exc)
                continue
            found = merged(previous, page.results)
            notes = " ".join(page.notes)
            line = f"{len(found)} result(s)" + ("." if live else " from the catalog; asking the hubs…") + " " + (
                md(notes) if notes else "")
            yield found, page.cursors, line.strip(), gr.update(visible=any(page.cursors.values()))

    def run_more(q, s, k, b, o, n, previous, previous_cursors):
        yield from run(q, s, k, b, o, n, previous, previous_cursors)

    def start_refresh():
        hub.catalog.start_refresh()
        return catalog_line(hub.catalog.progress())

    inputs = [query, source, kind, base, sort, nsfw]
    outputs = [results, cursors, status, more]
    # Queued (not queue=False) so the user sees a spinner: an unreachable hub takes a while to give up.
    searching = {"api_visibility": "private", "concurrency_limit": None, "show_progress_on": [status]}
    search.click(run, inputs, outputs, api_name="ui_hub_search", **searching)
    query.submit(run, inputs, outputs, api_name="ui_hub_search_enter", **searching)
    more.click(run_more, [*inputs, results, cursors], outputs, api_name="ui_hub_more", **searching)

    def stop_refresh():
        if hub.catalog.stop_refresh():
            gr.Info("Stopping the catalog refresh after the page in flight; the next refresh resumes there.")
        return catalog_line(hub.catalog.progress())

    refresh.click(start_refresh, None, catalog, api_name="ui_hub_catalog_refresh", **PRIVATE)
    halt.click(stop_refresh, None, catalog, api_name="ui_hub_catalog_stop", api_visibility="private",
               concurrency_limit=None)
    ticker.tick(lambda: catalog_line(hub.catalog.progress()), None, catalog, api_name="ui_hub_catalog_tick",
                show_progress="hidden", **PRIVATE)

    @gr.render(inputs=results)
    def cards(found):
        if not found:
            gr.Markdown("Search to see models: the catalog answers at once, even offline, and the hubs top it up.")
            return
        with gr.Row(elem_id="hub-cards"):
            for index, result in enumerate(found):
                with gr.Column(variant="panel", min_width=260, key=f"card-{result['source']}-{result['id']}"):
                    gr.HTML(card_html(result))
                    names = [f["name"] for f in result.get("files") or [] if f.get("name")]
                    if result["source"] == "civitai" and len(names) > 1:
                        file_input = gr.Dropdown(names, value=names[0], label="File", show_label=False)
                    elif result["source"] == "hf":
                        file_input = gr.Textbox(label="File in the repo", placeholder="file in the repo (empty: whole "
                                                "repo or its only weights file)", show_label=False, container=False)
                    else:
                        file_input = gr.Textbox(value="", label="File", visible=False)
                    with gr.Row():
                        fetch = gr.Button("Download", size="sm", variant="primary")
                        pin = gr.Button("Unpin" if result.get("pinned") else "Pin", size="sm")
                        renew = gr.Button("Refresh", size="sm", elem_classes=["hub-card-refresh"])

                    def start(file, result=result):
                        model_id = result["id"]
                        if result["source"] == "civitai" and result.get("version_id"):
                            model_id = f"{result['id']}@{result['version_id']}"  # the version shown on the card
                        try:
                            download_id = hub.downloads.request(result["source"], model_id, file or "")
                        except HubError as exc:
                            _fail("Cannot download", exc)
                        gr.Info(f"Queued {plain(result['name'])}: follow it in Models → Downloads")
                        return f"Queued **{md(result['name'])}** (download {code(download_id)})."

                    def toggle(found_now, index=index):
                        result = dict(found_now[index])
                        try:
                            hub.pin(result["source"], result["id"], not result.get("pinned"))
                        except HubError as exc:
                            _fail("Cannot pin", exc)
                        result["pinned"] = not result.get("pinned")
                        return [*found_now[:index], result, *found_now[index + 1:]]

                    def renew_one(found_now, index=index):
                        result = dict(found_now[index])
                        try:
                            fresh = hub.catalog.refresh_model(result["source"], result["id"])
                        except HubError as exc:
                            _fail("Cannot refresh", exc)
                        fresh = {**for_browser(fresh), "cached": False, "in_library": result.get("in_library"),
                                 "pinned": result.get("pinned")}
                        gr.Info(f"{plain(fresh['name'])}: refreshed from "
                                f"{'Hugging Face' if fresh['source'] == 'hf' else 'Civitai'}")
                        return [*found_now[:index], fresh, *found_now[index + 1:]]

                    fetch.click(start, file_input, status, api_visibility="private", queue=False)
                    pin.click(toggle, results, results, api_visibility="private", queue=False)
                    # Queued: its toast (done, or why not) must reach the page, and unqueued events' do not.
                    renew.click(renew_one, results, results, api_visibility="private", concurrency_limit=None,
                                show_progress="minimal")

    more.render()


def _downloads_panel(services: Services) -> None:
    hub = services.hub
    table = gr.Dataframe(headers=DOWNLOAD_COLUMNS, value=lambda: download_rows(services), interactive=False,
                         wrap=True, elem_id="hub-downloads")
    with gr.Row():
        selected = gr.Textbox(label="Selected download", interactive=False, scale=2, elem_id="hub-selected")
        cancel = gr.Button("Cancel", variant="stop", scale=1, elem_id="hub-cancel")
        retry = gr.Button("Retry", scale=1, elem_id="hub-retry")
    with gr.Accordion("Download by id", open=False):
        with gr.Row():
            source = gr.Radio([("Hugging Face", "hf"), ("Civitai", "civitai")], value="hf", label="Source")
            model_id = gr.Textbox(label="Model id", placeholder="Wan-AI/Wan2.2-I2V-A14B-Diffusers  or  827184@2514310")
            file = gr.Textbox(label="File (optional)", placeholder="empty: whole diffusers repo / primary file")
            start = gr.Button("Download", variant="primary")
    message = gr.Markdown()
    timer = gr.Timer(1.0)

    def pick(event: gr.SelectData):
        row = event.row_value or []
        return row[0] if row else ""

    def act(action, download_id):
        if not download_id:
            raise gr.Error("Select a download in the table first.", title="Nothing selected", print_exception=False)
        try:
            record = getattr(hub.downloads, action)(download_id)
        except HubError as exc:
            _fail(f"Cannot {action}", exc)
        return download_rows(services), f"{code(download_id)} is now **{record['state']}**."

    def request(src, mid, f):
        try:
            download_id = hub.downloads.request(src, mid, f)
        except HubError as exc:
            _fail("Cannot download", exc)
        return download_rows(services), f"Queued download {code(download_id)}."

    timer.tick(lambda: download_rows(services), None, table, api_name="ui_hub_downloads_tick",
               show_progress="hidden", **PRIVATE)
    table.select(pick, None, selected, api_name="ui_hub_downloads_pick", **PRIVATE)
    cancel.click(lambda i: act("cancel", i), selected, [table, message], api_name="ui_hub_cancel", **PRIVATE)
    retry.click(lambda i: act("retry", i), selected, [table, message], api_name="ui_hub_retry", **PRIVATE)
    start.click(request, [source, model_id, file], [table, message], api_name="ui_hub_download", **PRIVATE)


def _library_panel(services: Services) -> None:
    hub = services.hub
    gr.Markdown("Every model under `models/` in your diffbox home, including files you copied in by hand. "
                "A model's kind and base model decide which dropdown lists it; correct them when diffbox "
                "guessed wrong (a LoRA in an unusual format, a base model it could not tell).")
    table = gr.Dataframe(headers=LIBRARY_COLUMNS, value=lambda: library_rows(services), interactive=False,
                         wrap=True, elem_id="hub-library")
    with gr.Row():
        name = gr.Textbox(label="Selected model", interactive=False, scale=2, elem_id="hub-library-selected")
        kind = gr.Dropdown([k for k in KIND_NAMES if k != "diffusers"], label="Kind", scale=1)
        base = gr.Dropdown([*base_models.BASE_MODELS, UNKNOWN], label="Base model", scale=1)
        set_base = gr.Button("Save kind and base model", scale=1)
        pin = gr.Button("Pin / unpin", scale=1)
        rescan = gr.Button("Rescan models/", scale=1, elem_id="hub-rescan")
    message = gr.Markdown()

    def pick(event: gr.SelectData):
        row = event.row_value or []
        return (row[0], row[1], row[2]) if row else ("", None, None)

    def classify(model_name, new_kind, base_model):
        model = hub.library.get(model_name) if model_name else None
        if model is None:
            raise gr.Error("Select a model in the table first.", title="Nothing selected", print_exception=False)
        try:
            if new_kind and new_kind != model.kind:
                hub.library.set_kind(model_name, new_kind)
            if base_model and base_model != model.base_model:
                hub.library.set_base_model(model_name, base_model)
        except (KeyError, ValueError) as exc:
            _fail("Cannot change the model", exc)
        model = hub.library.get(model_name)
        return library_rows(services), f"{code(model_name)} is a **{model.kind}** for **{md(model.base_model)}**."

    def toggle_pin(model_name):
        model = hub.library.get(model_name) if model_name else None
        if model is None:
            raise gr.Error("Select a model in the table first.", title="Nothing selected", print_exception=False)
        hub.pin(model.source, model.model_id, not model.pinned)
        return library_rows(services), f"{code(model_name)} {'unpinned' if model.pinned else 'pinned'}."

    def refresh():
        hub.library.refresh()
        return library_rows(services), "Rescanned."

    table.select(pick, None, [name, kind, base], api_name="ui_hub_library_pick", **PRIVATE)
    set_base.click(classify, [name, kind, base], [table, message], api_name="ui_hub_classify", **PRIVATE)
    pin.click(toggle_pin, name, [table, message], api_name="ui_hub_library_pin", **PRIVATE)
    rescan.click(refresh, None, [table, message], api_name="ui_hub_rescan", **PRIVATE)
    build_variants_panel(services)


def _tokens_panel(services: Services) -> None:
    tokens = services.hub.tokens
    gr.Markdown("Tokens are saved in your diffbox home (`tokens.json`, readable only by you) and never shown "
                "again or written to logs. A saved token takes precedence over `HF_TOKEN` / `CIVITAI_TOKEN`.")
    for source, label, hint in (("hf", "Hugging Face", "hf_…  (huggingface.co → Settings → Access Tokens)"),
                                ("civitai", "Civitai", "API key (civitai.com → Account settings → API keys)")):
        status = gr.Markdown(lambda source=source, label=label: f"**{label} token:** {tokens.status(source)}",
                             elem_id=f"hub-token-{source}-status")
        with gr.Row():
            box = gr.Textbox(type="password", label=f"{label} token", placeholder=hint, scale=3,
                             elem_id=f"hub-token-{source}")
            save = gr.Button("Save", scale=1)
            clear = gr.Button("Clear", scale=1)

        def store(value, source=source, label=label):
            try:
                tokens.set(source, value)
            except ValueError as exc:
                _fail("Token not saved", exc)
            return "", f"**{label} token:** {tokens.status(source)}"

        save.click(store, box, [box, status], api_name=f"ui_hub_token_{source}", **PRIVATE)
        box.submit(store, box, [box, status], api_name=f"ui_hub_token_{source}_enter", **PRIVATE)
        clear.click(lambda store=store: store(""), None, [box, status],
                    api_name=f"ui_hub_token_{source}_clear", **PRIVATE)
