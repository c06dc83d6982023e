"""The /svi and /svi_extend API events: one (clip file, metadata) per finished clip, then the stitched mp4.

Ordinary files, not the UI's HLS stream (README's API section). A clip file holds only the frames
it adds, so clip 0 + the trimmed later clips = the stitched video.
"""

from __future__ import annotations

import gradio as gr
from gradio import FileData

from diffbox.engine.runner import FinishedEvent, Job, OutputEvent
from diffbox.services import Services
from diffbox.store import CANCELLED
from diffbox.ui.jobs import GPU_EVENT, follow, raise_if_failed, submit_or_explain
from diffbox.ui.uploads import UploadGuard

GPU = GPU_EVENT  # no Gradio limit: the job runner is the GPU queue


async def clips_then_stitched(job: Job):
    async for event in follow(job):
        if isinstance(event, OutputEvent) and event.kind == "clip":
            yield FileData(path=event.path), event.data
        elif isinstance(event, FinishedEvent):
            raise_if_failed(event)
            result = event.result
            if not result or not result.outputs:
                raise gr.Error(f"job {job.id} was stopped before its first clip", title="Stopped",
                               print_exception=False)
            yield FileData(path=result.outputs[0]), result.metadata
            if event.status == CANCELLED:
                return


def register_svi_api(services: Services) -> None:
    guard = UploadGuard(services.settings.outputs_dir)

    # Annotated with the per-yield tuple: with Iterator[...] Gradio 6.31 declares one output and the file
    # download fails with 403.
    async def svi(params: dict, image: FileData) -> tuple[FileData, dict]:
        """SVI 2.0 Pro endless video. params: the svi parameters (see /specs). Yields (clip mp4, metadata)
        for every finished clip, then (stitched mp4, metadata)."""
        job = await submit_or_explain(lambda: services.submit_svi(params, guard.file(image, "image")))
        async for item in clips_then_stitched(job):
            yield item

    async def svi_extend(job_id: str, params: dict) -> tuple[FileData, dict]:
        """Continues SVI job `job_id` from its saved latents; params override its settings (new prompts,
        num_clips…). Yields the new clips, then the stitched mp4 of the whole, longer video."""
        job = await submit_or_explain(lambda: services.submit_svi_extend(job_id, params))
        async for item in clips_then_stitched(job):
            yield item

    gr.api(svi, api_name="svi", **GPU)
    gr.api(svi_extend, api_name="svi_extend", **GPU)
