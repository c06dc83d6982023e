"""Following a job from a Gradio handler: progress into gr.Progress, errors into gr.Error, Stop into cancel.

Handlers are async so that Gradio's cancel (the Stop button, or gradio_client's job.cancel())
arrives as CancelledError at our await and becomes job.cancel(); a plain sync handler would never
hear about it and its job would run on to the end.
"""

from __future__ import annotations

import logging
from typing import AsyncIterator, Callable

import gradio as gr

from diffbox.engine.runner import Event, FinishedEvent, Job, ProgressEvent
from diffbox.logs import redact
from diffbox.params import InvalidParams
from diffbox.store import CANCELLED, FAILED

log = logging.getLogger(__name__)


def submit_or_explain(start: Callable[[], Job]) -> Job:
    """Runs the validation/submit step; bad input becomes one readable gr.Error naming the fields."""
    try:
        return start()
    except InvalidParams as exc:
        log.info("request refused: %s", exc)
        raise gr.Error(redact(f"Please fix: {exc}"), title="Invalid input") from None


async def follow(job: Job, progress: gr.Progress | None = None) -> AsyncIterator[Event]:
    """Yields the job's events; if the handler is cancelled or closed, the job is told to stop."""
    try:
        async for event in job.aevents():
            if progress is not None and isinstance(event, ProgressEvent):
                progress((event.step, event.total) if event.total else None, desc=event.text)
            yield event
    finally:
        if not job.finished.is_set():
            job.cancel()


def raise_if_failed(finished: FinishedEvent) -> None:
    if finished.status == FAILED:
        raise gr.Error(redact(finished.error or "the job failed"), title="Job failed")


def status_line(finished: FinishedEvent) -> str:
    if finished.status == CANCELLED:
        return "Stopped. Nothing after the current step was computed."
    if finished.status == FAILED:
        return f"Failed: {redact(finished.error or '')}"
    return "Done."


def stop_running(cancel: Callable[[str], bool]) -> Callable[[str | None], None]:
    """Stop tells the runner, not Gradio: the handler then receives the cancelled job's end and shows
    "Stopped" (plus what was kept); a Gradio `cancels=` would kill it before that last update and the
    user would see a bare "Error" badge."""
    def stop(job_id: str | None) -> None:
        if job_id:
            cancel(job_id)
        else:
            gr.Info("Nothing is running yet: a job waiting its turn in the queue can be stopped once it starts.")
    return stop
