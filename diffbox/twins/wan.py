"""Wan-AI/Wan2.2-I2V-A14B-Diffusers in miniature: the repo's layout, file names, config keys and values
(only the dimensions shrunk), storage dtypes and tensor names."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from diffbox.twins.files import save_shards, save_vae, seeded, write_json
from diffbox.twins.text_encoders import build_umt5
from diffbox.twins.tokenizers import write_umt5_tokenizer

DIFFUSERS_VERSION = "0.35.0.dev0"

MODEL_INDEX = {
    "_class_name": "WanImageToVideoPipeline", "_diffusers_version": DIFFUSERS_VERSION, "boundary_ratio": 0.9,
    "image_encoder": [None, None], "image_processor": [None, None],
    "scheduler": ["diffusers", "UniPCMultistepScheduler"], "text_encoder": ["transformers", "UMT5EncoderModel"],
    "tokenizer": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "WanTransformer3DModel"],
    "transformer_2": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"],
}  # no expand_timesteps: it was added to diffusers the day after this repo's converter ran

# The real config with 40 heads x 128, ffn 13824, 40 layers, text_dim 4096 shrunk to 2 x 16, 64, 2, 32.
TRANSFORMER_CONFIG = {
    "_class_name": "WanTransformer3DModel", "_diffusers_version": DIFFUSERS_VERSION, "added_kv_proj_dim": None,
    "attention_head_dim": 16, "cross_attn_norm": True, "eps": 1e-06, "ffn_dim": 64, "freq_dim": 256,
    "image_dim": None, "in_channels": 36, "num_attention_heads": 2, "num_layers": 2, "out_channels": 16,
    "patch_size": [1, 2, 2], "pos_embed_seq_len": None, "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024, "text_dim": 32,
}
WIDTH = TRANSFORMER_CONFIG["num_attention_heads"] * TRANSFORMER_CONFIG["attention_head_dim"]
# The Wan 2.1-style config one commit of the repo showed (image_dim 1280, added_kv_proj_dim 5120); the
# weights never had an image embedder (the GGUF files of the same model have no img_emb tensors).
IMAGE_DIM_VARIANT = dict(TRANSFORMER_CONFIG, _diffusers_version="0.33.0.dev0", added_kv_proj_dim=WIDTH, image_dim=16)
del IMAGE_DIM_VARIANT["pos_embed_seq_len"]

VAE_CONFIG = {
    "_class_name": "AutoencoderKLWan", "_diffusers_version": DIFFUSERS_VERSION, "attn_scales": [], "base_dim": 4,
    "decoder_base_dim": None, "dim_mult": [1, 2, 4, 4], "dropout": 0.0, "in_channels": 3, "is_residual": False,
    "latents_mean": [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
                     -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
    "latents_std": [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
                    1.6382, 1.1253, 2.8251, 1.916],
    "num_res_blocks": 1, "out_channels": 3, "patch_size": None, "scale_factor_spatial": 8, "scale_factor_temporal": 4,
    "temperal_downsample": [False, True, True], "z_dim": 16,
}  # base_dim 96 and num_res_blocks 2 shrunk

SCHEDULER_CONFIG = {
    "_class_name": "UniPCMultistepScheduler", "_diffusers_version": DIFFUSERS_VERSION, "beta_end": 0.02,
    "beta_schedule": "linear", "beta_start": 0.0001, "disable_corrector": [], "dynamic_thresholding_ratio": 0.995,
    "final_sigmas_type": "zero", "flow_shift": 3.0, "lower_order_final": True, "num_train_timesteps": 1000,
    "predict_x0": True, "prediction_type": "flow_prediction", "rescale_betas_zero_snr": False, "sample_max_value": 1.0,
    "solver_order": 2, "solver_p": None, "solver_type": "bh2", "steps_offset": 0, "thresholding": False,
    "time_shift_type": "exponential", "timestep_spacing": "linspace", "trained_betas": None, "use_beta_sigmas": False,
    "use_dynamic_shifting": False, "use_exponential_sigmas": False, "use_flow_sigmas": True, "use_karras_sigmas": False,
}

EXPERT_FOLDERS = {"high": "transformer", "low": "transformer_2"}  # transformer = high-noise expert


def wan_expert_weights(which: str, seed: int) -> dict[str, torch.Tensor]:
    """The fp32 weights of one expert twin (``which`` = "high" or "low"), diffusers names: the reference
    every single-file twin of that expert is compared against."""
    from diffusers import WanTransformer3DModel

    with seeded(seed, f"wan.{which}"):
        model = WanTransformer3DModel.from_config(TRANSFORMER_CONFIG)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def build_wan_pipeline(dest: Path, seed: int, *, image_dim_variant: bool = False,
                       tokenizer_byte_fallback: bool = False) -> None:
    from diffusers import AutoencoderKLWan

    transformer_config = IMAGE_DIM_VARIANT if image_dim_variant else TRANSFORMER_CONFIG
    for which, folder in EXPERT_FOLDERS.items():
        # fp32 in 12 shards, as the converter's save_pretrained(max_shard_size="5GB") left 57 GB
        save_shards(dest / folder, wan_expert_weights(which, seed), stem="diffusion_pytorch_model", count=12,
                    index_name="diffusion_pytorch_model.safetensors.index.json")
        write_json(dest / folder / "config.json", transformer_config)
    vocab_size = write_umt5_tokenizer(dest / "tokenizer", byte_fallback=tokenizer_byte_fallback)
    # UMT5-XXL's embedding has 256384 rows: the tokenizer's 256300 rounded up to a multiple of 128.
    build_umt5(dest / "text_encoder", -(-vocab_size // 128) * 128, seed)
    save_vae(dest / "vae", AutoencoderKLWan, VAE_CONFIG, seed=seed, name="wan.vae", dtype=torch.float32)
    write_json(dest / "scheduler" / "scheduler_config.json", SCHEDULER_CONFIG)
    write_json(dest / "model_index.json", MODEL_INDEX)


# ---------------------------------------------------------------------------------------------
# Native (original Wan / ComfyUI / Kijai / GGUF) tensor names
# ---------------------------------------------------------------------------------------------

_NATIVE_RENAMES = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"), ("attn1", "self_attn"), ("attn2", "cross_attn"),
    (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"), ("proj_out", "head.head"),
]


def to_native_wan_keys(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers Wan transformer names -> the original Wan names (the inverse of diffusers'
    ``convert_wan_transformer_to_diffusers`` for the I2V A14B layers); diffusers' norm2/norm3 swap places."""
    native = {}
    for key, value in tensors.items():
        if key == "scale_shift_table":
            key = "head.modulation"
        key = re.sub(r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation", key)
        key = re.sub(r"\.norm([23])\.", lambda m: f".norm{5 - int(m.group(1))}.", key)
        for old, new in _NATIVE_RENAMES:
            key = key.replace(old, new)
        native[key] = value
    return native
