"""Miniature twins of the published files diffbox offers or recommends (see docs/twins.md).

    from diffbox.twins import TWINS, build_twin
    build_twin("wan2.2-i2v-a14b-diffusers", root)   # -> root/<name>/Wan2.2-I2V-A14B-Diffusers

Same folder layout and file names, config keys and values (only the dimensions shrunk), storage dtypes
and tensor-name patterns as the originals, built offline in well under a second each.
"""

from __future__ import annotations

from pathlib import Path

from diffbox.twins.catalog import TWINS
from diffbox.twins.registry import Original, Twin
from diffbox.twins.registry import build_twin as _build_twin

__all__ = ["TWINS", "Original", "Twin", "build_twin"]


def build_twin(name: str, root: Path, seed: int = 0) -> Path:
    """Builds twin ``name`` once under ``root`` (deterministic bytes) and returns its folder or file."""
    return _build_twin(TWINS, name, root, seed)
