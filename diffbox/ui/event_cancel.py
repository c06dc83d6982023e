"""A client's cancel stops exactly the job it names, whenever it is sent.

gradio_client's `job.cancel()` and the page's own cancel post `/gradio_api/cancel` {session_hash,
fn_index, event_id}, then `/gradio_api/reset` {event_id}. In Gradio 6.31 two of those get lost:

- Sent right after `client.submit(...)` (README's snippet), the cancel leaves before the client has its
  event id: `/cancel` with `event_id: null` is answered 422, and the `/reset` that follows once the id
  arrives does nothing in Gradio 6.31. The job ran to its end.
- `/cancel` stops every running event of that session and endpoint (Gradio names its tasks by both),
  but only the named one is told it ended. The client's other jobs on the endpoint stopped without an
  end message: their `job.result()`, and the script's exit, waited forever.

So both routes are answered here, for one event: its task is cancelled (the handler receives
CancelledError and cancels the diffbox job: diffbox.ui.jobs) or it leaves Gradio's queue, and its
listener gets the end message Gradio's `/cancel` sends. A second call for the same event (`/reset`
after `/cancel`) finds nothing left to do. Like Gradio's routes, these need no login: the event id is
a random value only its client is shown.

Written against Gradio 6.31's internals, which it mirrors: `routes.py` cancel_event / reset_iterator,
`utils.set_task_name` ("<session>_<fn><gradio-sep><event id>"), `Queue.event_ids_to_events`,
`pending_messages_per_session`, `pending_event_ids_session`, `remove_from_queue`, and the App's
`iterators` / `lock` / `iterators_to_reset`. Should a later Gradio lack any of them, the request goes on
to Gradio's own route unchanged (a warning is logged once): cancel then works as Gradio's does, never
worse. tests/test_app.py checks the outcome from outside, so an upgrade that changes it shows there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re

log = logging.getLogger(__name__)

ROUTES = re.compile(r"/gradio_api/(cancel|reset)/?")
TASK_SEPARATOR = "<gradio-sep>"
MAX_BODY = 4096
QUEUE_INTERNALS = ("event_ids_to_events", "pending_messages_per_session", "pending_event_ids_session",
                   "remove_from_queue")
APP_INTERNALS = ("iterators", "lock", "iterators_to_reset", "get_blocks")

try:
    from gradio.server_messages import ProcessCompletedMessage
    from gradio.utils import safe_aclose_iterator
except ImportError:  # a Gradio without them: every request goes on to Gradio's own routes
    ProcessCompletedMessage = safe_aclose_iterator = None


def internals_present(app) -> bool:
    """Whether this Gradio still has every piece cancel_event reaches into."""
    if ProcessCompletedMessage is None or not all(hasattr(app, name) for name in APP_INTERNALS):
        return False
    try:
        queue = getattr(app.get_blocks(), "_queue", None)
    except Exception:  # noqa: BLE001 - any surprise here means: leave it to Gradio
        return False
    return queue is not None and all(hasattr(queue, name) for name in QUEUE_INTERNALS)


async def cancel_event(app, event_id: str) -> bool:
    """Stops one event, running or waiting in Gradio's queue; False when it is unknown or already over."""
    queue = app.get_blocks()._queue
    event = queue.event_ids_to_events.get(event_id)  # kept until the event's run has ended
    tasks = [task for task in asyncio.all_tasks() if task.get_name().endswith(TASK_SEPARATOR + event_id)]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await queue.remove_from_queue(event_id)
    if event is None:
        return False
    session = event.session_hash
    if session in queue.pending_messages_per_session and event_id in queue.pending_event_ids_session.get(session, ()):
        queue.pending_messages_per_session[session].put_nowait(
            ProcessCompletedMessage(output={}, success=True, event_id=event_id))
    if event_id in app.iterators:  # a generator between two of its outputs, as Gradio's /cancel closes it
        async with app.lock:
            try:
                await safe_aclose_iterator(app.iterators[event_id])
            except Exception:  # noqa: BLE001 - the generator's own cleanup failing must not fail the cancel
                pass
            app.iterators.pop(event_id, None)
            app.iterators_to_reset.add(event_id)
    return True


class EventCancel:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app):
        self.app = app
        self.warned = False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not ROUTES.fullmatch(scope["path"]):
            return await self.app(scope, receive, send)
        body, messages = b"", []
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if not message.get("more_body") or len(body) > MAX_BODY:
                break
        event_id = _event_id(body)
        if event_id is None or not self.usable(scope["app"]):
            return await self.app(scope, _replay(messages, receive), send)
        try:
            await cancel_event(scope["app"], event_id)
        except Exception:  # noqa: BLE001 - Gradio's internals changed shape: its own route still answers
            log.exception("per-job cancel failed; Gradio's own cancel takes the request")
            return await self.app(scope, _replay(messages, receive), send)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"success":true}'})

    def usable(self, app) -> bool:
        if internals_present(app):
            return True
        if not self.warned:
            self.warned = True
            log.warning("this Gradio lacks the internals diffbox's per-job cancel was written for (Gradio 6.31); "
                        "cancel falls back to Gradio's own, which stops a client's every job on an endpoint")
        return False


def _event_id(body: bytes) -> str | None:
    try:
        event_id = json.loads(body).get("event_id")
    except (ValueError, AttributeError):
        return None
    return event_id if isinstance(event_id, str) and event_id else None


def _replay(messages: list, receive):
    pending = list(messages)

    async def replayed():
        return pending.pop(0) if pending else await receive()

    return replayed
