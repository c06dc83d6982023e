"""File arguments from outside: only Gradio uploads, or this app's own outputs, are ever opened.

Gradio checks the file objects its components receive (FileData with meta) against its upload
folder, but a plain string or a dict without that meta reaches a handler unchecked: a bare path in
`/i2v`'s image would make the app read any file on the server. Every workflow and config handler
therefore passes its file arguments through `UploadGuard` before anything opens them.

What passes: a path (or a FileData dict / object with a path) whose real path — symlinks and `..`
resolved — is a regular file inside Gradio's upload folder (where uploads and Gradio's cached
copies live: GRADIO_TEMP_DIR, else <tmp>/gradio) or inside outputs/ (to chain a result into the
next job); a PIL image or numpy array (what a Gradio component already decoded); lists of those for
a list argument, and the ImageEditor's {"background", "layers", "composite"} for a mask. Anything
else — a server path, a URL, a dict with only a url, a missing file, a folder — is refused with the
same sentence whatever the reason, so the answer tells nothing about the server's files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from gradio.utils import get_upload_folder
from PIL import Image

from diffbox.params import InvalidParams

REFUSED = "must be a file uploaded to this app (or one of its own outputs)"
EDITOR_KEYS = ("background", "layers", "composite")


class RefusedFile(InvalidParams):
    """A file argument that is not an upload or an output; the message is always REFUSED."""

    def __init__(self, field: str):
        self.field = field
        super().__init__({field: REFUSED})


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, tuple, dict)) and len(value) == 0)


class UploadGuard:
    def __init__(self, outputs_dir: Path):
        self.outputs_dir = Path(outputs_dir)

    def roots(self) -> list[str]:
        # Read on every call: GRADIO_TEMP_DIR may be set after this object was made (tests, launch).
        return [os.path.realpath(get_upload_folder()), os.path.realpath(self.outputs_dir)]

    def _path(self, value: Any, field: str) -> str:
        if isinstance(value, dict):
            value = value.get("path")
        elif not isinstance(value, (str, Path)):
            value = getattr(value, "path", None)  # a FileData object
        if not isinstance(value, (str, Path)) or not str(value) or "\0" in str(value):
            raise RefusedFile(field)
        real = os.path.realpath(value)
        inside = any(os.path.commonpath([real, root]) == root for root in self.roots())
        if not inside or not os.path.isfile(real):
            raise RefusedFile(field)
        return real

    def file(self, value: Any, field: str) -> Any:
        """One file argument → its checked real path (or the decoded image as it came); None when empty."""
        if _empty(value):
            return None
        if isinstance(value, (Image.Image, np.ndarray)):
            return value
        return self._path(value, field)

    def files(self, values: Any, field: str) -> list:
        """A list argument (a single value counts as a list of one); empty entries are dropped."""
        if _empty(values):
            return []
        items = values if isinstance(values, (list, tuple)) else [values]
        return [self.file(item, f"{field}[{index}]") for index, item in enumerate(items) if not _empty(item)]

    def mask(self, value: Any, field: str = "mask") -> Any:
        """A mask file, or an ImageEditor value whose background, layers and composite are all checked."""
        if isinstance(value, dict) and any(key in value for key in EDITOR_KEYS):
            return {"background": self.file(value.get("background"), field),
                    "layers": self.files(value.get("layers"), field),
                    "composite": self.file(value.get("composite"), field)}
        return self.file(value, field)

    def inputs(self, workflow, values: dict) -> dict:
        """A workflow's file arguments by input name, each checked as its kind asks."""
        check = {"images": self.files, "mask": self.mask}
        return {put.name: check.get(put.kind, self.file)(values.get(put.name), put.name) for put in workflow.inputs}
