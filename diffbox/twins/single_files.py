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
ZERO_COND_MARKER = "__index_timestep_zero__"


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
          keep_unquantized: tuple[str, ...] = (), scale_input: str = "ffn",
          marker: str = "zeros") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, header metadata) in ``dtype`` with the Linear weights stored as ``fp8`` says:
    "" (not at all), "plain", "plain_all" (every tensor, norms and biases too), "scaled" (older ComfyUI),
    "comfy_quant" (newer, header metadata) or "comfy_quant_tensors" (newer, per-layer ``.comfy_quant``
    tensors). Layers whose name contains one of ``keep_unquantized`` stay in ``dtype`` (the "mixed" in
    fp8mixed). "scaled" files carry ``.scale_input`` on the ffn layers or on ``scale_input="all"`` of them,
    and a ``scaled_fp8`` marker: ``marker="zeros"`` (two fp8 zeros, as Kijai's and lightx2v's scripts
    write it) or "empty" (``torch.tensor([], dtype=fp8)``, as ComfyUI's own save writes it)."""
    stored, layers = {}, {}
    for key, value in tensors.items():
        if fp8 == "plain_all":
            stored[key] = value.to(torch.float8_e4m3fn)
            continue
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
            if scale_input == "all" or ".ffn." in key:
                stored[f"{layer}.scale_input"] = torch.tensor(1.0)
        else:
            stored[f"{layer}.weight_scale"] = scale
            layers[layer] = {"format": "float8_e4m3fn"}
            if fp8 == "comfy_quant_tensors":
                stored[f"{layer}.comfy_quant"] = torch.tensor(list(json.dumps(layers[layer]).encode()),
                                                              dtype=torch.uint8)
    metadata = {}
    if fp8 == "scaled":
        stored["scaled_fp8"] = torch.zeros(2 if marker == "zeros" else 0, dtype=torch.float8_e4m3fn)
    elif fp8 == "comfy_quant":
        metadata["_quantization_metadata"] = json.dumps({"format_version": "1.0", "layers": layers})
    return stored, metadata


def build_file(dest: Path, seed: int, *, weights, dtype: torch.dtype, prefix: str = "", zero_cond_marker: bool = False,
               prefixed_layer_names: bool = False, **storage) -> None:
    """``weights(seed)`` stored as ``store`` says under ``prefix``; ``zero_cond_marker`` adds the empty
    ``__index_timestep_zero__`` tensor ComfyUI saves with Qwen-Image-Edit-2511; ``prefixed_layer_names``
    writes the layer names in ``_quantization_metadata`` with the prefix too."""
    tensors, metadata = store(weights(seed), dtype, **storage)
    if zero_cond_marker:
        tensors[ZERO_COND_MARKER] = torch.tensor([])
    if prefixed_layer_names and "_quantization_metadata" in metadata:
        listed = json.loads(metadata["_quantization_metadata"])
        listed["layers"] = {prefix + name: conf for name, conf in listed["layers"].items()}
        metadata["_quantization_metadata"] = json.dumps(listed)
    save_tensors(dest, {prefix + k: v for k, v in tensors.items()}, metadata=metadata)


# Tensors city96's llama.cpp patch (tools/lcpp.patch) keeps out of quantization for Wan: their names hold one
# of these. They stay in the 16-bit type of the GGUF the quantizer started from.
CITY96_WAN_HIGH_PRECISION = ("text_embedding.", "time_embedding.", "time_projection.", "head.", "patch_embedding.",
                             "img_emb.", "modulation")
# The Qwen-Image transformer's Linears outside its blocks: QuantStack's Q8_0 file is 21,761,817,120 B, which
# is Q8_0 blocks with these in 16 bits plus a 148 kB header (all in Q8_0 it would be 38 MB smaller).
QWEN_GGUF_HIGH_PRECISION = ("img_in.", "txt_in.", "time_text_embed.", "norm_out.", "proj_out.")


def gguf_type(key: str, shape: tuple[int, ...], *, high_precision: tuple[str, ...] = (),
              high_precision_type: str = "F16") -> str:
    """The GGML type city96's tools give a tensor: 1-D, 3-D (``.modulation``) and the 5-D patch embedding F32
    (convert.py, fix_5d_tensors.py); names in ``high_precision`` F16 or BF16; other 2-D weights Q8_0, or
    F16 where a row is not a whole number of 32-value blocks."""
    if len(shape) != 2 or key.endswith("modulation"):
        return "F32"
    if any(part in key for part in high_precision):
        return high_precision_type
    return "Q8_0" if shape[-1] % 32 == 0 else "F16"


def build_gguf(dest: Path, seed: int, *, weights, arch: str, prefix: str = "", high_precision: tuple[str, ...] = (),
               high_precision_type: str = "F16") -> None:
    """A GGUF file as city96's tools write one: ``general.architecture`` = arch, tensor types as ``gguf_type``
    says, the 5-D patch embedding written after the rest as ``fix_5d_tensors.py`` appends it."""
    import gguf

    dest.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(dest), arch=arch)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    tensors = weights(seed)
    for key in sorted(tensors, key=lambda k: tensors[k].ndim == 5):  # stable: only the 5-D ones move last
        array = tensors[key].float().numpy()
        qtype = gguf.GGMLQuantizationType[gguf_type(key, array.shape, high_precision=high_precision,
                                                    high_precision_type=high_precision_type)]
        writer.add_tensor(prefix + key, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
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
