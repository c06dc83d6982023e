"""The History tab: every job with its state, parameters and outputs, and a search over them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from diffbox.services import Services
from diffbox.ui.chain import ACCEPTS, main_output, output_kind, takers

COLUMNS = ["job", "workflow", "status", "created", "waited", "run time", "seed", "outputs", "error"]
# Wide enough that a job id (22 characters) and "qwen_edit" never break mid-word in the table's monospace font.
COLUMN_WIDTHS = ["235px", "105px", "95px", "170px", "75px", "80px", "110px", "75px", "260px"]


def history_rows(services: Services, query: str = "") -> list[list]:
    """The table's rows: the newest 200 jobs, or those matching `query` (JobHistory.search; ValueError when
    it cannot be parsed)."""
    rows = []
    for job in services.history.search(query or "", limit=200):
        timings = job.get("timings") or {}
        run_s, wait_s = timings.get("run_s"), timings.get("wait_s")
        rows.append([
            job["id"], job["workflow"], job["status"],
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["created_at"])),
            f"{wait_s:.1f}s" if wait_s else "",
            f"{run_s:.1f}s" if run_s else "",
            (job.get("params") or {}).get("seed", ""),
            len(job.get("outputs") or []),
            job.get("error") or "",
        ])
    return rows


@dataclass
class HistoryTab:
    """What the app wires to the workflow tabs: Use these settings, and a "Send to" button per workflow
    that can start from a job's main output (diffbox.ui.chain says which), with that output's path."""
    use_settings: gr.Button
    selected: gr.State
    send: dict            # workflow name -> its button
    main_output: gr.State


def send_buttons() -> dict:
    """One button per workflow that takes an image or a video; each is shown only for outputs it takes."""
    workflows = {w.name: w for kind in ACCEPTS for w in takers(kind)}
    return {name: gr.Button(f"Send to {w.title}", size="sm", visible=False, elem_id=f"history-send-{name}")
            for name, w in workflows.items()}


def build_history_tab(services: Services) -> HistoryTab:
    with gr.Row():
        query = gr.Textbox(label="Search",
                           placeholder='fox snow · fox -rain · lora:fox · seed:42 · "wan2.2-i2v" · fox OR cat',
                           info="Words of the prompt, negative prompt, LoRA names, model, seed, status or workflow; "
                                "Enter searches, an empty box lists every job.",
                           scale=1, elem_id="history-search")
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=120, elem_id="history-refresh")
        auto = gr.Checkbox(value=True, label="Refresh every 5 s", scale=0, min_width=200, elem_id="history-auto")
    # A callable value is re-read on every page load (a plain list would show the rows of app start until
    # the timer's first tick); fixed column widths let a phone scroll the table instead of squeezing it.
    table = gr.Dataframe(headers=COLUMNS, value=lambda: history_rows(services), interactive=False, wrap=True,
                         column_widths=COLUMN_WIDTHS, elem_id="history-table")
    with gr.Row(equal_height=False):
        with gr.Column():
            preview = gr.Video(label="Output", visible=False, height=360, elem_id="history-video")
            pictures = gr.Gallery(label="Output images", visible=False, height=360, columns=2, format="png",
                                  interactive=False, elem_id="history-images")
            files = gr.File(label="Output files", file_count="multiple", interactive=False,
                            elem_id="history-files")
        with gr.Column():
            use_settings = gr.Button("Use these settings", elem_id="history-use-settings", interactive=False)
            gr.Markdown("Refills the job's form. An SVI job also brings back its anchor image; image-to-video and "
                        "Qwen jobs do not keep their input pictures.", elem_id="history-use-settings-note")
            with gr.Row():
                send = send_buttons()
            details = gr.JSON(label="Job record", elem_id="history-details")
    selected = gr.State(None)
    chosen_output = gr.State(None)
    timer = gr.Timer(5.0)

    def search_rows(text: str):
        try:
            return history_rows(services, text)
        except ValueError as exc:
            # A warning, not gr.Error: an error would lay its badge over the table and hide the last results.
            gr.Warning(str(exc), title="Invalid input")
            return gr.skip()

    def tick_rows(text: str):
        try:
            return history_rows(services, text)
        except ValueError:
            return gr.skip()  # the search box already said why when it was submitted

    def show(event: gr.SelectData):
        row = event.row_value if event.row_value else None
        record = services.history.get(row[0]) if row else None
        outputs = [p for p in (record or {}).get("outputs") or [] if Path(p).is_file()]
        main = main_output(outputs)
        sendable = {w.name for w in takers(output_kind(main))} if main else set()
        buttons = [gr.Button(visible=name in sendable) for name in send]
        if not record:
            return (gr.update(visible=False, value=None), gr.update(visible=False, value=None), None, None, None,
                    gr.Button(interactive=False), None, *buttons)
        video = next((p for p in outputs if output_kind(p) == "video"), None)
        images = [p for p in outputs if output_kind(p) == "image"]
        return (gr.update(visible=video is not None, value=video), gr.update(visible=bool(images), value=images),
                outputs or None, record, record, gr.Button(interactive=bool(record.get("params"))), main, *buttons)

    def toggle_timer(on: bool):
        return gr.Timer(active=on)

    private = {"api_visibility": "private", "queue": False}
    # Queued, so a refused query's toast reaches the page (Gradio drops it from unqueued events); no limit,
    # so a search never waits behind another.
    searched = {"api_visibility": "private", "queue": True, "concurrency_limit": None}
    query.submit(search_rows, query, table, api_name="ui_history_search", **searched)
    refresh.click(search_rows, query, table, api_name="ui_history_refresh", **searched)
    timer.tick(tick_rows, query, table, api_name="ui_history_tick", show_progress="hidden", **private)
    auto.change(toggle_timer, auto, timer, api_name="ui_history_auto", **private)
    table.select(show, None, [preview, pictures, files, details, selected, use_settings, chosen_output,
                              *send.values()], api_name="ui_history_show", **private)
    return HistoryTab(use_settings, selected, send, chosen_output)
