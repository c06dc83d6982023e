"""Load diffusers pipelines from local folders.

Every model diffbox runs, real or demo, goes through ``load_pipeline`` so the
environment shims and dtype policy live in one place.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from diffbox.engine.compat import install_qwen_processor_compat


def default_dtype() -> torch.dtype:
    """bfloat16 on CUDA (what Wan 2.2 and Qwen-Image ship in); float32 on CPU, where bf16 is slow."""
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def read_model_index(path: str | Path) -> dict:
    """Parse ``model_index.json`` of a diffusers folder, with errors that name the file."""
    index_file = Path(path) / "model_index.json"
    if not index_file.is_file():
        raise FileNotFoundError(f"not a diffusers folder: {index_file} is missing")
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {index_file}: {error}") from error
    if not isinstance(index, dict) or "_class_name" not in index:
        raise ValueError(f"{index_file} is not a diffusers model index (no _class_name)")
    return index


def load_pipeline(
    path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    pipeline_class: type | None = None,
) -> DiffusionPipeline:
    """Load a diffusers pipeline folder from local disk.

    ``pipeline_class`` overrides the class named in model_index.json, e.g. to open a
    Qwen-Image-Edit folder as QwenImageEditPlusPipeline or QwenImageEditInpaintPipeline.
    """
    install_qwen_processor_compat()
    path = Path(path)
    read_model_index(path)  # fail early with a clear message instead of a hub lookup error
    loader = pipeline_class or DiffusionPipeline
    # dtype=, not torch_dtype=: the latter is deprecated in diffusers 0.42.
    return loader.from_pretrained(path, dtype=dtype or default_dtype(), local_files_only=True)
