"""JobRunner: the GPU queue. One job at a time, first come first served, progress events, a cancel
flag checked at every step, history records.

The runner, not Gradio's queue, is where jobs wait: the GPU events take any number of requests
and every request becomes a "queued" job at once, so waiting jobs show in /health and the
history, their wait is measured, and Stop cancels them before they start. Gradio's queue alone
would not even be safe: when a user cancels, it frees the slot at once while the cancelled
thread is still on the GPU. Every job runs in its own worker thread and holds GPU_LOCK from its
first to its last GPU operation.

Cancel raises Cancelled from the pipeline's step callback instead of setting `pipe._interrupt`,
which would still run the (slow) VAE decode after Stop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

from diffbox.store import (CANCELLED, DONE, FAILED, QUEUED, RUNNING, JobHistory, WriteFailed,
                           describe_storage_error)

log = logging.getLogger(__name__)

GPU_LOCK = threading.Lock()
LOCK_POLL_S = 0.05
MAX_WAITING = 32  # each waiting job holds its decoded inputs in memory; beyond this, submits are refused


class QueueFull(Exception):
    """Too many jobs are already waiting for the GPU; the message says so in one sentence."""


class Cancelled(Exception):
    """The user pressed Stop; the job ends at the step it was on. A workflow that keeps what it had
    finished (SVI's clips, stitched) raises it again with `result` set; that becomes the job's result."""

    def __init__(self, result: "JobResult | None" = None):
        super().__init__()
        self.result = result


@dataclass(frozen=True)
class ProgressEvent:
    stage: str
    step: int | None = None
    total: int | None = None
    eta_s: float | None = None

    @property
    def text(self) -> str:
        parts = [self.stage]
        if self.step is not None and self.total:
            parts.append(f"step {self.step}/{self.total}")
        if self.eta_s is not None:
            parts.append(f"ETA {format_duration(self.eta_s)}")
        return " · ".join(parts)


@dataclass(frozen=True)
class OutputEvent:
    """A partial result delivered before the job ends (an SVI clip, a preview frame)."""
    kind: str
    path: str | None = None
    data: Any = None


@dataclass(frozen=True)
class JobResult:
    outputs: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FinishedEvent:
    status: str  # done / failed / cancelled
    result: JobResult | None = None
    error: str | None = None


Event = ProgressEvent | OutputEvent | FinishedEvent


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class JobContext:
    """What a workflow sees of its job: progress, cancel checks, its output folder."""

    def __init__(self, job: "Job", outdir: Path):
        self.job = job
        self.job_id = job.id
        self.outdir = outdir
        self.log = logging.LoggerAdapter(log, {"job_id": job.id, "workflow": job.workflow})
        self._stage_started = time.monotonic()
        self._stage = ""

    def check_cancelled(self) -> None:
        if self.job.cancel_requested.is_set():
            raise Cancelled()

    def progress(self, stage: str, step: int | None = None, total: int | None = None) -> None:
        now = time.monotonic()
        if stage != self._stage:
            self._stage, self._stage_started = stage, now
        eta = None
        if step and total and step <= total:
            eta = (now - self._stage_started) / step * (total - step)
        if step is not None:
            self.job.steps_done, self.job.steps_total = step, total
        self.job.stage = stage
        self.job.emit(ProgressEvent(stage, step, total, eta))

    def output(self, kind: str, path: str | Path | None = None, data: Any = None) -> None:
        if path is not None:
            self.job.partial_outputs.append(str(path))
        self.job.emit(OutputEvent(kind, str(path) if path is not None else None, data))

    def note(self, text: str) -> None:
        """A sentence for the job's log and the UI (which placement was chosen and why, a retry)."""
        self.log.info(text)
        self.job.notes.append(text)
        self.job.emit(OutputEvent("note", data=text))

    def step_callback(self, total: int, stage: str = "denoising",
                      on_step: Callable[[int, dict], None] | None = None) -> Callable:
        """A diffusers `callback_on_step_end`: reports step i/N, runs `on_step(i, tensors)` (previews),
        and aborts at once on Stop."""
        self.progress(stage, 0, total)

        def on_step_end(pipe, step_index, timestep, callback_kwargs):
            self.progress(stage, step_index + 1, total)
            if on_step is not None:
                on_step(step_index + 1, callback_kwargs)
            self.check_cancelled()
            return callback_kwargs

        return on_step_end


class Job:
    def __init__(self, job_id: str, workflow: str):
        self.id = job_id
        self.workflow = workflow
        self.state = QUEUED
        self.cancel_requested = threading.Event()
        self.finished = threading.Event()
        self.stage = "waiting for the GPU"
        self.steps_done = 0
        self.steps_total: int | None = None
        self.steps_at_cancel: int | None = None
        self.partial_outputs: list[str] = []
        self.notes: list[str] = []
        self.outcome: FinishedEvent | None = None
        self._events: list[Event] = []
        self._listeners: list[Callable[[Event], None]] = []
        self._lock = threading.Lock()

    def cancel(self) -> None:
        if not self.cancel_requested.is_set():
            self.steps_at_cancel = self.steps_done
            self.cancel_requested.set()

    def emit(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a listener whose page went away must not kill the job
                log.debug("job %s: listener failed", self.id, exc_info=True)

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Replays every event so far, then delivers new ones (from the worker thread)."""
        with self._lock:
            past = list(self._events)
            self._listeners.append(listener)
        for event in past:
            listener(event)

    def unsubscribe(self, listener: Callable[[Event], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Blocking iterator of this job's events, ending with its FinishedEvent."""
        inbox: queue.Queue[Event] = queue.Queue()
        self.subscribe(inbox.put)
        try:
            while True:
                event = inbox.get(timeout=timeout)
                yield event
                if isinstance(event, FinishedEvent):
                    return
        finally:
            self.unsubscribe(inbox.put)

    async def aevents(self) -> AsyncIterator[Event]:
        """The same stream for an asyncio consumer (a Gradio handler)."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Event] = asyncio.Queue()

        def deliver(event: Event) -> None:
            loop.call_soon_threadsafe(inbox.put_nowait, event)

        self.subscribe(deliver)
        try:
            while True:
                event = await inbox.get()
                yield event
                if isinstance(event, FinishedEvent):
                    return
        finally:
            self.unsubscribe(deliver)

    def wait(self, timeout: float | None = None) -> FinishedEvent:
        if not self.finished.wait(timeout):
            raise TimeoutError(f"job {self.id} still running after {timeout}s")
        assert self.outcome is not None
        return self.outcome


Work = Callable[[JobContext], JobResult]


class JobRunner:
    def __init__(self, history: JobHistory, outputs_dir: Path, gpu_lock: threading.Lock = GPU_LOCK,
                 max_waiting: int = MAX_WAITING):
        self.history = history
        self.outputs_dir = Path(outputs_dir)
        self.gpu_lock = gpu_lock
        self.max_waiting = max_waiting
        self._active: dict[str, Job] = {}
        self._active_lock = threading.Lock()
        self._line: deque[Job] = deque()  # jobs waiting for the GPU, first come first served
        self._turn = threading.Condition()

    def submit(self, workflow: str, params: dict, work: Work) -> Job:
        """Records the job as queued and starts it on a worker thread; returns at once.

        Raises QueueFull when max_waiting jobs already wait, and HistoryUnavailable when the job
        cannot be recorded (then it does not run)."""
        with self._turn:
            if len(self._line) >= self.max_waiting:
                raise QueueFull(f"{len(self._line)} jobs are already waiting for the GPU; try again when one "
                                "has finished")
            job = Job(self.history.create(workflow, params), workflow)
            self._line.append(job)
        with self._active_lock:
            self._active[job.id] = job
        threading.Thread(target=self._run, args=(job, work), name=f"job-{job.id}", daemon=True).start()
        return job

    def cancel(self, job_id: str) -> bool:
        with self._active_lock:
            job = self._active.get(job_id)
        if job:
            job.cancel()
            with self._turn:
                self._turn.notify_all()
        return job is not None

    def active(self) -> list[Job]:
        with self._active_lock:
            return list(self._active.values())

    def waiting(self) -> list[Job]:
        """The jobs waiting for the GPU, the next one first."""
        with self._turn:
            return list(self._line)

    def _acquire_gpu(self, job: Job) -> bool:
        """Waits until `job` is first in line and the lock is free; False if it was cancelled meanwhile."""
        with self._turn:
            try:
                while not job.cancel_requested.is_set():
                    if self._line[0] is job and self.gpu_lock.acquire(blocking=False):
                        return True
                    self._turn.wait(LOCK_POLL_S)  # the lock may also be taken outside the runner: poll
                return False
            finally:
                self._line.remove(job)
                self._turn.notify_all()

    def _release_gpu(self) -> None:
        self.gpu_lock.release()
        with self._turn:
            self._turn.notify_all()

    def _run(self, job: Job, work: Work) -> None:
        queued_at = time.time()
        outcome: FinishedEvent
        if not self._acquire_gpu(job):
            outcome = FinishedEvent(CANCELLED, error="cancelled before it started")
            self._finish(job, outcome, started_at=None, queued_at=queued_at)
            return
        started_at = time.time()
        job.state = RUNNING
        try:
            self.history.update(job.id, status=RUNNING, started_at=started_at)
            outdir = self.outputs_dir / job.id
            outdir.mkdir(parents=True, exist_ok=True)
            ctx = JobContext(job, outdir)
            ctx.progress("starting")
            result = work(ctx)
            outcome = FinishedEvent(DONE, result=result)
        except Cancelled as stop:
            outcome = FinishedEvent(CANCELLED, result=stop.result or JobResult(outputs=list(job.partial_outputs)),
                                    error="stopped by the user")
        except Exception as exc:
            log.error("job %s (%s) failed:\n%s", job.id, job.workflow, traceback.format_exc())
            outcome = FinishedEvent(FAILED, result=JobResult(outputs=list(job.partial_outputs)),
                                    error=describe_error(exc))
        finally:
            # Recorded before the lock is released, so the next job's start is always later.
            finished_at = time.time()
            self._release_gpu()
        self._finish(job, outcome, started_at=started_at, queued_at=queued_at, finished_at=finished_at)

    def _finish(self, job: Job, outcome: FinishedEvent, *, started_at: float | None, queued_at: float,
                finished_at: float | None = None) -> None:
        finished_at = finished_at or time.time()
        fields: dict[str, Any] = {
            "status": outcome.status, "finished_at": finished_at, "error": outcome.error,
            "steps_done": job.steps_done, "steps_total": job.steps_total, "steps_at_cancel": job.steps_at_cancel,
            "notes": job.notes,
            "timings": {"wait_s": round((started_at or finished_at) - queued_at, 3),
                        "run_s": round(finished_at - started_at, 3) if started_at else 0.0},
        }
        if outcome.result is not None:
            fields["outputs"] = outcome.result.outputs
            fields["metadata"] = outcome.result.metadata
        try:
            self.history.update(job.id, **fields)
        except Exception:
            log.exception("job %s: could not record its end in the history", job.id)
        job.outcome = outcome
        job.state = outcome.status
        with self._active_lock:
            self._active.pop(job.id, None)
        job.finished.set()
        job.emit(outcome)
        log.info("job %s (%s) %s in %.1fs", job.id, job.workflow, outcome.status, fields["timings"]["run_s"])


def describe_error(exc: BaseException) -> str:
    """A sentence for the UI: the exception's own message, with the type only when it adds meaning.
    Disk trouble names the file but never its folder (which may be an internal one)."""
    if isinstance(exc, WriteFailed):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        reason = describe_storage_error(exc)
        return f"{Path(str(exc.filename)).name}: {reason}" if exc.filename else reason
    message = str(exc).strip() or exc.__class__.__name__
    if isinstance(exc, (ValueError, KeyError)):
        return message
    return f"{exc.__class__.__name__}: {message}"
