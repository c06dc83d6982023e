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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

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


def _is_wan(pipe) -> bool:
    return type(getattr(pipe, "transformer", None)).__name__.startswith("Wan")


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


# Original Wan module names, the ones diffusers' Wan converter maps (only under `diffusion_model.`).
_NATIVE_WAN_MODULE = re.compile(r"^(?:blocks\.\d+\.(?:self_attn|cross_attn|ffn|norm\d|diff_m|modulation)|head\.|"
                                r"(?:text|time)_embedding\.|time_projection\.|img_emb\.|patch_embedding\.)")
_PEFT_ADAPTER_INFIX = re.compile(r"\.(lora_[AB])\.default\.")


def wan_lora_key_renames(keys) -> dict[str, str]:
    """{key: new key} that lets diffusers' Wan loader convert a LoRA, or {} when it already does.

    Two published layouts fall outside what diffusers 0.42 recognises (it converts only keys under
    `diffusion_model.` or `lora_unet_`): DiffSynth-Studio's PEFT keys, as in the official SVI 2.0 Pro
    LoRAs (`blocks.0.self_attn.q.lora_A.default.weight`: original Wan names, peft's `.default` adapter
    infix, no prefix, no alpha), and original-name LoRAs saved without the prefix (Wan2.2-Lightning's
    own loader accepts both). Dropping `.default` and adding the prefix hands them to diffusers'
    converter, which maps the module names and folds any alpha in.
    """
    renamed = {key: _PEFT_ADAPTER_INFIX.sub(r".\1.", key) for key in keys}
    if renamed and all(_NATIVE_WAN_MODULE.match(key) for key in renamed.values()):
        renamed = {key: "diffusion_model." + new for key, new in renamed.items()}
    return renamed if any(key != new for key, new in renamed.items()) else {}


def wan_lora_state_dict(path: Path) -> dict[str, torch.Tensor] | None:
    """The LoRA file's tensors under the names wan_lora_key_renames gives, or None to load the file as is."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        renames = wan_lora_key_renames(handle.keys())
        return {new: handle.get_tensor(key) for key, new in renames.items()} if renames else None


def _load(pipe, lora: LoraRequest, adapter: str, into_second: bool) -> None:
    kwargs = {"load_into_transformer_2": True} if into_second else {}
    component = "transformer_2" if into_second else "transformer"
    try:
        weights = wan_lora_state_dict(lora.path) if _is_wan(pipe) else None
        pipe.load_lora_weights(str(lora.path) if weights is None else weights, adapter_name=adapter, **kwargs)
    except (ValueError, KeyError, RuntimeError, TypeError) as exc:
        reason = re.sub(r"\s+", " ", str(exc))[:300]
        raise ValueError(f"LoRA {lora.name} could not be applied to this model ({reason})") from exc
    # diffusers skips keys it cannot map without a word: a LoRA that matched nothing would silently
    # do nothing, so it is an error here.
    if adapter not in _loaded(pipe, component):
        raise ValueError(f"LoRA {lora.name}: none of its keys match this model's {component}; the file is "
                         f"in a key format diffusers does not recognise for Wan, or made for another model")
