"""Work-arounds for library gaps in this environment.

transformers 5 gives Qwen2VLProcessor a mandatory ``video_processor``, and every video
processor class needs torchvision. On a CPU-only torch the torchvision wheel on PyPI cannot
be imported (it is a CUDA build), so Qwen-Image-Edit pipelines could not even be loaded.
diffbox never feeds video to the Qwen processor, so dropping the video attribute is safe.
"""

from __future__ import annotations

import functools

_installed = False


@functools.cache
def torchvision_usable() -> bool:
    """True when torchvision imports cleanly (a CUDA wheel on CPU torch raises RuntimeError)."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


def install_qwen_processor_compat() -> None:
    """Make processors skip their video sub-processor when torchvision is unusable.

    Patches ``ProcessorMixin.get_attributes`` so construction, ``save_pretrained`` and
    ``from_pretrained`` of Qwen2VLProcessor work without a video processor. A no-op when
    torchvision works; safe to call any number of times.
    """
    global _installed
    if _installed or torchvision_usable():
        return
    from transformers.processing_utils import ProcessorMixin

    original = ProcessorMixin.get_attributes.__func__

    def get_attributes_without_video(cls):
        return [name for name in original(cls) if "video" not in name]

    ProcessorMixin.get_attributes = classmethod(get_attributes_without_video)
    _installed = True
