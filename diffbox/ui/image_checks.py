"""An uploaded picture is checked the moment it arrives: a file that is no image is taken out again with
a message naming the box, instead of a broken-image icon now and a bare "Error" badge at Generate.

Gradio's Image decodes an upload only when an event reads it (its preprocess opens it with PIL), and a
failure there reaches the page as an unexplained "Error"; Gallery and File do not decode at all. So the
check runs on the component's upload event with preprocess=False (the raw upload, not Gradio's decode),
in the queue: Gradio delivers gr.Warning only to queued events.
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from diffbox.markup import plain
from diffbox.params import InvalidParams
from diffbox.ui.jobs import public_message
from diffbox.ui.uploads import UploadGuard
from diffbox.workflows.images import load_image

CHECK_EVENT = {"api_visibility": "private", "queue": True, "preprocess": False, "show_progress": "hidden"}


def image_problem(guard: UploadGuard, value, field: str) -> str | None:
    """Why this upload cannot be used as an image (None if it can); the reason names `field`."""
    try:
        load_image(guard.file(value, field), field)
    except InvalidParams as exc:
        return public_message(str(exc))
    return None


def check_image_uploads(component: gr.Image | gr.File, guard: UploadGuard, title: str, api_name: str) -> None:
    """On upload, an unreadable file is cleared from `component` and a warning names `title`."""
    def check(value):
        problem = image_problem(guard, value, title)
        if problem is None:
            return gr.skip()
        gr.Warning(plain(f"{problem}. Choose a PNG, JPEG or WebP image."), title="Not an image")
        return None

    component.upload(check, component, component, api_name=api_name, **CHECK_EVENT)


def gallery_paths_checked(guard: UploadGuard, title: str, paths: Callable[[object], list[str]]) -> Callable:
    """Handler for a gallery's upload: keeps the readable images in order, warns about each other file."""
    def check(value):
        kept, refused = [], []
        for index, path in enumerate(paths(value)):
            problem = image_problem(guard, path, f"{title} {index + 1}")
            (refused if problem else kept).append(problem or path)
        if not refused:
            return gr.skip()
        for problem in refused:
            gr.Warning(plain(f"Left out: {problem}. Choose PNG, JPEG or WebP images."), title="Not an image")
        return kept
    return check
