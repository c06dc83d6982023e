"""The local model library: what is on disk under models/, found by scanning.

A diffusers folder is recognised by its model_index.json, whose `_class_name` says which
pipeline it is for; that is how each workflow's model list is filtered.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

MAX_DEPTH = 4


@dataclass(frozen=True)
class LocalModel:
    name: str            # path relative to models/, shown in dropdowns and stored in params
    path: Path
    pipeline_class: str  # model_index.json's _class_name


def scan_models(models_dir: Path) -> list[LocalModel]:
    models_dir = Path(models_dir)
    found: list[LocalModel] = []
    if not models_dir.is_dir():
        return found
    for folder, subdirs, files in os.walk(models_dir, followlinks=True):  # users symlink model folders in
        depth = len(Path(folder).relative_to(models_dir).parts)
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and depth < MAX_DEPTH)
        if "model_index.json" not in files:
            continue
        subdirs[:] = []  # a pipeline's component folders are not models of their own
        try:
            index = json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(index, dict) and isinstance(index.get("_class_name"), str):
            path = Path(folder)
            found.append(LocalModel(path.relative_to(models_dir).as_posix(), path, index["_class_name"]))
    return sorted(found, key=lambda m: m.name)
