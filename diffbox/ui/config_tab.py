"""The Config tab: download this pod's setup as one JSON file, or upload one and see what it changes first."""

from __future__ import annotations

import gradio as gr
from gradio.context import Context

from diffbox import portable
from diffbox.config import ConfigDoc, ConfigError
from diffbox.logs import redact
from diffbox.markup import code, md
from diffbox.services import Services
from diffbox.ui.config_api import export_once, read_upload
from diffbox.ui.handover import retire
from diffbox.ui.uploads import UploadGuard

TOKEN_WARNING = ("⚠️ The file will hold your Hugging Face and Civitai tokens **in plain text**. "
                 "Anyone with the file can use them: keep it private, and never share or commit it.")


def _download_lines(services: Services, ids: list[str]) -> str:
    if not ids or services.downloads is None:
        return ""
    lines = []
    for download_id in ids:
        try:
            d = services.downloads.get(download_id)
        except Exception:  # noqa: BLE001 - a download cleared meanwhile
            continue
        total = d["bytes_total"] or 0
        share = f"{100 * d['bytes_done'] / total:.0f}%" if total else ""
        lines.append(f"- {code(d['title'])}: {d['state']} {share}"
                     + (f" — {md(d['error'])}" if d["error"] else ""))
    return "**Downloads from this import**\n" + "\n".join(lines)


def build_config_tab(services: Services) -> gr.Tab:
    """Call it inside the app's gr.Tabs, after the other tabs (its start-tab choice lists them)."""
    tabs = Context.block if isinstance(Context.block, gr.Tabs) else None
    tab_ids = [t.id for t in (tabs.children if tabs else []) if isinstance(t, gr.Tab) and isinstance(t.id, str)]
    with gr.Tab("Config", id="config") as tab:
        gr.Markdown("Everything you set up here — your defaults, presets, prompt snippets, pinned models "
                    "and UI preferences — in one JSON file. Import it on a fresh pod and it all comes back; the "
                    "pinned models download on their own. Importing the same file twice changes nothing.")
        with gr.Row(equal_height=False):
            with gr.Column():
                gr.Markdown("### Export")
                include_tokens = gr.Checkbox(False, label="Include tokens", elem_id="config-include-tokens")
                warning = gr.Markdown(TOKEN_WARNING, visible=False, elem_id="config-token-warning")
                # Enabled once it holds a file: opening the tab writes one (see `first_export` below).
                download = gr.DownloadButton("Download config", variant="primary", interactive=False,
                                             elem_id="config-download")
            with gr.Column():
                gr.Markdown("### Import")
                upload = gr.UploadButton("Upload config", file_types=[".json"], file_count="single",
                                         type="filepath", elem_id="config-upload")
                preview = gr.Markdown(elem_id="config-preview")
                apply_button = gr.Button("Apply this config", variant="primary", interactive=False,
                                         elem_id="config-apply")
                progress = gr.Markdown(elem_id="config-downloads")
        start_tab = gr.Dropdown([*tab_ids, "config"], label="Open this tab when the page loads",
                                value=portable.read_preferences(services.settings.db_dir)["ui"].get("start_tab"),
                                visible=bool(tabs), elem_id="config-start-tab")
        uploaded = gr.State(None)
        download_ids = gr.State([])
        timer = gr.Timer(2.0, active=False)

    guard = UploadGuard(services.settings.outputs_dir)

    def export(include, superseded=None):
        retire(superseded)  # the file the button offered until now (maybe with tokens) is not needed
        return gr.DownloadButton(value=export_once(services, bool(include)), interactive=True)

    def first_export():
        """Page loads write no export (each is a file that waits to be downloaded), unless the page opens on
        this tab: a click on the tab is what writes the button's file. Gradio's DownloadButton cannot make its
        file on the click that downloads it (with no file it downloads nothing)."""
        start = portable.read_preferences(services.settings.db_dir)["ui"].get("start_tab")
        return export(False) if tabs is None or start == "config" else gr.skip()

    def toggle(include, superseded):
        return gr.Markdown(visible=bool(include)), export(include, superseded)

    def on_upload(path):
        try:
            report = portable.import_bytes(services, read_upload(guard, path), dry_run=True)
        except ConfigError as exc:
            reasons = str(exc).removeprefix("config refused, nothing was applied: ")
            return (f"**Refused — nothing will be applied.**\n\n{md(redact(reasons))}", gr.Button(interactive=False),
                    None)
        return portable.summary(report), gr.Button(interactive=report["changes"] > 0), path

    def forget_upload():
        """On each click of Upload, before the file arrives: Gradio refuses a file of another type before
        on_upload runs, and the last file's preview and Apply must not stay as if they were this one's."""
        return "", gr.Button(interactive=False), None

    def on_apply(path):
        if not path:
            raise gr.Error("upload a config first", title="Nothing to apply", print_exception=False)
        try:
            report = portable.import_bytes(services, read_upload(guard, path))
        except ConfigError as exc:
            raise gr.Error(redact(str(exc)), title="Config refused", print_exception=False) from None
        ids = report["download_ids"]
        return (portable.summary(report) + "\n\nReload the page to see new defaults in the forms.",
                gr.Button(interactive=False), ids, _download_lines(services, ids), gr.Timer(active=bool(ids)))

    def poll(ids):
        text = _download_lines(services, ids)
        running = services.downloads is not None and any(
            services.downloads.get(i)["state"] in portable.ACTIVE_DOWNLOADS for i in ids)
        return text, gr.Timer(active=running)

    def save_start_tab(tab_id):
        if tab_id:
            portable.apply(services, ConfigDoc(ui={"start_tab": tab_id}))

    def open_start_tab():
        tab_id = portable.read_preferences(services.settings.db_dir)["ui"].get("start_tab")
        return gr.Tabs(selected=tab_id) if tab_id in [*tab_ids, "config"] else gr.skip()

    private = {"api_visibility": "private", "queue": False}
    start_tab.input(save_start_tab, start_tab, None, api_name="ui_config_start_tab", **private)
    if tabs is not None and Context.root_block is not None:
        Context.root_block.load(open_start_tab, None, tabs, api_name="ui_open_start_tab", **private)
    if Context.root_block is not None:  # the button's first file (a callable value would be a public /lambda_N)
        Context.root_block.load(first_export, None, download, api_name="ui_config_export_first", **private)
    include_tokens.change(toggle, [include_tokens, download], [warning, download], api_name="ui_config_tokens",
                          **private)
    # The file is rebuilt whenever the tab is opened, so it always holds the current state, and after
    # each click: a file is handed over once, then deleted (diffbox.ui.handover). The click does not
    # retire the file the browser is fetching at that moment: its download deletes it.
    tab.select(export, [include_tokens, download], download, api_name="ui_config_export", **private)
    download.click(export, include_tokens, download, api_name="ui_config_export_again", **private)
    upload.click(forget_upload, None, [preview, apply_button, uploaded], api_name="ui_config_forget", **private)
    upload.upload(on_upload, upload, [preview, apply_button, uploaded], api_name="ui_config_preview", **private)
    apply_button.click(on_apply, uploaded, [preview, apply_button, download_ids, progress, timer],
                       api_name="ui_config_apply", **private)
    timer.tick(poll, download_ids, [progress, timer], api_name="ui_config_poll", **private)
    return tab
