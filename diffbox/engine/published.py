"""The real published files diffbox can run, with their sizes: declared once, here.

Byte counts are the hub's file listings where it shows exact bytes; where it shows "GB" with three
digits, or nothing, they are derived from the parameter counts (parameters × bytes per value, plus a
header allowance) and marked ``exact=False``. The loaded sizes (``LOADED``) are what the app's own
header estimate (memory.estimate_component) gives for the real configs, checked against header-only
copies of the real shapes in tests/test_real_size.py; GGUF files are estimated from their size
(``quantized_estimate``). engine/pod_plan.py makes its choices with them.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffbox.engine.memory import ComponentEstimate

WAN_REPO = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
QWEN_REPO = "Qwen/Qwen-Image-Edit-2509"
COMFY_WAN = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"
WAN_GGUF = "QuantStack/Wan2.2-I2V-A14B-GGUF"
QWEN_GGUF = "QuantStack/Qwen-Image-Edit-2509-GGUF"
QWEN_LIGHTNING = "lightx2v/Qwen-Image-Lightning"
SVI = "vita-video-gen/svi-model"

WAN_EXPERT_PARAMS = 14_288_901_184
QWEN_TRANSFORMER_PARAMS = 20_430_401_088
HEADER = 2_000_000  # allowance for a safetensors header (Wan's 1095 tensors: ~110 kB per shard; GGUF metadata)
LORA_RANK_128_BF16 = 1_226_833_920  # SVI 2.0 Pro: 400 modules × rank 128 × (5120 + 5120 or 13824) × 2 B


@dataclass(frozen=True)
class PublishedFile:
    repo: str
    path: str
    bytes: int
    exact: bool = True  # False: derived, or the hub's three-digit figure
    source: str = "hf"


def _files(repo: str, sizes: dict[str, int], exact: bool = True) -> tuple[PublishedFile, ...]:
    return tuple(PublishedFile(repo, path, size, exact) for path, size in sizes.items())


# -- Wan 2.2 I2V A14B ------------------------------------------------------------------------------------------

# Everything of the -Diffusers repo but the two fp32 experts' weights: their configs stay (single-file experts
# are configured from them). Small files' sizes are the hub's rounded figures.
WAN_BASE = _files(WAN_REPO, {
    "text_encoder/model-00001-of-00003.safetensors": 4_935_812_536,
    "text_encoder/model-00002-of-00003.safetensors": 4_983_103_192,
    "text_encoder/model-00003-of-00003.safetensors": 1_442_935_480,
    "vae/diffusion_pytorch_model.safetensors": 507_591_892,
}) + _files(WAN_REPO, {
    "model_index.json": 1_000, "scheduler/scheduler_config.json": 1_000, "text_encoder/config.json": 855,
    "text_encoder/model.safetensors.index.json": 22_500, "tokenizer/special_tokens_map.json": 7_080,
    "tokenizer/spiece.model": 4_550_000, "tokenizer/tokenizer.json": 16_800_000,
    "tokenizer/tokenizer_config.json": 61_800, "vae/config.json": 1_500, "transformer/config.json": 1_000,
    "transformer_2/config.json": 1_000,
}, exact=False)


def _wan_pair(high: str, low: str, size: int, exact: bool, repo: str) -> dict[str, PublishedFile]:
    return {"transformer": PublishedFile(repo, high, size, exact), "transformer_2": PublishedFile(repo, low, size, exact)}


# Per expert variant: {component: file}. The -Diffusers repo's own experts (12 fp32 shards each, 57.2 GB) are
# not listed: Comfy-Org's fp16 files hold the same weights at half the download.
WAN_EXPERTS = {
    "fp16": _wan_pair("split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp16.safetensors",
                      "split_files/diffusion_models/wan2.2_i2v_low_noise_14B_fp16.safetensors",
                      WAN_EXPERT_PARAMS * 2 + HEADER, False, COMFY_WAN),  # hub: 28.6 GB
    "fp8_scaled": _wan_pair("split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
                            "split_files/diffusion_models/wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
                            14_350_000_000, False, COMFY_WAN),  # hub: 14.3 GB
    **{quant: _wan_pair(f"HighNoise/Wan2.2-I2V-A14B-HighNoise-{quant}.gguf",
                        f"LowNoise/Wan2.2-I2V-A14B-LowNoise-{quant}.gguf", size, exact, WAN_GGUF)
       for quant, size, exact in (("Q8_0", 15_450_000_000, False),  # ≈15.41 GB
                                  ("Q6_K", 12_003_652_096, True),
                                  ("Q5_K_M", 10_840_000_000, False),  # ≈10.79 GB
                                  ("Q4_K_M", 9_700_000_000, False))},  # ≈9.65 GB
}

# -- Finishing ------------------------------------------------------------------------------------------------

UPSCALER_REPO = "Comfy-Org/Real-ESRGAN_repackaged"
# RRDBNet(64 features, 23 blocks) in float32: 16.7 M parameters. Any pod holds it; tiles keep its VRAM small.
UPSCALER = PublishedFile(UPSCALER_REPO, "RealESRGAN_x4plus.safetensors", 66_857_836, exact=False)

SVI_LORAS = _files(SVI, {
    "version-2.0/SVI_Wan2.2-I2V-A14B_high_noise_lora_v2.0_pro.safetensors": LORA_RANK_128_BF16 + HEADER,
    "version-2.0/SVI_Wan2.2-I2V-A14B_low_noise_lora_v2.0_pro.safetensors": LORA_RANK_128_BF16 + HEADER,
}, exact=False)  # hub: 1.23 GB each

# -- Qwen-Image-Edit-2509 ------------------------------------------------------------------------------------

QWEN_BASE = _files(QWEN_REPO, {
    "text_encoder/model-00001-of-00004.safetensors": 4_970_000_000,
    "text_encoder/model-00002-of-00004.safetensors": 4_990_000_000,
    "text_encoder/model-00003-of-00004.safetensors": 4_930_000_000,
    "text_encoder/model-00004-of-00004.safetensors": 1_700_000_000,
    "vae/diffusion_pytorch_model.safetensors": 254_000_000,
    "model_index.json": 516, "scheduler/scheduler_config.json": 485, "transformer/config.json": 339,
    "vae/config.json": 730, "text_encoder/config.json": 3_220, "text_encoder/generation_config.json": 244,
    "text_encoder/model.safetensors.index.json": 57_700,
    **{f"tokenizer/{name}": size for name, size in (
        ("added_tokens.json", 605), ("chat_template.jinja", 2_430), ("merges.txt", 1_670_000),
        ("special_tokens_map.json", 613), ("tokenizer_config.json", 4_690), ("vocab.json", 3_380_000))},
    **{f"processor/{name}": size for name, size in (
        ("added_tokens.json", 605), ("chat_template.jinja", 1_020), ("merges.txt", 1_670_000),
        ("preprocessor_config.json", 788), ("special_tokens_map.json", 613), ("tokenizer.json", 11_400_000),
        ("tokenizer_config.json", 4_730), ("video_preprocessor_config.json", 904), ("vocab.json", 2_780_000))},
}, exact=False)

_QWEN_SHARD_1 = 9_970_000_000
QWEN_TRANSFORMERS = {
    "bf16": {"transformer": _files(QWEN_REPO, {
        "transformer/diffusion_pytorch_model.safetensors.index.json": 200_000,
        "transformer/diffusion_pytorch_model-00001-of-00005.safetensors": _QWEN_SHARD_1,
        **{f"transformer/diffusion_pytorch_model-0000{k}-of-00005.safetensors":
           (QWEN_TRANSFORMER_PARAMS * 2 - _QWEN_SHARD_1) // 4 + HEADER for k in range(2, 6)}}, exact=False)},
    "fp8_scaled": {"transformer": _files(QWEN_LIGHTNING, {
        "Qwen-Image-Edit-2509/qwen_image_edit_2509_fp8_e4m3fn_scaled.safetensors": 20_450_000_000}, exact=False)},
    **{quant: {"transformer": _files(QWEN_GGUF, {f"Qwen-Image-Edit-2509-{quant}.gguf": size})}
       for quant, size in (("Q8_0", 21_761_817_120), ("Q6_K", 16_824_990_240), ("Q5_K_M", 14_934_899_232),
                           ("Q4_K_M", 13_065_746_976), ("Q3_K_M", 9_764_502_048))},
}

# -- Loaded sizes ---------------------------------------------------------------------------------------------


def _estimate(name: str, total: int, outside: int, block: int, leaf: int, block_level: bool = True):
    return ComponentEstimate(name, total, outside, block, leaf, block_level)


# (model, component, dtype, weights) -> the header estimate at real size (tests/test_real_size.py checks them).
LOADED = {
    ("wan", "transformer", "bfloat16", "native"): _estimate("transformer", 28_636_170_368, 521_349_248,
                                                            702_870_528, 314_634_240),
    ("wan", "transformer", "bfloat16", "fp8"): _estimate("transformer", 14_582_855_808, 521_349_248,
                                                         351_537_664, 314_634_240),
    ("wan", "text_encoder", "bfloat16", "native"): _estimate("text_encoder", 11_361_820_672, 11_361_820_672, 0,
                                                             2_100_297_728, False),
    ("wan", "vae", "float32", "native"): _estimate("vae", 507_570_124, 507_570_124, 0, 15_926_784),
    ("qwen", "transformer", "bfloat16", "native"): _estimate("transformer", 40_860_802_176, 81_046_656,
                                                             679_662_592, 113_283_072),
    ("qwen", "transformer", "bfloat16", "fp8"): _estimate("transformer", 20_449_512_576, 59_604_096,
                                                          339_831_808, 56_641_536),
    ("qwen", "text_encoder", "bfloat16", "native"): _estimate("text_encoder", 16_584_333_312, 16_584_333_312, 0,
                                                              1_089_994_752, False),
    ("qwen", "vae", "bfloat16", "native"): _estimate("vae", 253_785_062, 253_785_062, 0, 7_963_392),
}
BLOCKS = {"wan": 40, "qwen": 60}
# diffusers keeps these Wan layers in float32 (_keep_in_fp32_modules): a GGUF file's copy is dequantised at load.
WAN_FP32_KEPT_EXTRA = 58_400_000


def quantized_estimate(model: str, name: str, file_bytes: int) -> ComponentEstimate:
    """A GGUF transformer in memory: its quantized tensors stay as stored (dequantised per layer at run time),
    so it takes about its file size, spread over the blocks like the bf16 model (the layers outside the
    blocks are kept 16/32-bit by the converters, so they keep their bf16 size)."""
    native = LOADED[(model, "transformer", "bfloat16", "native")]
    total = file_bytes + (WAN_FP32_KEPT_EXTRA if model == "wan" else 0)
    outside = native.outside_blocks_bytes
    block = -(-(total - outside) // BLOCKS[model])
    leaf = -(-native.largest_leaf_bytes * block // native.largest_block_bytes)
    return ComponentEstimate(name, total, outside, block, leaf, True)


def with_lora(estimate: ComponentEstimate, lora_bytes: int, blocks: int) -> ComponentEstimate:
    """A denoiser with a LoRA loaded: PEFT adds its layers in the compute dtype, spread over the blocks."""
    return ComponentEstimate(estimate.name, estimate.total_bytes + lora_bytes, estimate.outside_blocks_bytes,
                             estimate.largest_block_bytes + -(-lora_bytes // blocks),
                             estimate.largest_leaf_bytes, estimate.block_level)
