"""The `/qwen_edit` API endpoint (README's API section), through the same Services call as the tab.

`images` is `list[FileData]`, not a Gallery: a Gallery input rejects gradio_client's
handle_file values (its GalleryData validation, Gradio 6.31). `control_image` is an optional fourth
argument beyond the contract's three, for generate mode with a ControlNet.
"""

from __future__ import annotations

import gradio as gr
from gradio import FileData

from diffbox.services import Services
from diffbox.ui.api import GPU, finish
from diffbox.ui.jobs import submit_or_explain
from diffbox.ui.uploads import UploadGuard


def register_qwen_api(services: Services) -> None:
    guard = UploadGuard(services.settings.outputs_dir)

    async def qwen_edit(params: dict, images: list[FileData] | None = None, mask: FileData | None = None,
                        control_image: FileData | None = None) -> tuple[list[FileData], dict]:
        """Qwen-Image-Edit. params: the qwen_edit parameters (mode generate/edit/inpaint, see /specs);
        images: reference images in order; mask: white = repaint (inpaint). Returns (PNG files, metadata)."""
        job = await submit_or_explain(lambda: services.submit_qwen_edit(
            params, guard.files(images, "images"), guard.mask(mask), guard.file(control_image, "control_image")))
        finished = await finish(job)
        return [FileData(path=path) for path in finished.result.outputs], finished.result.metadata

    gr.api(qwen_edit, api_name="qwen_edit", **GPU)
