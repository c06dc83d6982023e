"""LoRAs per job on a cached pipeline, through diffusers' adapter API.

The base model is never reloaded: adapters are loaded once by name, weighted per expert with
set_adapters, switched off with disable_lora when a job uses none, and deleted when a job no
longer asks for them (so VRAM use stays what the cache projected).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

# Wan 2.2 A14B: weight_high applies to `transformer` (high-noise expert), weight_low to `transformer_2`.
EXPERTS = (("transformer", "weight_high", False), ("transformer_2", "weight_low", True))


@dataclass(frozen=True)
class LoraRequest:
    name: str          # the library name, shown to users and recorded in metadata
    path: Path
    weight_high: float
    weight_low: float

    @property
    def adapter(self) -> str:
        """A stable adapter name per file content, so the same file is never loaded twice."""
        return "lora_" + file_sha256(self.path)[:12]


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(8 * 1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """Hashed once per file version (size + mtime), then remembered."""
    stat = Path(path).stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def _loaded(pipe, component: str) -> set[str]:
    return set((pipe.get_list_adapters() or {}).get(component, []))


def apply_loras(pipe, loras: list[LoraRequest]) -> None:
    """Makes exactly `loras` active on the pipeline's experts, at their weights."""
    components = [(c, w, into2) for c, w, into2 in EXPERTS if getattr(pipe, c, None) is not None]
    for component, weight_field, into_second in components:
        wanted = [(l.adapter, getattr(l, weight_field), l) for l in loras if getattr(l, weight_field) != 0]
        present = _loaded(pipe, component)
        for adapter, _, lora in wanted:
            if adapter not in present:
                _load(pipe, lora, adapter, into_second)
        stale = present - {adapter for adapter, _, _ in wanted}
        model = getattr(pipe, component)
        if stale:
            model.delete_adapters(sorted(stale))
        if wanted:
            model.enable_lora()
            model.set_adapters([a for a, _, _ in wanted], [w for _, w, _ in wanted])
        elif _loaded(pipe, component):
            model.disable_lora()


def _load(pipe, lora: LoraRequest, adapter: str, into_second: bool) -> None:
    kwargs = {"load_into_transformer_2": True} if into_second else {}
    component = "transformer_2" if into_second else "transformer"
    try:
        pipe.load_lora_weights(str(lora.path), adapter_name=adapter, **kwargs)
    except (ValueError, KeyError, RuntimeError, TypeError) as exc:
        reason = re.sub(r"\s+", " ", str(exc))[:300]
        raise ValueError(f"LoRA {lora.name} could not be applied to this model ({reason})") from exc
    # diffusers skips keys it cannot map without a word: a LoRA that matched nothing would silently
    # do nothing, so it is an error here.
    if adapter not in _loaded(pipe, component):
        raise ValueError(f"LoRA {lora.name}: none of its keys match this model's {component}; the file is "
                         f"in a key format diffusers does not recognise for Wan, or made for another model")
