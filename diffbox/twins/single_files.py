"""Single-file twins: ComfyUI / Kijai / QuantStack repackagings of the Wan 2.2 experts and the
Qwen-Image-Edit transformer, and ComfyUI's text-encoder files. Each holds the pipeline twin's own
weights (so a load can be compared with the reference) in the original's names, prefix and storage.

fp8 storage, as ComfyUI writes it (``comfy/ops.py``, QUANTIZATION.md):

- plain: the Linear weights cast to float8_e4m3fn, nothing else (``..._fp8_e4m3fn``);
- "scaled_fp8" (older): per Linear ``.weight`` = weight / scale in fp8 and ``.scale_weight`` (fp32 scalar),
  optionally ``.scale_input``, and a top-level ``scaled_fp8`` marker tensor;
- "comfy_quant" (newer): the same pairs named ``.weight_scale`` / ``.input_scale``, with the quantized
  layers listed in the header metadata ``_quantization_metadata`` ({"format_version", "layers": {name:
  {"format": ...}}}) or per layer in a ``.comfy_quant`` tensor holding that JSON as bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diffbox.twins.files import rename, save_tensors, seeded
from diffbox.twins.text_encoders import LEGACY_QWEN_VL_KEYS, QWEN_VL_TEXT, QWEN_VL_VISION, UMT5_DIMS
from diffbox.twins.wan import to_native_wan_keys, wan_expert_weights

FP8_MAX = 448.0  # float8_e4m3fn's largest finite value
COMFY_PREFIX = "model.diffusion_model."


def wan_file_weights(which: str, seed: int) -> dict[str, torch.Tensor]:
    return to_native_wan_keys(wan_expert_weights(which, seed))


def is_linear_weight(key: str, value: torch.Tensor, *, blocks_only: bool) -> bool:
    inside = "blocks." in key
    return key.endswith(".weight") and value.ndim == 2 and (inside or not blocks_only)


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor absmax scaling into float8_e4m3fn: (fp8 values, fp32 scalar scale)."""
    scale = (weight.float().abs().max() / FP8_MAX).clamp(min=1e-12)
    return (weight.float() / scale).to(torch.float8_e4m3fn), scale.to(torch.float32)


def store(tensors: dict[str, torch.Tensor], dtype: torch.dtype, *, fp8: str = "", blocks_only: bool = False,
          keep_unquantized: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, header metadata) in ``dtype`` with the Linear weights stored as ``fp8`` says:
    "" (not at all), "plain", "scaled" (older ComfyUI), "comfy_quant" (newer, header metadata) or
    "comfy_quant_tensors" (newer, per-layer ``.comfy_quant`` tensors). Layers whose name contains one
    of ``keep_unquantized`` stay in ``dtype`` (the "mixed" in fp8mixed)."""
    stored, layers = {}, {}
    for key, value in tensors.items():
        quantized = fp8 and is_linear_weight(key, value, blocks_only=blocks_only) and not any(
            part in key for part in keep_unquantized)
        if not quantized:
            stored[key] = value.to(dtype)
            continue
        layer = key.removesuffix(".weight")
        if fp8 == "plain":
            stored[key] = value.to(torch.float8_e4m3fn)
            continue
        stored[key], scale = quantize(value)
        if fp8 == "scaled":
            stored[f"{layer}.scale_weight"] = scale
            if ".ffn." in key:  # some layers also carry an activation scale
                stored[f"{layer}.scale_input"] = torch.tensor(1.0)
        else:
            stored[f"{layer}.weight_scale"] = scale
            layers[layer] = {"format": "float8_e4m3fn"}
            if fp8 == "comfy_quant_tensors":
                stored[f"{layer}.comfy_quant"] = torch.tensor(list(json.dumps(layers[layer]).encode()),
                                                              dtype=torch.uint8)
    metadata = {}
    if fp8 == "scaled":
        stored["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    elif fp8 == "comfy_quant":
        metadata["_quantization_metadata"] = json.dumps({"format_version": "1.0", "layers": layers})
    return stored, metadata


def build_file(dest: Path, seed: int, *, weights, dtype: torch.dtype, prefix: str = "", **storage) -> None:
    tensors, metadata = store(weights(seed), dtype, **storage)
    save_tensors(dest, {prefix + k: v for k, v in tensors.items()}, metadata=metadata)


def build_gguf(dest: Path, seed: int, *, weights, arch: str) -> None:
    """A GGUF file as city96's tools write one: 2-D weights Q8_0 (F16 where a row is not a whole number
    of 32-value blocks), 1-D tensors and the 5-D patch embedding F32 (``fix_5d_tensors`` puts it back
    5-D), ``general.architecture`` = arch."""
    import gguf

    dest.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(dest), arch=arch)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    for key, value in weights(seed).items():
        array = value.float().numpy()
        if array.ndim == 2 and array.shape[-1] % 32 == 0:
            writer.add_tensor(key, gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        elif array.ndim == 2:
            writer.add_tensor(key, array.astype("float16"))
        else:
            writer.add_tensor(key, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# ---------------------------------------------------------------------------------------------
# Text encoders as single files (ComfyUI's text_encoders/ folder)
# ---------------------------------------------------------------------------------------------


def umt5_file_weights(seed: int) -> dict[str, torch.Tensor]:
    """UMT5-XXL encoder under the Hugging Face T5 names ComfyUI keeps (`encoder.block.N.layer.0.SelfAttention.q`)."""
    from transformers import UMT5Config, UMT5EncoderModel

    with seeded(seed, "comfy.umt5"):
        model = UMT5EncoderModel(UMT5Config(vocab_size=256, **UMT5_DIMS))
    return {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}


def qwen_vl_file_weights(seed: int) -> dict[str, torch.Tensor]:
    """Qwen2.5-VL-7B under its checkpoint names (`model.layers.N...`, `visual.blocks.N...`, `lm_head`)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(text_config=dict(QWEN_VL_TEXT, vocab_size=256, bos_token_id=0, eos_token_id=1,
                                               rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2],
                                                                "rope_theta": 1e6}),
                              vision_config=QWEN_VL_VISION)
    with seeded(seed, "comfy.qwen2.5-vl"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    return rename(model.state_dict(), LEGACY_QWEN_VL_KEYS)
