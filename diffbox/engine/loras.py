"""LoRAs per job on a cached pipeline, through diffusers' adapter API.

The base model is never reloaded: adapters are loaded once by name, weighted per expert with
set_adapters, switched off with disable_lora when a job uses none, and deleted when a job no
longer asks for them (so VRAM use stays what the cache projected). Every job that uses a LoRA some
of whose keys diffusers could not apply is told so in its log, in one sentence per LoRA and expert.

LoRA layers live in the compute dtype whatever the weight storage: under fp8, loaders.apply_weights
tells PEFT which dtype that is; GGUF and int8 (torchao) layers report it themselves.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from diffbox.engine.weight_files import cached_sha256 as file_sha256  # how the workflows record a LoRA

if TYPE_CHECKING:
    import torch

# Wan 2.2 A14B: weight_high applies to `transformer` (high-noise expert), weight_low to `transformer_2`.
EXPERTS = (("transformer", "weight_high", False), ("transformer_2", "weight_low", True))
EXPERT_LABELS = {"transformer": "high-noise expert", "transformer_2": "low-noise expert"}


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


def _is_wan(pipe) -> bool:
    return type(getattr(pipe, "transformer", None)).__name__.startswith("Wan")


def _loaded(pipe, component: str) -> set[str]:
    return set((pipe.get_list_adapters() or {}).get(component, []))


def apply_loras(pipe, loras: list[LoraRequest], log: Callable[[str], None] | None = None) -> None:
    """Makes exactly `loras` active on the pipeline's experts, at their weights; `log` hears which keys
    of them were not applied (every job, not only the one that loaded the file)."""
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
        told = _NOT_APPLIED.setdefault(model, {})
        for adapter in stale:
            told.pop(adapter, None)
        for adapter, _, lora in wanted:
            if told.get(adapter) and log is not None:
                log(told[adapter])


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
    model = getattr(pipe, component)
    where = EXPERT_LABELS[component] if _is_wan(pipe) else component
    try:
        said = describe(lora.name, where, landing(pipe, lora.path, model, adapter))
    except Exception:  # telling is a courtesy, never a reason to fail a job whose LoRA did load
        logging.getLogger(__name__).warning("could not work out which keys of LoRA %s landed", lora.name,
                                            exc_info=True)
        said = ""
    _NOT_APPLIED.setdefault(model, {})[adapter] = said


# ---------------------------------------------------------------------------------------------
# Which keys of a LoRA file landed
# ---------------------------------------------------------------------------------------------

# Keys diffusers 0.42's Wan converter drops (it logs them at debug/info level and goes on). lightx2v's
# extracted LoRAs store every changed tensor of under a million values as a full delta: `.diff`
# (weight), `.diff_b` (bias), `.diff_m` (modulation). diffusers makes a Linear's `diff_b` the LoRA's
# bias and `head.head.diff` a full-rank pair; for these it has no LoRA form:
CANNOT_APPLY = (
    (re.compile(r"(?:^|\.)diff_m$"), "modulation deltas (diff_m)"),
    (re.compile(r"norm.*\.diff(?:_b)?$"), "norm deltas"),
    (re.compile(r"(?:^|\.)(?:patch_embedding|img_emb\.proj\.[04])\.diff(?:_b)?$"), "patch/image-embedding deltas"),
)
NO_LAYER = "for layers this model does not have"
_LORA_TENSOR = re.compile(r"^transformer\.(.+)\.lora_[AB]\.(?:weight|bias)$")

# model -> {adapter: the sentence for the job log, "" when every key landed}; lives as long as the model
# (the cache owns it; SVI's view and Qwen's views share its modules, so they share this too).
_NOT_APPLIED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Landing:
    keys: int                         # in the file
    not_applied: dict[str, int]       # reason -> how many of them
    missing_layers: tuple[str, ...]   # diffusers names the file targets that this model lacks


def landing(pipe, path: Path, model, adapter: str) -> Landing:
    """What became of a loaded LoRA's keys.

    Two kinds of keys change nothing: those diffusers' converter drops (CANNOT_APPLY), and those it
    converts for a layer this model lacks (Wan 2.1's image branch, ``k_img``/``v_img``, on Wan 2.2
    A14B), which PEFT skips with a warning. The second kind is found by converting the file again on
    the meta device (shapes only, nothing allocated) and comparing the layers it names with the
    layers that got the adapter.
    """
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        renames = wan_lora_key_renames(keys) if _is_wan(pipe) else {}
        # Converters read alpha values (and only those): everything else can stay a shape.
        shapes = {renames.get(k, k): handle.get_tensor(k) if k.endswith(".alpha") else
                  torch.empty(handle.get_slice(k).get_shape(), device="meta") for k in keys}
    dropped = CANNOT_APPLY if _is_wan(pipe) else ()
    reasons = Counter(reason for key in shapes for pattern, reason in dropped if pattern.search(key))
    layers = [match.group(1) for key in type(pipe).lora_state_dict(shapes) if (match := _LORA_TENSOR.match(key))]
    landed = {name for name, module in model.named_modules() if adapter in (getattr(module, "lora_A", None) or {})}
    missing = tuple(sorted({name for name in layers if name not in landed}))
    if missing:
        reasons[NO_LAYER] = sum(name not in landed for name in layers)
    return Landing(len(keys), dict(reasons), missing)


def describe(name: str, where: str, landed: Landing) -> str:
    """One sentence for the job log, or "" when every key landed."""
    if not landed.not_applied:
        return ""
    import diffusers

    parts = [f"{count} {reason}" + (f" (e.g. {landed.missing_layers[0]})" if reason == NO_LAYER else "")
             for reason, count in landed.not_applied.items()]
    return (f"LoRA {name}: {sum(landed.not_applied.values())} of its {landed.keys} keys not applied to the {where}, "
            f"which diffusers {diffusers.__version__} cannot apply: {', '.join(parts)}")
