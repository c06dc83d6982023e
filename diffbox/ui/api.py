"""The scriptable API (gradio_client), named as in README's API section.

Each endpoint goes through the same Services call as its UI button. Files leave as
gr.FileData so remote clients can download them; a bare path string would not be served.
"""

from __future__ import annotations

import gradio as gr
from gradio import FileData

from diffbox.engine.runner import FinishedEvent
from diffbox.services import Services
from diffbox.store import CANCELLED
from diffbox.ui.jobs import GPU_EVENT, follow, raise_if_failed, submit_or_explain
from diffbox.ui.plan_api import register_plan_api
from diffbox.ui.uploads import UploadGuard

GPU = GPU_EVENT  # no Gradio limit: the job runner is the GPU queue
LIGHT = {"concurrency_limit": None}


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


def register_api(services: Services) -> None:
    guard = UploadGuard(services.settings.outputs_dir)

    async def i2v(params: dict, image: FileData, end_image: FileData | None = None) -> tuple[FileData, dict]:
        """Wan 2.2 image-to-video. params: the i2v parameters (see the spec); returns (mp4, metadata)."""
        job = await submit_or_explain(lambda: services.submit_i2v(params, guard.file(image, "image"),
                                                                  guard.file(end_image, "end_image")))
        finished = await finish(job)
        return FileData(path=finished.result.outputs[0]), finished.result.metadata

    def history(limit: int = 50) -> list[dict]:
        """The newest job records, newest first (at most 1000)."""
        try:
            count = int(limit)
        except (TypeError, ValueError, OverflowError):
            raise gr.Error(f"limit: must be a whole number of records, got {str(limit)[:40]!r}",
                           title="Invalid input", print_exception=False) from None
        return services.history.list(limit=max(1, min(count, 1000)))

    def specs() -> dict:
        """Every workflow's parameters: type, default, range, choices, tier and help."""
        return {name: [describe(p) for p in spec.params] for name, spec in services.specs.items()}

    gr.api(i2v, api_name="i2v", **GPU)
    gr.api(history, api_name="history", **LIGHT)
    gr.api(specs, api_name="specs", **LIGHT)
    register_plan_api(services)


def describe(param) -> dict:
    fields = ("name", "kind", "default", "tier", "help", "minimum", "maximum", "choices", "multiple_of", "congruent")
    return {f: getattr(param, f) for f in fields if getattr(param, f) is not None}
