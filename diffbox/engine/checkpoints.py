"""What is inside a single-file checkpoint, and the tensors diffusers should get from it.

diffusers' ``from_single_file`` reads plain files (and GGUF) itself. Three kinds of published file
need help first:

- ComfyUI's scaled fp8. Each quantized Linear stores ``weight / scale`` in float8 plus its scale, in
  one of two formats (ComfyUI ``comfy/ops.py``, QUANTIZATION.md): the older ``.scale_weight`` (with
  ``.scale_input`` and a top-level ``scaled_fp8`` marker) or the newer ``.weight_scale`` /
  ``.input_scale`` with the quantized layers listed in the header metadata ``_quantization_metadata``
  or per layer in ``.comfy_quant`` tensors. diffusers applies neither scale: it would load the raw fp8
  numbers, which are the weights divided by a per-tensor scale, i.e. noise. Here every such weight is
  dequantised (fp8 x scale) into the compute dtype, one tensor at a time so no fp32 copy of the whole
  model is ever held. Formats other than float8 (int8 blocks, fp4) are refused by name.
- Qwen-Image transformers under ComfyUI's ``model.diffusion_model.`` prefix: diffusers' single-file
  mapping for QwenImageTransformer2DModel is the identity, so the prefix is stripped here. (Its Wan
  converter strips the prefix itself.)
- Text encoders (UMT5, Qwen2.5-VL) saved as single files: diffbox takes text encoders from the base
  model's own folder, so these are refused with a sentence saying so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only when loading: the library imports text_encoder_family to sort files
    import torch

FP8_FORMATS = ("float8_e4m3fn", "float8_e5m2")
OLD_SCALE, NEW_SCALE = ".scale_weight", ".weight_scale"
QUANT_EXTRAS = (".scale_weight", ".scale_input", ".weight_scale", ".input_scale", ".comfy_quant", ".weight_scale_2",
                ".pre_quant_scale")
COMFY_PREFIX = "model.diffusion_model."
# Models whose single-file mapping in diffusers keeps keys as they are (so a prefix must go first).
IDENTITY_MAPPED = ("QwenImageTransformer2DModel", "QwenImageControlNetModel")
TEXT_ENCODER_KEYS = {
    "UMT5 / T5": re.compile(r"^(?:encoder\.block\.\d+\.layer\.\d+\.|shared\.weight$)"),
    "Qwen2.5-VL": re.compile(r"^(?:model\.(?:language_model\.)?layers\.\d+\.|(?:model\.)?visual\.blocks\.)"),
}


def text_encoder_family(keys) -> str | None:
    """"UMT5 / T5" or "Qwen2.5-VL" when the tensor names are a text encoder's, else None."""
    keys = list(keys)
    for family, pattern in TEXT_ENCODER_KEYS.items():
        if keys and sum(bool(pattern.match(k)) for k in keys) > len(keys) // 2:
            return family
    return None


def quantized_layers(handle) -> dict[str, str]:
    """{layer name (without ComfyUI's prefix): storage format} of the scaled layers in an open safetensors
    file, from their scale tensors, the header's layer list or their ``.comfy_quant`` tensors ({} for none)."""
    keys = list(handle.keys())
    layers = {k.removesuffix(s): "float8_e4m3fn" for k in keys for s in (OLD_SCALE, NEW_SCALE) if k.endswith(s)}
    listed = json.loads((handle.metadata() or {}).get("_quantization_metadata") or "{}").get("layers", {})
    for name in [k for k in keys if k.endswith(".comfy_quant")]:
        listed[name.removesuffix(".comfy_quant")] = json.loads(bytes(handle.get_tensor(name).tolist()))
    layers |= {name: str(conf.get("format", "")) for name, conf in listed.items()}
    return {name.removeprefix(COMFY_PREFIX): fmt for name, fmt in layers.items()}


def state_dict_for_diffusers(file: Path, class_name: str, dtype: torch.dtype) -> dict[str, torch.Tensor] | None:
    """The tensors to hand diffusers instead of the file, or None when diffusers reads the file as it is.

    Raises ValueError (naming the file) for a text encoder or a quantization format it cannot undo.
    """
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        keys = list(handle.keys())
        family = text_encoder_family(k.removeprefix(COMFY_PREFIX) for k in keys)
        if family:
            raise ValueError(f"{file.name} is a {family} text encoder, not a {class_name}; diffbox takes text "
                             "encoders from the base model's diffusers folder (its text_encoder/), so pick the "
                             "model's -Diffusers repo and use single files only for its transformers")
        layers = quantized_layers(handle)
        unsupported = {fmt for fmt in layers.values() if fmt not in FP8_FORMATS}
        if unsupported:
            raise ValueError(f"{file.name} stores weights as {', '.join(sorted(unsupported))}, which diffbox cannot "
                             "dequantise; use the model's bf16/fp16 file (fp8 weight storage is a setting here) "
                             "or a GGUF file")
        strip = class_name in IDENTITY_MAPPED and any(k.startswith(COMFY_PREFIX) for k in keys)
        if not layers and not strip:
            return None
        tensors, names = {}, set(keys)
        for key in keys:
            bare = key.removeprefix(COMFY_PREFIX)
            if bare == "scaled_fp8" or key.endswith(QUANT_EXTRAS):
                continue
            value = handle.get_tensor(key)
            if key.endswith(".weight") and bare.removesuffix(".weight") in layers:
                value = _dequantize(handle, names, key, value, layers[bare.removesuffix(".weight")], dtype)
            tensors[bare if strip else key] = value
        return tensors


def _dequantize(handle, names: set[str], key: str, value: torch.Tensor, fmt: str, dtype: torch.dtype) -> torch.Tensor:
    import torch

    layer = key.removesuffix(".weight")
    scale_key = next((layer + s for s in (OLD_SCALE, NEW_SCALE) if layer + s in names), None)
    if value.dtype == torch.uint8:  # the newer format may keep fp8 bytes in a uint8 container
        value = value.view(getattr(torch, fmt))
    if scale_key is None:  # listed as fp8 but unscaled: the fp8 values are the weights
        return value.to(dtype)
    scale = handle.get_tensor(scale_key).float()
    if scale.numel() not in (1, value.shape[0]):
        raise ValueError(f"{key}: a {tuple(scale.shape)} scale for a {tuple(value.shape)} weight is not a "
                         "per-tensor or per-row fp8 scale")
    scale = scale.reshape(-1, *([1] * (value.ndim - 1))) if scale.numel() > 1 else scale.reshape(())
    return (value.float() * scale).to(dtype)
