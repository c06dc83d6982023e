"""Following a job from a Gradio handler: progress into gr.Progress, errors into gr.Error, Stop into cancel.

Handlers are async so that Gradio's cancel (gradio_client's job.cancel(), a page closed) arrives
as CancelledError at our await and becomes job.cancel(); a plain sync handler would never hear
about it and its job would run on to the end. A client's cancel reaches exactly the job it names
(diffbox.ui.event_cancel); the Stop buttons go through the runner instead and stop their own job.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import AsyncIterator, Callable

import anyio.to_thread
import gradio as gr

from diffbox.engine.runner import Event, FinishedEvent, Job, ProgressEvent, QueueFull
from diffbox.logs import redact
from diffbox.markup import md
from diffbox.params import InvalidParams
from diffbox.store import CANCELLED, FAILED, WriteFailed, describe_storage_error

log = logging.getLogger(__name__)

# Every GPU event: no Gradio limit, because the job runner is the queue (engine/runner.py says why).
GPU_EVENT = {"concurrency_id": "gpu", "concurrency_limit": None}
# More than eight numbers in a row, and the parenthesis that may follow them (merged into the summary's).
LONG_NUMBER_LIST = re.compile(r"(?P<values>-?\d+(?:\.\d+)?(?:, -?\d+(?:\.\d+)?){8,})(?P<aside> \()?")
# An absolute path (not a URL's): messages show only its last part, never an internal upload folder.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~])/(?:[^\s'\"/:;,()\[\]]+/)+([^\s'\"/:;,()\[\]]+)")


def public_message(text: str) -> str:
    """A message as the user may see it: secrets redacted, folders stripped from paths."""
    return ABSOLUTE_PATH.sub(r"\1", redact(text))


async def submit_or_explain(start: Callable[[], Job]) -> Job:
    """Runs the validation/submit step in a worker thread (decoding a large image must not stall the
    server's event loop); anything the user can fix becomes one readable gr.Error.

    If the handler is cancelled meanwhile, the job the thread still submits is cancelled at once."""
    state: dict = {}
    lock = threading.Lock()

    def submit() -> Job:
        job = start()
        with lock:
            state["job"] = job
            abandoned = state.get("abandoned", False)
        if abandoned:
            job.cancel()
        return job

    try:
        return await anyio.to_thread.run_sync(submit)
    except InvalidParams as exc:
        log.info("request refused: %s", exc)
        raise gr.Error(public_message(f"Please fix: {exc}"), title="Invalid input", print_exception=False) from None
    except QueueFull as exc:
        raise gr.Error(str(exc), title="Queue full", print_exception=False) from None
    except WriteFailed as exc:
        log.warning("request refused: %s", exc)
        raise gr.Error(public_message(str(exc)), title="Cannot save", print_exception=False) from None
    except OSError as exc:  # a read-only or full home, seen while preparing the job
        log.warning("request refused: %s", exc)
        raise gr.Error(f"The job cannot start: {describe_storage_error(exc)}.", title="Cannot save",
                       print_exception=False) from None
    except UnicodeError:
        raise gr.Error("Please fix: the text holds characters that are not valid text (a lone surrogate such "
                       "as \\ud800); retype it.", title="Invalid input", print_exception=False) from None
    except BaseException:
        with lock:
            state["abandoned"] = True
            job = state.get("job")
        if job is not None:
            job.cancel()
        raise


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


def failed(finished: FinishedEvent) -> bool:
    return finished.status == FAILED


def raise_if_failed(finished: FinishedEvent) -> None:
    if failed(finished):
        raise gr.Error(public_message(finished.error or "the job failed"), title="Job failed", print_exception=False)


def status_line(finished: FinishedEvent) -> str:
    if finished.status == CANCELLED:
        return "Stopped. Nothing after the current step was computed."
    if finished.status == FAILED:
        return f"Failed: {md(public_message(finished.error or 'the job failed'))}"
    return "Done."


def not_started(refusal: gr.Error) -> str:
    """The status box for a job that was refused before it started (the toast says the same). The reason
    goes on its own line: Gradio draws its "Error" badge over the right end of the box's first line."""
    return f"Not started.\n\n{md(refusal.message)}"


def job_status(job_id: str, text: str, notes: list[str]) -> str:
    """The status box: "Job <id>: <what it is doing>", then the job's notes, each on one short line."""
    lines = [f"Job `{job_id}`: {text}" if text else f"Job `{job_id}`"]
    lines += [f"- {md(status_note(note))}" for note in notes]
    return "\n".join(lines)


def status_note(note: str) -> str:
    """A job-log note as the status box shows it: a long run of numbers (the 200 timesteps of a 200-step
    job) becomes its first and last value and a count, so Generate and Stop stay where they were; the job
    log keeps the note whole."""
    def shorten(match: re.Match) -> str:
        values = match.group("values").split(", ")
        summary = f"{values[0]} … {values[-1]} ({len(values)} in all"
        return summary + ("; " if match.group("aside") else ")")
    return LONG_NUMBER_LIST.sub(shorten, note)


def stop_running(cancel: Callable[[str], bool]) -> Callable[[str | None], None]:
    """Stop tells the runner, not Gradio: the handler then receives the cancelled job's end and shows
    "Stopped" (plus what was kept); a Gradio `cancels=` would kill it before that last update and the
    user would see a bare "Error" badge."""
    def stop(job_id: str | None) -> None:
        if job_id:
            cancel(job_id)
        else:
            gr.Info("Nothing to stop: no job from this page is running yet (one still being checked can be "
                    "stopped a moment later).")
    return stop
