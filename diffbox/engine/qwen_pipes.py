"""One loaded Qwen-Image(-Edit) model serving every mode through `from_pipe`.

The cache loads the model folder once (as its own class, e.g. QwenImageEditPipeline). Generate,
multi-reference edit, inpaint and ControlNet need other pipeline classes over the same
transformer/VAE/text encoder: `from_pipe` builds them around the very same module objects, so
no weights are loaded or copied twice, and LoRAs or attention settings put on the shared
transformer reach every mode. The views are remembered on the loaded pipeline itself, so they
live and die with the cache entry.
"""

from __future__ import annotations

import threading
from pathlib import Path

import diffusers
import torch

_VIEWS = "_diffbox_views"
_CONTROLNETS = "_diffbox_controlnets"
_lock = threading.Lock()


def view(pipe, class_name: str, controlnet=None):
    """`pipe` seen as `class_name` (a diffusers Qwen pipeline class), sharing its components."""
    if type(pipe).__name__ == class_name and controlnet is None:
        return pipe
    key = (class_name, id(controlnet))
    with _lock:
        views = pipe.__dict__.setdefault(_VIEWS, {})
        if key not in views:
            extra = {"controlnet": controlnet} if controlnet is not None else {}
            views[key] = getattr(diffusers, class_name).from_pipe(pipe, **extra)
        return views[key]


def controlnet_for(pipe, path: Path):
    """The QwenImageControlNetModel at `path`, loaded once per pipeline in its dtype and on the device
    its transformer runs on. (Not counted in the cache's memory estimate: a Qwen ControlNet is a
    few blocks, small next to the 20B transformer.)"""
    key = str(path)
    with _lock:
        loaded = pipe.__dict__.setdefault(_CONTROLNETS, {})
        if key not in loaded:
            model = diffusers.QwenImageControlNetModel.from_pretrained(path, dtype=pipe.transformer.dtype)
            loaded[key] = model.to(_execution_device(pipe)).eval()
        return loaded[key]


def _execution_device(pipe) -> torch.device:
    try:
        return pipe._execution_device  # where offload hooks run the model, not where it is stored
    except Exception:
        return next(pipe.transformer.parameters()).device
