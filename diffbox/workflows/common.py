"""Parameters every diffusion workflow shares, declared once: LoRA entries, step cache, attention,
dtype, VAE dtype, weight storage and placement. Each workflow's spec includes them instead of re-typing them.
"""

from __future__ import annotations

from typing import Any, Callable

from diffbox.engine import tuning
from diffbox.engine.memory import MODES, WEIGHTS
from diffbox.engine.loaders import DTYPES
from diffbox.params import Param

LORA_WEIGHT_RANGE = (-4.0, 4.0)


def lora_entry(weights: tuple[str, ...]) -> Callable[[Any], dict]:
    """A validator for one LoRA entry {"name", <weights>…}; a bare name means weight 1 everywhere.

    Wan has a weight per expert ("weight_high", "weight_low"); Qwen has one transformer ("weight").
    """
    shape = "{" + ", ".join(['"name": "..."', *(f'"{w}": 1.0' for w in weights)]) + "}"

    def clean(value: Any) -> dict:
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"].strip():
            raise ValueError(f"must look like {shape}")
        unknown = set(value) - {"name", *weights}
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
        entry = {"name": value["name"].strip()}
        low, high = LORA_WEIGHT_RANGE
        for key in weights:
            weight = value.get(key, 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not low <= weight <= high:
                raise ValueError(f"{key} must be a number between {low:g} and {high:g}, got {weight!r}")
            entry[key] = float(weight)
        return entry

    return clean


STEP_CACHE_PARAMS = (
    Param("step_cache", "choice", "off", "Skip transformer work on steps that barely change "
          "(First-Block Cache): faster, slightly softer.", tier="expert", choices=tuning.STEP_CACHES),
    Param("step_cache_threshold", "float", 0.05, "First-Block Cache threshold: higher skips more.",
          tier="expert", minimum=0.0, maximum=1.0, step=0.01),
    Param("attention_backend", "choice", "native", "Attention kernel (native = PyTorch SDPA; others need "
          "their package installed).", tier="expert", choices=tuning.ATTENTION_BACKENDS),
)


def vae_dtype_param(default: str, why: str) -> Param:
    """The VAE's own dtype, declared once; each workflow picks its default and says why in the help."""
    return Param("vae_dtype", "choice", default, f"dtype of the VAE alone (auto = the compute dtype). {why}",
                 tier="expert", choices=("auto", *DTYPES))


MEMORY_PARAMS = (
    Param("dtype", "choice", "auto", "Compute dtype; auto = bfloat16 on GPU, float32 on CPU.", tier="expert",
          choices=("auto", *DTYPES)),
    Param("weights", "choice", "auto", "Weight storage; auto picks fp8 only when the model would not fit "
          "otherwise; int8 needs torchao.", tier="expert", choices=("auto", *WEIGHTS)),
    Param("placement", "choice", "auto", "Where the model lives; auto picks the fastest that fits in VRAM.",
          tier="expert", choices=("auto", *(m for m in MODES if m != "cpu"))),
)
