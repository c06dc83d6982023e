"""Qwen/Qwen-Image-Edit-2509 in miniature: the repo's layout, file names, config keys and values (only
the dimensions shrunk), bf16 storage and tensor names."""

from __future__ import annotations

from pathlib import Path

import torch

from diffbox.twins.files import cast, save_shards, save_vae, seeded, write_json
from diffbox.twins.text_encoders import QWEN_VL_TEXT, build_qwen_vl
from diffbox.twins.tokenizers import write_qwen_processor_configs, write_qwen_tokenizer
from diffbox.twins.wan import VAE_CONFIG as WAN_VAE_CONFIG

DIFFUSERS_VERSION = "0.36.0.dev0"

MODEL_INDEX = {
    "_class_name": "QwenImageEditPlusPipeline", "_diffusers_version": DIFFUSERS_VERSION,
    "processor": ["transformers", "Qwen2VLProcessor"], "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
    "tokenizer": ["transformers", "Qwen2Tokenizer"], "transformer": ["diffusers", "QwenImageTransformer2DModel"],
    "vae": ["diffusers", "AutoencoderKLQwenImage"],
}

# 24 heads x 128, 60 layers, joint_attention_dim 3584 (the text encoder's width) shrunk to 2 x 16, 2, 32;
# the rope axes (16, 56, 56) of a 128 head become (4, 6, 6) of a 16 head.
TRANSFORMER_CONFIG = {
    "_class_name": "QwenImageTransformer2DModel", "_diffusers_version": DIFFUSERS_VERSION,
    "attention_head_dim": 16, "axes_dims_rope": [4, 6, 6], "guidance_embeds": False, "in_channels": 64,
    "joint_attention_dim": QWEN_VL_TEXT["hidden_size"], "num_attention_heads": 2, "num_layers": 2,
    "out_channels": 16, "patch_size": 2,
}

VAE_CONFIG = {
    "_class_name": "AutoencoderKLQwenImage", "_diffusers_version": DIFFUSERS_VERSION, "attn_scales": [],
    "base_dim": 4, "dim_mult": [1, 2, 4, 4], "dropout": 0.0, "latents_mean": WAN_VAE_CONFIG["latents_mean"],
    "latents_std": WAN_VAE_CONFIG["latents_std"], "num_res_blocks": 1, "temperal_downsample": [False, True, True],
    "z_dim": 16,
}  # base_dim 96 and num_res_blocks 2 shrunk

SCHEDULER_CONFIG = {
    "_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": DIFFUSERS_VERSION,
    "base_image_seq_len": 256, "base_shift": 0.5, "invert_sigmas": False, "max_image_seq_len": 8192, "max_shift": 0.9,
    "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": 0.02, "stochastic_sampling": False,
    "time_shift_type": "exponential", "use_beta_sigmas": False, "use_dynamic_shifting": True,
    "use_exponential_sigmas": False, "use_karras_sigmas": False,
}

# Qwen2.5's added tokens after the 14 special ones (ids 151657-151664), not special.
QWEN_PLAIN_ADDED_TOKENS = ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                           "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")
SPECIAL_IDS = {"bos": "<|endoftext|>", "eos": "<|im_end|>", "image": "<|image_pad|>", "video": "<|video_pad|>",
               "vision_start": "<|vision_start|>", "vision_end": "<|vision_end|>", "vision_pad": "<|vision_pad|>"}


def qwen_transformer_weights(seed: int) -> dict[str, torch.Tensor]:
    """The transformer twin's weights (fp32, diffusers names): the reference for its single-file twins."""
    from diffusers import QwenImageTransformer2DModel

    with seeded(seed, "qwen.transformer"):
        model = QwenImageTransformer2DModel.from_config(TRANSFORMER_CONFIG)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def qwen_tokenizer():
    """The demo's BPE with Qwen2.5's 22 added tokens in their order (``<|endoftext|>`` first, as id 151643
    is in the original): 14 special, then the 8 plain ones."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    from diffbox.demo import QWEN_SPECIAL_TOKENS, train_qwen_bpe

    vocab, merges = train_qwen_bpe()
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|endoftext|>",
                               pad_token="<|endoftext|>")
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS],
                         special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_PLAIN_ADDED_TOKENS])
    return tokenizer


def build_qwen_pipeline(dest: Path, seed: int, *, legacy_text_encoder_keys: bool = True) -> None:
    from diffusers import AutoencoderKLQwenImage

    tokenizer = qwen_tokenizer()
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in SPECIAL_IDS.items()}
    save_shards(dest / "transformer", cast(qwen_transformer_weights(seed), torch.bfloat16),
                stem="diffusion_pytorch_model", count=5, index_name="diffusion_pytorch_model.safetensors.index.json")
    write_json(dest / "transformer" / "config.json", TRANSFORMER_CONFIG)
    build_qwen_vl(dest / "text_encoder", ids, len(tokenizer), seed, legacy_keys=legacy_text_encoder_keys)
    write_qwen_tokenizer(dest / "tokenizer", tokenizer, with_fast=False)
    write_qwen_tokenizer(dest / "processor", tokenizer, with_fast=True)
    write_qwen_processor_configs(dest / "processor")
    save_vae(dest / "vae", AutoencoderKLQwenImage, VAE_CONFIG, seed=seed, name="qwen.vae", dtype=torch.bfloat16)
    write_json(dest / "scheduler" / "scheduler_config.json", SCHEDULER_CONFIG)
    write_json(dest / "model_index.json", MODEL_INDEX)
