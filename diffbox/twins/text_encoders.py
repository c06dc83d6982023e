"""Text encoders and tokenizers as transformers 4.5x saved them (the originals were saved by 4.5x).

What differs from a transformers 5 save, checked against saves made with transformers 4.54.1 and 4.56.2:

- UMT5: ``config.json`` carries ``torch_dtype`` (4.56 renamed it ``dtype``), ``scalable_attention`` and
  ``tokenizer_class``; the tied input embedding is stored once, as ``shared.weight``.
- Qwen2.5-VL: 4.52+ models name their modules ``model.language_model.*`` / ``model.visual.*`` but
  ``save_pretrained`` reversed that mapping, so files hold ``model.layers.*`` / ``model.embed_tokens`` /
  ``model.norm`` / ``visual.*`` ("legacy"). Which layout the real Qwen-Image-Edit-2509 text encoder has is
  not confirmed, so both are twinned. The config keeps the flat keys plus ``text_config``/``vision_config``.
- Tokenizers: the slow-tokenizer files (``vocab.json`` + ``merges.txt``, ``spiece.model``) with
  ``added_tokens.json`` / ``special_tokens_map.json``, which transformers 5 no longer writes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from diffbox.twins.files import cast, rename, save_shards, seeded, write_json

TRANSFORMERS_4X = "4.54.1"  # the exact 4.5x version of the originals is not confirmed

# ---------------------------------------------------------------------------------------------
# UMT5 (Wan's text encoder): google/umt5-xxl config, tiny dimensions
# ---------------------------------------------------------------------------------------------

UMT5_DIMS = dict(d_model=32, d_kv=8, d_ff=32, num_layers=2, num_heads=4)


def umt5_config(vocab_size: int) -> dict:
    layers = UMT5_DIMS["num_layers"]
    return {"architectures": ["UMT5EncoderModel"], "classifier_dropout": 0.0, "decoder_start_token_id": 0,
            "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
            "initializer_factor": 1.0, "is_encoder_decoder": True, "is_gated_act": True, "layer_norm_epsilon": 1e-06,
            "model_type": "umt5", "num_decoder_layers": layers, "output_past": True, "pad_token_id": 0,
            "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
            "scalable_attention": True, "tie_word_embeddings": False, "tokenizer_class": "T5Tokenizer",
            "torch_dtype": "bfloat16", "transformers_version": TRANSFORMERS_4X, "use_cache": True,
            "vocab_size": vocab_size, **UMT5_DIMS}


def build_umt5(folder: Path, vocab_size: int, seed: int) -> None:
    """``config.json`` + bf16 ``model-0000k-of-00003.safetensors`` + ``model.safetensors.index.json``."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = umt5_config(vocab_size)
    with seeded(seed, "umt5"):
        model = UMT5EncoderModel(UMT5Config.from_dict(config))
    tensors = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}  # tied
    save_shards(folder, cast(tensors, torch.bfloat16), stem="model", count=3, index_name="model.safetensors.index.json")
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
    save_shards(folder, tensors, stem="model", count=4, index_name="model.safetensors.index.json")
    write_json(folder / "config.json", config)
    write_json(folder / "generation_config.json", {
        "bos_token_id": ids["bos"], "do_sample": True, "eos_token_id": [ids["eos"], ids["bos"]],
        "pad_token_id": ids["bos"], "repetition_penalty": 1.05, "temperature": 0.1, "top_k": 1, "top_p": 0.001,
        "transformers_version": TRANSFORMERS_4X})


# ---------------------------------------------------------------------------------------------
# Tokenizer files
# ---------------------------------------------------------------------------------------------

# A plain ChatML template: the file is there like in the original, but the pipelines build their own
# prompt template and never apply it, so its exact text does not matter.
CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
                 "+ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                 "{% endif %}")


def _token_entry(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


def write_qwen_tokenizer(folder: Path, tokenizer, *, with_fast: bool) -> None:
    """Qwen2Tokenizer's 4.5x files: vocab.json, merges.txt, added_tokens.json, special_tokens_map.json,
    tokenizer_config.json, chat_template.jinja (+ tokenizer.json when ``with_fast``, as in processor/)."""
    fast = json.loads(tokenizer.backend_tokenizer.to_str())
    added = {t["content"]: t["id"] for t in fast["added_tokens"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in fast["model"]["merges"]]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(fast["model"]["vocab"], ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    write_json(folder / "added_tokens.json", added)
    extra = [t for t in added if t not in ("<|endoftext|>", "<|im_end|>")]
    write_json(folder / "special_tokens_map.json", {
        "additional_special_tokens": [_token_entry(t) for t in extra],
        "eos_token": _token_entry("<|im_end|>"), "pad_token": _token_entry("<|endoftext|>")})
    write_json(folder / "tokenizer_config.json", {
        "add_prefix_space": False, "added_tokens_decoder": {str(i): dict(_token_entry(t), special=True)
                                                            for t, i in added.items()},
        "additional_special_tokens": extra, "bos_token": None, "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>", "errors": "replace", "extra_special_tokens": {}, "model_max_length": 131072,
        "pad_token": "<|endoftext|>", "processor_class": "Qwen2_5_VLProcessor", "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer", "unk_token": None})
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    if with_fast:
        (folder / "tokenizer.json").write_text(tokenizer.backend_tokenizer.to_str(pretty=True), encoding="utf-8")


def write_qwen_processor_configs(folder: Path, max_pixels: int = 12845056, min_pixels: int = 3136) -> None:
    """preprocessor_config.json and video_preprocessor_config.json of Qwen2.5-VL-7B-Instruct."""
    common = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
              "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
              "max_pixels": max_pixels, "merge_size": 2, "min_pixels": min_pixels, "patch_size": 14,
              "processor_class": "Qwen2_5_VLProcessor", "resample": 3, "rescale_factor": 0.00392156862745098,
              "size": {"longest_edge": max_pixels, "shortest_edge": min_pixels}, "temporal_patch_size": 2}
    write_json(folder / "preprocessor_config.json", dict(common, image_processor_type="Qwen2VLImageProcessor"))
    write_json(folder / "video_preprocessor_config.json", dict(common, video_processor_type="Qwen2VLVideoProcessor"))


def write_t5_tokenizer(folder: Path, tokenizer) -> None:
    """T5TokenizerFast's 4.5x files: spiece.model, tokenizer.json, tokenizer_config.json, special_tokens_map.json."""
    fast = json.loads(tokenizer.backend_tokenizer.to_str())
    pieces = [(piece, score) for piece, score in fast["model"]["vocab"]]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(sentencepiece_model(pieces, unk_id=fast["model"]["unk_id"]))
    (folder / "tokenizer.json").write_text(tokenizer.backend_tokenizer.to_str(pretty=True), encoding="utf-8")
    specials = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    write_json(folder / "special_tokens_map.json", {k: _token_entry(v) for k, v in specials.items()})
    ids = {piece: i for i, (piece, _) in enumerate(pieces)}
    write_json(folder / "tokenizer_config.json", {
        "add_prefix_space": True, "added_tokens_decoder": {str(ids[t]): dict(_token_entry(t), special=True)
                                                           for t in ("<pad>", "</s>", "<unk>")},
        "additional_special_tokens": [], "clean_up_tokenization_spaces": True, "extra_ids": 0,
        "extra_special_tokens": {}, "legacy": True, "model_max_length": 1000000000000000019884624838656,
        "sp_model_kwargs": {}, "tokenizer_class": "T5Tokenizer", **specials})


def sentencepiece_model(pieces: list[tuple[str, float]], *, unk_id: int) -> bytes:
    """A SentencePiece Unigram ``ModelProto`` (what ``spiece.model`` holds), encoded by hand: the
    protobuf package is not a dependency. <pad>/</s> are control pieces, like T5's ids 0/1."""
    def varint(value: int) -> bytes:
        value &= (1 << 64) - 1  # negative int32 fields are 10-byte two's complement
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    def field(number: int, wire: int, payload: bytes) -> bytes:
        return varint(number << 3 | wire) + payload

    def text(number: int, value: str | bytes) -> bytes:
        data = value.encode() if isinstance(value, str) else value
        return field(number, 2, varint(len(data)) + data)

    def number(field_number: int, value: int) -> bytes:
        return field(field_number, 0, varint(value))

    model = b""
    for i, (piece, score) in enumerate(pieces):
        kind = 2 if i == unk_id else 3 if piece in ("<pad>", "</s>") else 1  # UNKNOWN / CONTROL / NORMAL
        model += text(1, text(1, piece) + field(2, 5, struct.pack("<f", score)) + number(3, kind))
    # model_type UNIGRAM, vocab size, unk / bos (none) / eos / pad ids
    trainer = number(3, 1) + number(4, len(pieces)) + number(40, unk_id) + number(41, -1) + number(42, 1) \
        + number(43, 0)
    normalizer = text(1, "identity") + number(3, 1) + number(4, 1) + number(5, 1)
    return model + text(2, trainer) + text(3, normalizer)
