"""Tokenizer folders as the originals hold them: written by transformers 4.5x's ``save_pretrained``.

UMT5 (Wan's tokenizer/, from google/umt5-xxl): ``spiece.model``, ``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``. The layout is UMT5's, not T5's: ``<pad>`` 0, ``</s>`` 1, ``<s>`` 2, ``<unk>`` 3,
then mT5-style byte pieces ``<0x00>``..``<0xFF>`` (its sentencepiece model falls back to bytes for
characters it lacks), the vocabulary, and 300 ``<extra_id_N>`` sentinels appended in reverse. The JSON
files are what transformers 4.54.1 writes when it re-saves such a tokenizer (checked by doing it):
- ``tokenizer.json`` from its T5 converter: a Unigram with ``unk_id`` 3 and ``byte_fallback`` false (the
  converter never sets it, so transformers' fast tokenizer - and Wan's own code, which loads it with
  AutoTokenizer - turns a character outside the vocabulary into ``<unk>`` where sentencepiece would give
  its bytes); the nmt_nfkc table, strip-right and "2+ spaces -> ▁" normalizers; Metaspace pre-tokenizer;
  ``$A </s>`` post-processor;
- ``tokenizer_config.json``: the 304 added tokens (sentinels not stripped), ``extra_ids`` 300, ``legacy``
  true, ``add_prefix_space`` null, ``spaces_between_special_tokens`` false (61.8 kB in Wan2.2's repo;
  this layout with the real six-digit ids is 61,804 B, where stripped sentinels would make 61.2 kB);
- ``special_tokens_map.json``: the 300 sentinels as plain strings, the four specials as dicts (7.08 kB).

Qwen2.5-VL (Qwen-Image-Edit's tokenizer/ and processor/): the slow-tokenizer files ``vocab.json`` +
``merges.txt`` with ``added_tokens.json`` / ``special_tokens_map.json``, which transformers 5 no longer writes.
"""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from pathlib import Path

from diffbox.twins.files import write_json
from diffbox.twins.sentencepiece_files import BYTE, CONTROL, NORMAL, UNKNOWN, nmt_nfkc_charsmap, unigram_model

TRANSFORMERS_4X = "4.54.1"  # the exact 4.5x version of the originals is not confirmed


def _token_entry(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


# ---------------------------------------------------------------------------------------------
# UMT5
# ---------------------------------------------------------------------------------------------

UMT5_SPECIALS = {"pad_token": "<pad>", "eos_token": "</s>", "bos_token": "<s>", "unk_token": "<unk>"}  # ids 0-3
UMT5_EXTRA_IDS = 300


def umt5_pieces() -> list[tuple[str, float, int]]:
    """(piece, score, type) of a tiny UMT5-layout vocabulary: specials, the 256 byte pieces, every printable
    ASCII character, the demo corpus's words, and the characters of Wan's default (Chinese) negative
    prompt with a few of its words, so that prompt tokenizes without falling back to bytes. Hand-built:
    no trainer is deterministic enough to give the same bytes on every build."""
    from diffbox.demo import TOKENIZER_CORPUS
    from diffbox.workflows.i2v import WAN_NEGATIVE_PROMPT

    pieces = [(token, 0.0, UNKNOWN if name == "unk_token" else CONTROL) for name, token in UMT5_SPECIALS.items()]
    pieces += [(f"<0x{byte:02X}>", 0.0, BYTE) for byte in range(256)]
    pieces += [("▁", -2.0, NORMAL)] + [(chr(code), -12.0, NORMAL) for code in range(33, 127)]
    words = Counter(word for line in TOKENIZER_CORPUS for word in line.split())
    pieces += [(f"▁{word}", math.log(count) - 5.0, NORMAL) for word, count in sorted(words.items())]
    # nmt_nfkc turns the full-width comma into ",", which the ASCII pieces already hold.
    chinese = sorted({c for c in WAN_NEGATIVE_PROMPT if ord(c) > 127 and c != "，"})
    pieces += [(c, -10.0, NORMAL) for c in chinese]
    pieces += [(word, -8.0, NORMAL) for word in ("画面", "手指", "背景", "质量")]
    return pieces


def write_umt5_tokenizer(folder: Path, *, byte_fallback: bool = False) -> int:
    """The four files of Wan2.2-I2V-A14B-Diffusers' tokenizer/; returns the vocabulary size (with the
    sentinels). ``byte_fallback`` sets that flag in tokenizer.json (a variant: see the module docstring)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    # Scores as the file holds them (float32): the converter copied them from there into tokenizer.json.
    pieces = [(piece, struct.unpack("<f", struct.pack("<f", score))[0], kind) for piece, score, kind in umt5_pieces()]
    ids = {name: i for i, name in enumerate(UMT5_SPECIALS)}
    charsmap = nmt_nfkc_charsmap()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(unigram_model(
        pieces, unk_id=ids["unk_token"], bos_id=ids["bos_token"], eos_id=ids["eos_token"], pad_id=ids["pad_token"],
        byte_fallback=True, charsmap=charsmap))

    sentinels = [f"<extra_id_{i}>" for i in reversed(range(UMT5_EXTRA_IDS))]  # id order: 299 first
    tokenizer = Tokenizer(Unigram([(p, s) for p, s, _ in pieces] + [(t, 0.0) for t in sentinels],
                                  unk_id=ids["unk_token"], byte_fallback=byte_fallback))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Precompiled(charsmap),
                                                 normalizers.Strip(left=False, right=True),
                                                 normalizers.Replace(Regex(" {2,}"), "▁")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", ids["eos_token"])])
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                  for t in [*UMT5_SPECIALS.values(), *sentinels]])
    (folder / "tokenizer.json").write_text(tokenizer.to_str(pretty=True), encoding="utf-8")

    added = {i: token for i, token in enumerate(UMT5_SPECIALS.values())}
    added |= {len(pieces) + k: token for k, token in enumerate(sentinels)}
    extra = [f"<extra_id_{i}>" for i in range(UMT5_EXTRA_IDS)]
    write_json(folder / "special_tokens_map.json", {"additional_special_tokens": extra,
                                                    **{k: _token_entry(v) for k, v in UMT5_SPECIALS.items()}})
    write_json(folder / "tokenizer_config.json", {
        "add_prefix_space": None,
        "added_tokens_decoder": {str(i): dict(_token_entry(t), special=True) for i, t in added.items()},
        "additional_special_tokens": extra, "clean_up_tokenization_spaces": True, "extra_ids": UMT5_EXTRA_IDS,
        "extra_special_tokens": {}, "legacy": True, "model_max_length": 1000000000000000019884624838656,
        "sp_model_kwargs": {}, "spaces_between_special_tokens": False, "tokenizer_class": "T5Tokenizer",
        **UMT5_SPECIALS})
    return len(pieces) + UMT5_EXTRA_IDS


# ---------------------------------------------------------------------------------------------
# Qwen2.5-VL
# ---------------------------------------------------------------------------------------------

# A plain ChatML template: the file is there like in the original, but the pipelines build their own
# prompt template and never apply it, so its exact text does not matter.
CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
                 "+ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                 "{% endif %}")


def write_qwen_tokenizer(folder: Path, tokenizer, *, with_fast: bool) -> None:
    """Qwen2Tokenizer's 4.5x files: vocab.json, merges.txt, added_tokens.json, special_tokens_map.json,
    tokenizer_config.json, chat_template.jinja (+ tokenizer.json when ``with_fast``, as in processor/).
    special_tokens_map.json lists the special added tokens but ``<|endoftext|>`` as plain strings, eos/pad
    as dicts. With Qwen2.5's 22 added tokens at their ids from 151643, added_tokens.json is 605 B and
    special_tokens_map.json 613 B, the sizes in Qwen-Image-Edit-2509's tokenizer/ and processor/."""
    fast = json.loads(tokenizer.backend_tokenizer.to_str())
    added = {t["content"]: t["id"] for t in fast["added_tokens"]}
    special = {t["content"] for t in fast["added_tokens"] if t["special"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in fast["model"]["merges"]]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(fast["model"]["vocab"], ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    write_json(folder / "added_tokens.json", added)
    extra = [t for t in added if t in special and t != "<|endoftext|>"]
    write_json(folder / "special_tokens_map.json", {
        "additional_special_tokens": extra, "eos_token": _token_entry("<|im_end|>"),
        "pad_token": _token_entry("<|endoftext|>")})
    write_json(folder / "tokenizer_config.json", {
        "add_prefix_space": False, "added_tokens_decoder": {str(i): dict(_token_entry(t), special=t in special)
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
