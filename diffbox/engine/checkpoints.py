"""What is inside a single-file checkpoint, and the tensors diffusers should get from it.

diffusers' ``from_single_file`` reads plain files (and GGUF) itself, but published files need help first:

- ComfyUI's scaled fp8. Each quantized Linear stores ``weight / scale`` in float8 plus its scale, in
  one of two formats (ComfyUI ``comfy/ops.py``, QUANTIZATION.md): the older ``.scale_weight`` (with
  ``.scale_input`` and a top-level ``scaled_fp8`` marker) or the newer ``.weight_scale`` /
  ``.input_scale`` with the quantized layers listed in the header metadata ``_quantization_metadata``
  or per layer in ``.comfy_quant`` tensors. diffusers applies neither scale: it would load the raw fp8
  numbers, which are the weights divided by a per-tensor scale, i.e. noise. Here every such weight is
  dequantised (fp8 x scale) into the compute dtype, one tensor at a time so no fp32 copy of the whole
  model is ever held. Formats other than float8 (int8 blocks, fp4) are refused by name.
- ComfyUI's ``model.diffusion_model.`` prefix, in safetensors and GGUF files alike: diffusers' mapping
  for QwenImageTransformer2DModel is the identity, so the prefix is stripped here for every model.
- Format markers that are not weights: ``scaled_fp8`` and ComfyUI's ``__index_timestep_zero__``, the
  empty tensor it saves with Qwen-Image-Edit-2511 (whose transformer config sets ``zero_cond_t``: the
  reference images' tokens get timestep 0). A file with that marker is loaded with ``zero_cond_t=True``
  whatever the base folder's config says (see ``config_overrides``).
- Layers diffusers keeps in float32 (``_keep_in_fp32_modules``: Wan's time embedder, modulation tables
  and norms). ``from_pretrained`` keeps them so, but ``from_single_file`` ends with ``model.to(dtype)``;
  ``fp32_values`` gives them back from the file at its stored precision (see loaders.load_single_file).
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
ZERO_COND_MARKER = "__index_timestep_zero__"
MARKERS = ("scaled_fp8", ZERO_COND_MARKER)  # tensors that flag a format, not weights
QWEN_EDIT_2511 = "Qwen/Qwen-Image-Edit-2511"
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


def checkpoint_keys(file: Path) -> list[str]:
    """The tensor names in a safetensors or GGUF file, from its header."""
    if file.suffix == ".gguf":
        import gguf

        return [tensor.name for tensor in gguf.GGUFReader(str(file)).tensors]
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        return list(handle.keys())


def config_overrides(file: Path, keys: list[str], class_name: str, base_config: dict) -> dict:
    """Config values the file's model needs whatever the base folder's config says: for a Qwen-Image
    transformer, ``zero_cond_t`` as ComfyUI's 2511 marker says (ComfyUI writes the marker into every
    2511 file it saves, so a prefixed file without it is no 2511). A file named 2511 that lacks the
    marker cannot be told apart from 2509 by its tensors, so it is refused over a base without
    ``zero_cond_t`` rather than run with the wrong timesteps."""
    if class_name != "QwenImageTransformer2DModel":
        return {}
    bare = {key.removeprefix(COMFY_PREFIX) for key in keys}
    if ZERO_COND_MARKER in bare or any(key.startswith(COMFY_PREFIX) for key in keys):
        return {"zero_cond_t": ZERO_COND_MARKER in bare}
    if "2511" in file.name and not base_config.get("zero_cond_t"):
        raise ValueError(f"{file.name} is a Qwen-Image-Edit-2511 transformer by its name, which needs "
                         f"zero_cond_t, but its base model's config lacks it: pick {QWEN_EDIT_2511} as the "
                         "base model")
    return {}


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


def state_dict_for_diffusers(file: Path, class_name: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The tensors to hand diffusers instead of the file: without ComfyUI's prefix, markers and scales,
    at their stored precision except fp8 weights, dequantised into ``dtype``. GGUF tensors stay quantized.

    Raises ValueError (naming the file) for a text encoder or a quantization format it cannot undo.
    """
    if file.suffix == ".gguf":
        from diffusers.models.model_loading_utils import load_gguf_checkpoint

        return {key.removeprefix(COMFY_PREFIX): value for key, value in load_gguf_checkpoint(str(file)).items()
                if key.removeprefix(COMFY_PREFIX) not in MARKERS}
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
        tensors, names = {}, set(keys)
        for key in keys:
            bare = key.removeprefix(COMFY_PREFIX)
            if bare in MARKERS or key.endswith(QUANT_EXTRAS):
                continue
            tensors[bare] = _read(handle, names, key, layers, dtype)
        return tensors


def fp32_values(model: torch.nn.Module, checkpoint: dict[str, torch.Tensor], file: Path) -> dict[str, torch.Tensor]:
    """float32 copies of the model's tensors in ``_keep_in_fp32_modules`` (diffusers' rule: a module of that
    name anywhere in the tensor's path), taken from ``checkpoint`` (what ``state_dict_for_diffusers`` gave
    diffusers, at the file's stored precision) under the names diffusers' own converter gave them. fp8
    weights among them are dequantised again from the file, straight into float32."""
    import torch
    from safetensors import safe_open

    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    wanted = [name for name in model.state_dict() if any(m in name.split(".") for m in keep)]
    if not wanted:
        return {}
    sources = _checkpoint_names(model, list(checkpoint))
    values = {name: checkpoint[sources[name]].to(torch.float32) for name in wanted}
    with safe_open(str(file), framework="pt") as handle:
        names = set(handle.keys())
        layers = quantized_layers(handle)
        for name in wanted:
            key = sources[name]
            if key.endswith(".weight") and key.removesuffix(".weight") in layers:
                stored = key if key in names else COMFY_PREFIX + key
                values[name] = _read(handle, names, stored, layers, torch.float32)
    return values


def _checkpoint_names(model: torch.nn.Module, keys: list[str]) -> dict[str, str]:
    """{model tensor name: checkpoint key}. diffusers converts a checkpoint whose keys are not exactly the
    model's with the class's mapping function; running that function over placeholder tensors shows which
    key became which name (it renames, it does not copy)."""
    import torch
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    expected = set(model.state_dict())
    if set(keys) == expected:
        return {key: key for key in keys}
    placeholders = {key: torch.empty(0) for key in keys}
    origin = {id(tensor): key for key, tensor in placeholders.items()}
    convert = SINGLE_FILE_LOADABLE_CLASSES[type(model).__name__]["checkpoint_mapping_fn"]
    converted = convert(checkpoint=dict(placeholders), config=model.config)
    return {name: origin[id(tensor)] for name, tensor in converted.items() if id(tensor) in origin}


def _read(handle, names: set[str], key: str, layers: dict[str, str], dtype: torch.dtype) -> torch.Tensor:
    """One tensor of an open file: fp8 weights of scaled layers dequantised into ``dtype``, the rest as stored."""
    value = handle.get_tensor(key)
    layer = key.removeprefix(COMFY_PREFIX).removesuffix(".weight")
    if key.endswith(".weight") and layer in layers:
        return _dequantize(handle, names, key, value, layers[layer], dtype)
    return value


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
