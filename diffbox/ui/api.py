"""The scriptable API (gradio_client), named as in README's API section.

Each endpoint goes through the same Services call as its UI button. Files leave as
gr.FileData so remote clients can download them; a bare path string would not be served.
"""

from __future__ import annotations

import inspect

import gradio as gr
from gradio import FileData

from diffbox.engine.runner import FinishedEvent
from diffbox.services import Services
from diffbox.store import CANCELLED
from diffbox.ui.jobs import GPU_EVENT, follow, raise_if_failed, submit_or_explain
from diffbox.ui.plan_api import register_plan_api
from diffbox.ui.svi_api import register_svi_api
from diffbox.ui.uploads import UploadGuard
from diffbox.workflows.registry import WORKFLOWS
from diffbox.workflows.workflow import Input, Workflow

GPU = GPU_EVENT  # no Gradio limit: the job runner is the GPU queue
LIGHT = {"concurrency_limit": None}
# Workflows whose endpoint is not one job → one result: their own registration.
STREAMING = {"svi": register_svi_api}


async def finish(job) -> FinishedEvent:
    finished = None
    async for event in follow(job):
        if isinstance(event, FinishedEvent):
            finished = event
    assert finished is not None
    raise_if_failed(finished)
    if finished.status == CANCELLED:
        raise gr.Error(f"job {job.id} was stopped before it finished", title="Stopped", print_exception=False)
    return finished


def file_argument(put: Input):
    """The type hint that makes gradio_client upload a file for an input (Gradio derives the API from hints)."""
    hint = list[FileData] if put.kind == "images" else FileData
    return hint | None if put.optional else hint


def workflow_endpoint(services: Services, guard: UploadGuard, workflow: Workflow):
    """`/<name>(params: dict, <inputs by name>) -> (file or files, metadata)`, with the signature Gradio reads."""
    many = workflow.outputs[0].kind == "images"

    async def endpoint(params: dict, *files):
        named = dict(zip((put.name for put in workflow.inputs), files))
        job = await submit_or_explain(lambda: services.submit(workflow.name, params, guard.inputs(workflow, named)))
        finished = await finish(job)
        paths = [FileData(path=path) for path in finished.result.outputs]
        return (paths if many else paths[0]), finished.result.metadata

    arguments = [inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=dict)]
    for put in workflow.inputs:
        default = None if put.optional else inspect.Parameter.empty
        arguments.append(inspect.Parameter(put.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                                           annotation=file_argument(put)))
    # A string, as `from __future__ import annotations` leaves every hand-written endpoint's: Gradio then
    # declares one output holding the pair, the shape the HTTP API has always answered with.
    returns = f"tuple[{'list[FileData]' if many else 'FileData'}, dict]"
    endpoint.__signature__ = inspect.Signature(arguments, return_annotation=returns)
    endpoint.__annotations__ = {a.name: a.annotation for a in arguments} | {"return": returns}
    endpoint.__name__ = workflow.name
    files = ", ".join(f"{put.name}: {put.label.lower()}" + (" (optional)" if put.optional else "")
                      for put in workflow.inputs)
    endpoint.__doc__ = (f"{workflow.description} params: the {workflow.name} parameters (see /specs); {files}. "
                        f"Returns ({'files' if many else 'the file'}, metadata).")
    return endpoint


def register_api(services: Services) -> None:
    """One endpoint per workflow, named as the workflow; SVI streams its clips and has its own module."""
    guard = UploadGuard(services.settings.outputs_dir)
    for workflow in WORKFLOWS.values():
        if workflow.name in STREAMING:
            STREAMING[workflow.name](services)
        else:
            gr.api(workflow_endpoint(services, guard, workflow), api_name=workflow.name, **GPU)

    def history(limit: int = 50) -> list[dict]:
        """The newest job records, newest first (at most 1000)."""
        return services.history.list(limit=record_limit(limit))

    def history_search(query: str = "", limit: int = 50) -> list[dict]:
        """Job records matching `query` (words of the prompt, negative prompt, LoRA names, model, seed, status,
        workflow; SQLite FTS5 syntax: `fox*`, `"wan2.1-i2v"`, `seed:42`, `OR`, `-snow`), newest first (at most 1000)."""
        count = record_limit(limit)
        try:
            return services.history.search(str(query or ""), limit=count)
        except ValueError as exc:
            raise gr.Error(str(exc), title="Invalid input", print_exception=False) from None

    def specs() -> dict:
        """Every workflow's parameters: type, default, range, choices, tier and help."""
        return {name: [describe(p) for p in spec.params] for name, spec in services.specs.items()}

    gr.api(history, api_name="history", **LIGHT)
    gr.api(history_search, api_name="history_search", **LIGHT)
    gr.api(specs, api_name="specs", **LIGHT)
    register_plan_api(services)


def record_limit(limit) -> int:
    """`limit` of /history and /history_search as a count from 1 to 1000; else a sentence naming it."""
    try:
        count = int(limit)
    except (TypeError, ValueError, OverflowError):
        raise gr.Error(f"limit: must be a whole number of records, got {str(limit)[:40]!r}",
                       title="Invalid input", print_exception=False) from None
    return max(1, min(count, 1000))


def describe(param) -> dict:
    fields = ("name", "kind", "default", "tier", "help", "minimum", "maximum", "choices", "multiple_of", "congruent")
    return {f: getattr(param, f) for f in fields if getattr(param, f) is not None}
