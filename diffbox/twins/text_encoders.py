"""Text encoders as transformers 4.5x saved them (the originals were saved by 4.5x).

What differs from a transformers 5 save, checked against saves made with transformers 4.54.1 and 4.56.2:

- UMT5: ``config.json`` carries ``torch_dtype`` (4.56 renamed it ``dtype``), ``scalable_attention``,
  ``tokenizer_class`` and the ``_name_or_path`` of the model it was loaded from (google/umt5-xxl: 855 B at
  the real dimensions); the tied input embedding is stored once, as ``shared.weight``.
- Qwen2.5-VL: 4.52+ models name their modules ``model.language_model.*`` / ``model.visual.*`` but
  ``save_pretrained`` reversed that mapping, so files hold ``model.layers.*`` / ``model.embed_tokens`` /
  ``model.norm`` / ``visual.*`` ("legacy"). Which layout the real Qwen-Image-Edit-2509 text encoder has is
  not confirmed, so both are twinned. The config keeps the flat keys plus ``text_config``/``vision_config``.
- Both: ``model.safetensors.index.json`` metadata holds ``total_parameters`` as well as ``total_size``.

Their tokenizers are in tokenizers.py.
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffbox.twins.files import cast, rename, save_shards, seeded, write_json
from diffbox.twins.tokenizers import TRANSFORMERS_4X

# ---------------------------------------------------------------------------------------------
# UMT5 (Wan's text encoder): google/umt5-xxl config, tiny dimensions
# ---------------------------------------------------------------------------------------------

UMT5_DIMS = dict(d_model=32, d_kv=8, d_ff=32, num_layers=2, num_heads=4)


def umt5_config(vocab_size: int) -> dict:
    layers = UMT5_DIMS["num_layers"]
    return {"_name_or_path": "google/umt5-xxl", "architectures": ["UMT5EncoderModel"], "classifier_dropout": 0.0,
            "decoder_start_token_id": 0, "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 1,
            "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0, "is_encoder_decoder": True,
            "is_gated_act": True, "layer_norm_epsilon": 1e-06, "model_type": "umt5", "num_decoder_layers": layers,
            "output_past": True, "pad_token_id": 0, "relative_attention_max_distance": 128,
            "relative_attention_num_buckets": 32, "scalable_attention": True, "tie_word_embeddings": False,
            "tokenizer_class": "T5Tokenizer", "torch_dtype": "bfloat16", "transformers_version": TRANSFORMERS_4X,
            "use_cache": True, "vocab_size": vocab_size, **UMT5_DIMS}


def build_umt5(folder: Path, vocab_size: int, seed: int) -> None:
    """``config.json`` + bf16 ``model-0000k-of-00003.safetensors`` + ``model.safetensors.index.json``."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = umt5_config(vocab_size)
    with seeded(seed, "umt5"):
        model = UMT5EncoderModel(UMT5Config.from_dict(config))
    tensors = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}  # tied
    save_shards(folder, cast(tensors, torch.bfloat16), stem="model", count=3, index_name="model.safetensors.index.json",
                total_parameters=True)
    write_json(folder / "config.json", config)


# ---------------------------------------------------------------------------------------------
# Qwen2.5-VL-7B-Instruct (Qwen-Image's text encoder), tiny dimensions
# ---------------------------------------------------------------------------------------------

QWEN_VL_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_window_layers=2)
QWEN_VL_VISION = dict(depth=2, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=32,
                      fullatt_block_indexes=[1])
QWEN_VL_MROPE = [1, 1, 2]  # sums to head_dim / 2 = 4, like [16, 24, 24] for the real 128
# transformers 5 module names -> what 4.5x wrote into the files ("legacy").
LEGACY_QWEN_VL_KEYS = [("model.language_model.", "model."), ("model.visual.", "visual.")]


def qwen_vl_config(ids: dict[str, int], vocab_size: int) -> dict:
    """The 4.5x save of Qwen2.5-VL-7B-Instruct's config: flat text keys, ``text_config`` repeating them."""
    rope = {"mrope_section": QWEN_VL_MROPE, "rope_type": "default", "type": "default"}
    flat = {"attention_dropout": 0.0, "bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "hidden_act": "silu",
            "initializer_range": 0.02, "max_position_embeddings": 128000, "rms_norm_eps": 1e-06,
            "rope_scaling": rope, "rope_theta": 1000000.0, "use_cache": True, "use_sliding_window": False,
            "vocab_size": vocab_size, **QWEN_VL_TEXT}
    special = {"image_token_id": ids["image"], "video_token_id": ids["video"],
               "vision_start_token_id": ids["vision_start"], "vision_end_token_id": ids["vision_end"],
               "vision_token_id": ids["vision_pad"]}
    text_config = dict(flat, architectures=["Qwen2_5_VLForConditionalGeneration"], image_token_id=None,
                       layer_types=["full_attention"] * QWEN_VL_TEXT["num_hidden_layers"],
                       model_type="qwen2_5_vl_text", sliding_window=None, torch_dtype="bfloat16",
                       video_token_id=None, vision_end_token_id=ids["vision_end"],
                       vision_start_token_id=ids["vision_start"], vision_token_id=ids["vision_pad"])
    vision = dict(QWEN_VL_VISION, hidden_act="silu", in_channels=3, in_chans=3, initializer_range=0.02,
                  model_type="qwen2_5_vl", patch_size=14, spatial_merge_size=2, spatial_patch_size=14,
                  temporal_patch_size=2, tokens_per_second=2, window_size=112)
    return dict(flat, **special, architectures=["Qwen2_5_VLForConditionalGeneration"], model_type="qwen2_5_vl",
                sliding_window=32768, text_config=text_config, tie_word_embeddings=False, torch_dtype="bfloat16",
                transformers_version=TRANSFORMERS_4X, vision_config=vision)


def build_qwen_vl(folder: Path, ids: dict[str, int], vocab_size: int, seed: int, *, legacy_keys: bool) -> None:
    """``config.json``, ``generation_config.json`` and bf16 ``model-0000k-of-00004.safetensors`` + index."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = qwen_vl_config(ids, vocab_size)
    with seeded(seed, "qwen2.5-vl"):
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig.from_dict(config))
    tensors = cast(model.state_dict(), torch.bfloat16)
    if legacy_keys:
        tensors = rename(tensors, LEGACY_QWEN_VL_KEYS)
    save_shards(folder, tensors, stem="model", count=4, index_name="model.safetensors.index.json",
                total_parameters=True)
    write_json(folder / "config.json", config)
    write_json(folder / "generation_config.json", {
        "bos_token_id": ids["bos"], "do_sample": True, "eos_token_id": [ids["eos"], ids["bos"]],
        "pad_token_id": ids["bos"], "repetition_penalty": 1.05, "temperature": 0.1, "top_k": 1, "top_p": 0.001,
        "transformers_version": TRANSFORMERS_4X})
