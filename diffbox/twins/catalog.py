"""Every twin and the published file it stands for: the one list docs/twins.md and README's
"Verified with" table mirror (a test keeps them in step)."""

from __future__ import annotations

from functools import partial

import torch

from diffbox.engine.published import COMFY_WAN, QWEN_LIGHTNING, QWEN_REPO, SVI, WAN_REPO
from diffbox.twins.loras import build_lora, lora_tensors, qwen_modules, wan_modules, x2v_distill_tensors
from diffbox.twins.qwen import build_qwen_pipeline, qwen_transformer_weights
from diffbox.twins.registry import Original, Twin
from diffbox.twins.upscalers import UPSCALERS
from diffbox.twins.single_files import (CITY96_WAN_HIGH_PRECISION, COMFY_PREFIX, QWEN_GGUF_HIGH_PRECISION,
                                        build_file, build_gguf, qwen_vl_file_weights,
                                        umt5_file_weights, wan_file_weights)
from diffbox.twins.wan import build_wan_pipeline

PIPELINES = [
    Twin("wan2.2-i2v-a14b-diffusers", "pipeline", Original(WAN_REPO),
         "loads through the app's loader in bf16 with both experts and runs a job",
         {"layout": "transformer/ + transformer_2/ (12 shards + index each), text_encoder/ (3 shards + index), "
                    "tokenizer/, vae/, scheduler/, model_index.json",
          "dtype": "experts fp32, text encoder bf16, VAE fp32",
          "keys": "diffusers WanTransformer3DModel names; UMT5 `shared.weight` + `encoder.block.N...` "
                  "(transformers 4.5x save: config `_name_or_path` google/umt5-xxl, index `total_parameters`)",
          "config": "boundary_ratio 0.9, image_encoder/image_processor null, T5TokenizerFast, no expand_timesteps; "
                    "UniPC flow_shift 3.0",
          "tokenizer": "UMT5 layout (<pad> 0, </s> 1, <s> 2, <unk> 3, byte pieces, 300 `<extra_id_N>`), spiece.model "
                       "with byte fallback and nmt_nfkc; tokenizer.json, tokenizer_config.json (61.8 kB at real ids) "
                       "and special_tokens_map.json (7.08 kB) as transformers 4.54.1 re-saves them"},
         partial(build_wan_pipeline, image_dim_variant=False), library=("diffusers", "wan2.2-i2v"),
         unconfirmed=("model_index/_diffusers_version and scheduler_config verbatim",
                      "transformer config image_dim null (one repo commit showed 1280: see the -image-dim twin)",
                      "text encoder transformers_version (855 B fits an 11-character dev version)",
                      "tokenizer.json byte_fallback false (see the -tokenizer-byte-fallback twin)")),
    Twin("wan2.2-i2v-a14b-diffusers-tokenizer-byte-fallback", "pipeline", Original(WAN_REPO),
         "with byte fallback set in tokenizer.json, a prompt character outside the vocabulary becomes its bytes, "
         "as sentencepiece itself encodes it, and the pipeline runs",
         {"tokenizer": "as the main twin, tokenizer.json's Unigram `byte_fallback` true"},
         partial(build_wan_pipeline, tokenizer_byte_fallback=True), library=("diffusers", "wan2.2-i2v"),
         unconfirmed=("whether google/umt5-xxl's tokenizer.json sets byte_fallback",)),
    Twin("wan2.2-i2v-a14b-diffusers-image-dim", "pipeline", Original(WAN_REPO, revision="348da65e (config commit)"),
         "a Wan 2.1-style expert config (image_dim, added_kv_proj_dim) over weights without an image embedder "
         "loads as the weights are (no random image layers) and runs a job",
         {"config": "image_dim 1280 / added_kv_proj_dim 5120 (shrunk), _diffusers_version 0.33.0.dev0",
          "keys": "same shards as the main twin: no condition_embedder.image_embedder, no add_k_proj"},
         partial(build_wan_pipeline, image_dim_variant=True), library=("diffusers", "wan2.2-i2v"),
         unconfirmed=("whether this config is the one on main",)),
    Twin("qwen-image-edit-2509", "pipeline", Original(QWEN_REPO),
         "loads through the app's loader in bf16 as QwenImageEditPlusPipeline and runs an edit",
         {"layout": "transformer/ (5 shards + index), text_encoder/ (4 shards + index + generation_config.json), "
                    "tokenizer/ and processor/ (slow-tokenizer files), vae/, scheduler/, model_index.json",
          "dtype": "bf16 everywhere",
          "keys": "Qwen2.5-VL `model.layers.*` / `visual.*` as transformers 4.5x's save_pretrained wrote them",
          "config": "QwenImageEditPlusPipeline, Qwen2VLProcessor, Qwen2Tokenizer; FlowMatchEuler base_shift 0.5, "
                    "max_shift 0.9, shift_terminal 0.02",
          "tokenizer": "Qwen2.5's 22 added tokens in order (added_tokens.json 605 B at real ids), "
                       "special_tokens_map.json with plain-string additional tokens (613 B)"},
         partial(build_qwen_pipeline, legacy_text_encoder_keys=True), library=("diffusers", "qwen-edit"),
         unconfirmed=("text encoder key layout (see the -te-new-keys twin)", "_diffusers_version strings",
                      "preprocessor_config.json values", "chat_template.jinja text")),
    Twin("qwen-image-edit-2509-te-new-keys", "pipeline", Original(QWEN_REPO),
         "a Qwen2.5-VL text encoder in the 4.52+ module layout loads with every weight too",
         {"keys": "Qwen2.5-VL `model.language_model.*` / `model.visual.*`"},
         partial(build_qwen_pipeline, legacy_text_encoder_keys=False), library=("diffusers", "qwen-edit"),
         unconfirmed=("whether the real file uses this layout",)),
]



def _lora(name: str, original: Original, proves: str, facts: dict, tensors, dtype: torch.dtype, target: str,
          base: str = "wan2.2-i2v", unconfirmed: tuple[str, ...] = ()) -> Twin:
    facts = {"dtype": str(dtype).removeprefix("torch."), **facts}
    return Twin(name, "lora", original, proves, facts, partial(build_lora, tensors=tensors, dtype=dtype),
                library=("lora", base), target=target, unconfirmed=unconfirmed)


def _wan(style: str, which: str, **kwargs):
    return lambda seed: lora_tensors(wan_modules(), style, seed=seed, name=f"{style}.{which}", **kwargs)


KIJAI = "Kijai/WanVideo_comfy"
LIGHTNING = "lightx2v/Wan2.2-Lightning"
DISTILL = "lightx2v/Wan2.2-Distill-Loras"
SVI_KEYS = {"keys": "`blocks.N.{self,cross}_attn.{q,k,v,o}` and `blocks.N.ffn.{0,2}` + `.lora_{A,B}.default.weight`, "
                    "no prefix, no alpha (scale 1)", "rank": "128 (8 in the twin)"}
SEKO_KEYS = {"keys": "`diffusion_model.<native module>.lora_{down,up}.weight` + `.alpha`, self/cross attention "
                     "and ffn.0/ffn.2", "alpha/rank": "8/64 = 0.125 (1/8 in the twin)"}
QWEN_LIGHTNING_KEYS = {"keys": "`transformer_blocks.N.attn.{to_q,...,to_add_out}` and `{img,txt}_mlp.net.{0.proj,2}` "
                               "+ `.lora_{down,up}.weight` + `.alpha`", "alpha/rank": "8/64 (1/8 in the twin)"}
DISTILL_KEYS = ("`diffusion_model.` + lora_down/up pairs (alpha folded, no `.alpha`) for attention, ffn, "
                "text_embedding.{0,2}, time_embedding.{0,2}, time_projection.1, with their `.diff_b`; whole deltas for "
                "what the real expert holds under 1M values: norm `.diff`/`.diff_b`, `blocks.N.diff_m`, `head.diff_m`, "
                "`head.head.diff`/`.diff_b`, 5-D `patch_embedding.diff` + `.diff_b`")
LOW_ONLY = {"proves": ", Wan 2.1's k_img/v_img among them",
            "keys": "; `cross_attn.k_img`/`v_img` pairs (this file only)"}
DISTILL_UNCONFIRMED = ("the extractor's rules and the two file sizes fix the key set; the low-noise file is ~50 kB "
                       "smaller than that set plus k_img/v_img implies (some small delta absent)",
                       "no `k_img`/`v_img` biases, `norm_k_img` or `img_emb` (no room for them in the sizes)")

LORAS = []
for which, expert in (("high", "HIGH"), ("low", "LOW")):
    LORAS += [
        _lora(f"svi-2.0-pro-{which}", Original(SVI, f"version-2.0/SVI_Wan2.2-I2V-A14B_{which}_noise_lora_v2.0_pro"
                                                    ".safetensors"),
              f"the official SVI 2.0 Pro LoRA (DiffSynth keys) loads into the {which}-noise expert only",
              SVI_KEYS, _wan("diffsynth", which), torch.bfloat16, which,
              unconfirmed=("bf16 vs fp16 (the -fp16 twin)", "full key list beyond block 31's self_attn.k")),
        _lora(f"svi-2.0-pro-{which}-fp16", Original(SVI, f"version-2.0/SVI_Wan2.2-I2V-A14B_{which}_noise_lora_v2.0_pro"
                                                         ".safetensors"),
              "the same file stored in fp16 loads the same way", SVI_KEYS, _wan("diffsynth", which),
              torch.float16, which, unconfirmed=("whether the original is fp16",)),
        _lora(f"kijai-svi-{which}-down-up", Original(KIJAI, f"LoRAs/Stable-Video-Infinity/v2.0/SVI_v2_PRO_Wan2.2-I2V-"
                                                             f"A14B_{expert}_lora_rank_128_fp16.safetensors"),
              f"Kijai's ComfyUI conversion loads into the {which}-noise expert",
              {"keys": "`diffusion_model.<native module>.lora_{down,up}.weight`, no alpha"},
              _wan("kohya", which, prefix="diffusion_model."), torch.float16, which,
              unconfirmed=("key style (lora_down/up or lora_A/B: the -lora-ab twin)",)),
        _lora(f"kijai-svi-{which}-lora-ab", Original(KIJAI, f"LoRAs/Stable-Video-Infinity/v2.0/SVI_v2_PRO_Wan2.2-I2V-"
                                                             f"A14B_{expert}_lora_rank_128_fp16.safetensors"),
              "the lora_A/lora_B spelling of that conversion loads too",
              {"keys": "`diffusion_model.<native module>.lora_{A,B}.weight`, no alpha"},
              _wan("peft", which, prefix="diffusion_model."), torch.float16, which,
              unconfirmed=("key style",)),
        _lora(f"lightning-seko-v1-{which}", Original(LIGHTNING, "Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1/"
                                                                f"{which}_noise_model.safetensors"),
              "Lightning loads with its alpha: the applied delta is B·A·alpha/rank", SEKO_KEYS,
              _wan("kohya", which, alpha=1.0, prefix="diffusion_model."), torch.float32, which,
              unconfirmed=("alpha value 8",)),
        _lora(f"lightning-seko-v1-{which}-unprefixed", Original(LIGHTNING, "Wan2.2-I2V-A14B-4steps-lora-rank64-"
                                                                           f"Seko-V1/{which}_noise_model.safetensors"),
              "the same keys without `diffusion_model.` (its loader accepts both) load too",
              {**SEKO_KEYS, "keys": "`<native module>.lora_{down,up}.weight` + `.alpha`"},
              _wan("kohya", which, alpha=1.0), torch.float32, which, unconfirmed=("prefix present or not",)),
        _lora(f"distill-1022-{which}", Original(DISTILL, f"wan2.2_i2v_A14b_{which}_noise_lora_rank64_lightx2v_4step_"
                                                          "1022.safetensors"),
              "lightx2v's distill LoRA lands every pair and bias delta on its expert (the time embedder's in fp32); "
              "the job log counts the keys diffusers cannot apply" + (LOW_ONLY["proves"] if which == "low" else ""),
              {"keys": DISTILL_KEYS + (LOW_ONLY["keys"] if which == "low" else ""), "rank": "64 (8 in the twin)"},
              lambda seed, which=which: x2v_distill_tensors(which, seed=seed, name=f"x2v.{which}"), torch.bfloat16,
              which, unconfirmed=DISTILL_UNCONFIRMED),
        _lora(f"comfy-lightx2v-v1-{which}", Original(COMFY_WAN, "split_files/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_"
                                                                f"{which}_noise.safetensors"),
              "ComfyUI's renamed copy of Seko V1 loads by its keys (its name says nothing of the expert)",
              SEKO_KEYS, _wan("kohya", which, alpha=1.0, prefix="diffusion_model."), torch.float32, which),
    ]
LORAS += [
    _lora("musubi-wan22", Original("github:kohya-ss/musubi-tuner", "wan22_i2v_lora.safetensors",
                                   "training output format"),
          "a musubi-tuner LoRA (`lora_unet_` names) loads into both experts",
          {"keys": "`lora_unet_blocks_N_self_attn_q.lora_{down,up}.weight` + `.alpha`", "alpha/rank": "4/8"},
          _wan("musubi", "both", alpha=4.0), torch.bfloat16, "both"),
]
for steps, dtype in (("8steps", torch.bfloat16), ("4steps", torch.float32)):
    suffix = "bf16" if dtype == torch.bfloat16 else "fp32"
    for prefixed in (False, True):
        file = f"Qwen-Image-Edit-2509/Qwen-Image-Edit-2509-Lightning-{steps}-V1.0-{suffix}.safetensors"
        LORAS.append(_lora(
            f"qwen-2509-lightning-{steps}-{suffix}" + ("-prefixed" if prefixed else ""), Original(QWEN_LIGHTNING, file),
            "Qwen-Image-Edit-2509-Lightning loads with its alpha: the applied delta is B·A·alpha/rank",
            {**QWEN_LIGHTNING_KEYS, **({"prefix": "diffusion_model."} if prefixed else {})},
            lambda seed, p=prefixed: lora_tensors(qwen_modules(), "kohya", seed=seed, name="qwen.lightning", alpha=1.0,
                                                  prefix="diffusion_model." if p else ""),
            dtype, "transformer", base="qwen-edit", unconfirmed=("in-file key names, alpha 8, prefix",)))



def _file(name: str, original: Original, proves: str, facts: dict, build, target: str, base: str,
          kind: str = "checkpoint", refused: str = "", unconfirmed: tuple[str, ...] = ()) -> Twin:
    return Twin(name, "single_file", original, proves, facts, build, library=(kind, base), target=target,
                refused=refused, unconfirmed=unconfirmed)


def _wan_file(which: str, dtype: torch.dtype, **storage):
    return partial(build_file, weights=partial(wan_file_weights, which), dtype=dtype, **storage)


def _qwen_file(dtype: torch.dtype, **storage):
    return partial(build_file, weights=qwen_transformer_weights, dtype=dtype, **storage)


def _qwen_gguf(**layout):
    return partial(build_gguf, weights=qwen_transformer_weights, arch="qwen_image",
                   high_precision=QWEN_GGUF_HIGH_PRECISION, **layout)


def _wan_gguf(**layout):
    return partial(build_gguf, weights=partial(wan_file_weights, "high"), arch="wan",
                   high_precision=CITY96_WAN_HIGH_PRECISION, **layout)


COMFY_QWEN = "Comfy-Org/Qwen-Image-Edit_ComfyUI"
NATIVE = "original Wan names (`blocks.N.self_attn.q`, `ffn.0`, `head.head`, `blocks.N.modulation`)"
EXPERT = {"high": "transformer", "low": "transformer_2"}
SINGLE_FILES = []
for which in ("high", "low"):
    SINGLE_FILES.append(_file(
        f"comfy-wan2.2-i2v-{which}-fp16", Original(COMFY_WAN, f"split_files/diffusion_models/wan2.2_i2v_{which}_noise_"
                                                              "14B_fp16.safetensors"),
        f"loads as the {which}-noise expert with weights equal to the diffusers folder's",
        {"dtype": "fp16", "keys": f"`model.diffusion_model.` + {NATIVE}"},
        _wan_file(which, torch.float16, prefix=COMFY_PREFIX), EXPERT[which], "wan2.2-i2v",
        unconfirmed=("prefix present (the -unprefixed twin covers its absence)",)))
SINGLE_FILES += [
    _file("comfy-wan2.2-i2v-high-fp16-unprefixed", Original(COMFY_WAN, "split_files/diffusion_models/wan2.2_i2v_high_"
                                                                       "noise_14B_fp16.safetensors"),
          "the same file without the prefix loads the same", {"dtype": "fp16", "keys": NATIVE},
          _wan_file("high", torch.float16), "transformer", "wan2.2-i2v", unconfirmed=("prefix",)),
    _file("comfy-wan2.2-i2v-high-fp8-scaled", Original(COMFY_WAN, "split_files/diffusion_models/wan2.2_i2v_high_noise_"
                                                                  "14B_fp8_scaled.safetensors"),
          "ComfyUI's older scaled fp8 is dequantised (weight x scale_weight) to within fp8 error of the reference",
          {"dtype": "Linear weights float8_e4m3fn + fp32 `.scale_weight` (some `.scale_input`), rest fp16, "
                    "`scaled_fp8` marker", "keys": f"`model.diffusion_model.` + {NATIVE}"},
          _wan_file("high", torch.float16, prefix=COMFY_PREFIX, fp8="scaled"), "transformer", "wan2.2-i2v",
          unconfirmed=("prefix", "which layers carry scale_input")),
    _file("comfy-wan2.2-i2v-high-fp8-scaled-unprefixed",
          Original(COMFY_WAN, "split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"),
          "laid out as the measured T2V sibling (no prefix, `scale_input` everywhere, empty marker) it loads too, "
          "its fp8 time embedder dequantised straight into fp32",
          {"dtype": "every Linear weight (blocks and embeddings) float8_e4m3fn + fp32 `.scale_weight` and "
                    "`.scale_input`; modulation, patch_embedding, norms and biases fp16",
           "marker": "`scaled_fp8` = torch.tensor([], dtype=float8_e4m3fn), as ComfyUI's save writes it",
           "keys": NATIVE},
          _wan_file("high", torch.float16, fp8="scaled", scale_input="all", marker="empty"), "transformer",
          "wan2.2-i2v", unconfirmed=("that the I2V files match the T2V sibling",)),
    _file("kijai-wan2.2-i2v-high-bf16", Original(KIJAI, "Wan2_2-I2V-A14B-HIGH_bf16.safetensors"),
          "Kijai's bf16 expert (unprefixed native names) loads equal to the reference in bf16",
          {"dtype": "bf16", "keys": NATIVE}, _wan_file("high", torch.bfloat16), "transformer", "wan2.2-i2v"),
    _file("kijai-wan2.2-i2v-low-fp8-scaled-kj",
          Original("Kijai/WanVideo_comfy_fp8_scaled", "I2V/Wan2_2-I2V-A14B-LOW_fp8_e4m3fn_scaled_KJ.safetensors"),
          "Kijai's scaled fp8 (block Linears only, no marker) is dequantised to within fp8 error",
          {"dtype": "block Linear weights float8_e4m3fn + `.scale_weight`, the rest fp32", "keys": NATIVE},
          _wan_file("low", torch.float32, fp8="scaled", blocks_only=True), "transformer_2", "wan2.2-i2v",
          unconfirmed=("`scaled_fp8` marker present or not",)),
    _file("quantstack-wan2.2-i2v-high-q8_0", Original("QuantStack/Wan2.2-I2V-A14B-GGUF", "HighNoise/Wan2.2-I2V-A14B-"
                                                                                         "HighNoise-Q8_0.gguf"),
          "the GGUF expert loads with its block Linears quantized, the layers city96's tools keep unquantized "
          "left so, and dequantises to within Q8_0 error of the reference",
          {"dtype": "block Linear weights Q8_0; text_embedding, time_embedding, time_projection, head.head F16 "
                    "(city96's lcpp.patch); 1-D tensors, modulation and the 5-D patch_embedding F32",
           "keys": f"arch `wan`, {NATIVE}"},
          _wan_gguf(), "transformer", "wan2.2-i2v",
          unconfirmed=("F16 or BF16 for the kept layers (the -bf16-kept twin)",)),
    _file("quantstack-wan2.2-i2v-high-q8_0-bf16-kept",
          Original("QuantStack/Wan2.2-I2V-A14B-GGUF", "HighNoise/Wan2.2-I2V-A14B-HighNoise-Q8_0.gguf"),
          "converted from a bf16 source, the kept layers are BF16 GGUF tensors; it loads the same",
          {"dtype": "as the main GGUF twin, the kept layers BF16", "keys": f"arch `wan`, {NATIVE}"},
          _wan_gguf(high_precision_type="BF16"), "transformer", "wan2.2-i2v", unconfirmed=("kept layers' type",)),
    _file("quantstack-wan2.2-i2v-high-q8_0-prefixed",
          Original("QuantStack/Wan2.2-I2V-A14B-GGUF", "HighNoise/Wan2.2-I2V-A14B-HighNoise-Q8_0.gguf"),
          "a GGUF converted with ComfyUI's `model.diffusion_model.` prefix still on its names loads the same",
          {"keys": f"`model.diffusion_model.` + {NATIVE}"}, _wan_gguf(prefix=COMFY_PREFIX), "transformer",
          "wan2.2-i2v", unconfirmed=("whether any published GGUF keeps the prefix",)),
    _file("comfy-qwen-2509-bf16", Original(COMFY_QWEN, "split_files/diffusion_models/qwen_image_edit_2509_bf16"
                                                       ".safetensors"),
          "the Comfy bf16 transformer loads equal to the reference", {"dtype": "bf16", "keys": "diffusers names"},
          _qwen_file(torch.bfloat16), "transformer", "qwen-edit",
          unconfirmed=("`model.diffusion_model.` prefix (the -prefixed twin)",)),
    _file("comfy-qwen-2509-bf16-prefixed", Original(COMFY_QWEN, "split_files/diffusion_models/qwen_image_edit_2509_"
                                                                "bf16.safetensors"),
          "with a `model.diffusion_model.` prefix it loads too (diffusers' Qwen mapping is the identity)",
          {"dtype": "bf16", "keys": "`model.diffusion_model.` + diffusers names"},
          _qwen_file(torch.bfloat16, prefix=COMFY_PREFIX), "transformer", "qwen-edit", unconfirmed=("prefix",)),
    _file("comfy-qwen-2509-fp8-e4m3fn", Original(COMFY_QWEN, "split_files/diffusion_models/qwen_image_edit_2509_fp8_"
                                                             "e4m3fn.safetensors"),
          "plain fp8 (no scales) loads as its fp8 values, within fp8 error of the reference",
          {"dtype": "block Linear weights float8_e4m3fn, the rest bf16", "keys": "diffusers names"},
          _qwen_file(torch.bfloat16, fp8="plain", blocks_only=True), "transformer", "qwen-edit",
          unconfirmed=("no scale keys", "prefix",
                       "which tensors are fp8: the 20.4 GB file size rules out block Linears alone (20.5 GB); the "
                       "-all-fp8 twin has the published layout")),
    _file("comfy-qwen-2509-fp8-e4m3fn-all-fp8", Original(COMFY_QWEN, "split_files/diffusion_models/qwen_image_edit_"
                                                                     "2509_fp8_e4m3fn.safetensors"),
          "laid out as its measured sibling (qwen_image_2512_fp8_e4m3fn: every tensor fp8, prefixed) it loads to "
          "within fp8 error in bf16",
          {"dtype": "every tensor float8_e4m3fn (norms and biases too), no scales",
           "keys": "`model.diffusion_model.` + diffusers names"},
          _qwen_file(torch.bfloat16, prefix=COMFY_PREFIX, fp8="plain_all"), "transformer", "qwen-edit",
          unconfirmed=("that the 2509 file matches the 2512 sibling",)),
    _file("lightx2v-qwen-2509-fp8-scaled", Original(QWEN_LIGHTNING, "Qwen-Image-Edit-2509/qwen_image_edit_2509_fp8_"
                                                                    "e4m3fn_scaled.safetensors"),
          "lightx2v's scaled fp8 Qwen transformer is dequantised to within fp8 error",
          {"dtype": "block Linear weights float8_e4m3fn + `.scale_weight`, `scaled_fp8` marker, the rest bf16",
           "keys": "diffusers names"},
          _qwen_file(torch.bfloat16, fp8="scaled", blocks_only=True), "transformer", "qwen-edit",
          unconfirmed=("scale key names (older or newer ComfyUI format)", "which Linears are fp8: the 20.4 GB file "
                       "size rules out block Linears alone; the -all-linear twin has the published layout")),
    _file("lightx2v-qwen-2509-fp8-scaled-all-linear",
          Original(QWEN_LIGHTNING, "Qwen-Image-Edit-2509/qwen_image_edit_2509_fp8_e4m3fn_scaled.safetensors"),
          "with the Linears outside the blocks quantized too (what its size implies) it is dequantised the same",
          {"dtype": "every Linear weight float8_e4m3fn + `.scale_weight`, `scaled_fp8` marker, the rest bf16",
           "keys": "diffusers names"},
          _qwen_file(torch.bfloat16, fp8="scaled"), "transformer", "qwen-edit",
          unconfirmed=("scale key names (older or newer ComfyUI format)",)),
    _file("comfy-qwen-2511-fp8mixed", Original(COMFY_QWEN, "split_files/diffusion_models/qwen_image_edit_2511_"
                                                           "fp8mixed.safetensors"),
          "ComfyUI's newer format (`_quantization_metadata` header, `.weight_scale`) is dequantised, and its 2511 "
          "marker loads it with zero_cond_t over the 2509 folder",
          {"dtype": "most block Linear weights float8_e4m3fn + `.weight_scale`, block 0's modulation bf16",
           "metadata": "`_quantization_metadata` {format_version, layers: {name: {format}}}",
           "marker": "`__index_timestep_zero__` (empty), which ComfyUI saves with every 2511 model",
           "keys": "`model.diffusion_model.` + diffusers names"},
          _qwen_file(torch.bfloat16, prefix=COMFY_PREFIX, fp8="comfy_quant", blocks_only=True, zero_cond_marker=True,
                     keep_unquantized=("transformer_blocks.0.img_mod", "transformer_blocks.0.txt_mod")),
          "transformer", "qwen-edit", unconfirmed=("exact per-file contents; 2511 shares 2509's layers",)),
    _file("comfy-qwen-2511-fp8mixed-prefixed-metadata", Original(COMFY_QWEN, "split_files/diffusion_models/qwen_"
                                                                             "image_edit_2511_fp8mixed.safetensors"),
          "with the layer names in `_quantization_metadata` prefixed like the tensors it loads the same",
          {"metadata": "`_quantization_metadata` layers named `model.diffusion_model.<layer>`",
           "marker": "`__index_timestep_zero__`"},
          _qwen_file(torch.bfloat16, prefix=COMFY_PREFIX, fp8="comfy_quant", blocks_only=True, zero_cond_marker=True,
                     prefixed_layer_names=True), "transformer", "qwen-edit",
          unconfirmed=("whether the metadata's layer names carry the prefix",)),
    _file("comfy-qwen-2511-fp8mixed-comfy-quant-tensors", Original(COMFY_QWEN, "split_files/diffusion_models/qwen_"
                                                                               "image_edit_2511_fp8mixed.safetensors"),
          "the newer format with per-layer `.comfy_quant` tensors instead of the header is dequantised too",
          {"dtype": "block Linear weights float8_e4m3fn + `.weight_scale` + `.comfy_quant` (JSON bytes)",
           "keys": "`model.diffusion_model.` + diffusers names"},
          _qwen_file(torch.bfloat16, prefix=COMFY_PREFIX, fp8="comfy_quant_tensors", blocks_only=True,
                     zero_cond_marker=True),
          "transformer", "qwen-edit", unconfirmed=("whether published files carry the tensors or the header",)),
    _file("comfy-qwen-2511-bf16", Original(COMFY_QWEN, "split_files/diffusion_models/qwen_image_edit_2511_bf16"
                                                       ".safetensors"),
          "the bf16 2511 transformer loads over the 2509 folder with zero_cond_t, as its marker says, and edits",
          {"dtype": "bf16", "marker": "`__index_timestep_zero__`",
           "keys": "`model.diffusion_model.` + diffusers names"},
          _qwen_file(torch.bfloat16, prefix=COMFY_PREFIX, zero_cond_marker=True), "transformer", "qwen-edit",
          unconfirmed=("prefix (ComfyUI's save writes it)",)),
    _file("quantstack-qwen-2509-q8_0",
          Original("QuantStack/Qwen-Image-Edit-2509-GGUF", "Qwen-Image-Edit-2509-Q8_0.gguf"),
          "the Qwen GGUF loads quantized and dequantises to within Q8_0 error of the reference",
          {"dtype": "block Linear weights Q8_0; img_in, txt_in, time_text_embed, norm_out, proj_out F16; 1-D F32",
           "keys": "arch `qwen_image`, diffusers names"},
          _qwen_gguf(), "transformer", "qwen-edit",
          unconfirmed=("which layers stay 16-bit, and F16 or BF16: derived from the Q8_0 file's size",)),
    _file("quantstack-qwen-2509-q8_0-prefixed",
          Original("QuantStack/Qwen-Image-Edit-2509-GGUF", "Qwen-Image-Edit-2509-Q8_0.gguf"),
          "a Qwen GGUF with ComfyUI's `model.diffusion_model.` prefix loads too (the prefix is stripped)",
          {"keys": "arch `qwen_image`, `model.diffusion_model.` + diffusers names"},
          _qwen_gguf(prefix=COMFY_PREFIX), "transformer", "qwen-edit",
          unconfirmed=("whether any published Qwen GGUF keeps the prefix",)),
    _file("comfy-umt5-xxl-fp16", Original("Comfy-Org/Wan_2.1_ComfyUI_repackaged", "split_files/text_encoders/umt5_xxl_"
                                                                                 "fp16.safetensors"),
          "a text-encoder single file is refused with a sentence saying what to use",
          {"dtype": "fp16", "keys": "`shared.weight`, `encoder.block.N.layer.0.SelfAttention.q.weight`"},
          partial(build_file, weights=umt5_file_weights, dtype=torch.float16), "text_encoder", "unknown",
          kind="text_encoder", refused="text encoder", unconfirmed=("key names",)),
    _file("comfy-qwen2.5-vl-7b", Original("Comfy-Org/Qwen-Image_ComfyUI", "split_files/text_encoders/qwen_2.5_vl_7b"
                                                                          ".safetensors"),
          "a Qwen2.5-VL single file is refused with a sentence saying what to use",
          {"dtype": "bf16", "keys": "`model.layers.N...`, `visual.blocks.N...`, `lm_head.weight`"},
          partial(build_file, weights=qwen_vl_file_weights, dtype=torch.bfloat16), "text_encoder", "qwen-image",
          kind="text_encoder", refused="text encoder", unconfirmed=("key names",)),
]

TWINS: dict[str, Twin] = {twin.name: twin for twin in [*PIPELINES, *LORAS, *SINGLE_FILES, *UPSCALERS]}
