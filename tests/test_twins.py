"""The twins themselves: the originals' layout, names, configs, dtypes and key patterns; deterministic;
the pipeline twins load through the app's loader in bf16 and run; transformers 4.5x text encoders load
whole in transformers 5; README and docs/twins.md list exactly the registry."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from diffbox.engine.cache import ModelCache
from diffbox.engine.loaders import load_pipeline
from diffbox.twins import TWINS, build_twin
from diffbox.twins.docs import catalogue, verified_with_table

ROOT = Path(__file__).resolve().parents[1]
WAN, QWEN = "wan2.2-i2v-a14b-diffusers", "qwen-image-edit-2509"


def headers(folder: Path) -> dict[str, str]:
    """tensor name -> safetensors dtype (F32, BF16, ...) over every shard of a component folder."""
    found = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            found |= {key: str(handle.get_slice(key).get_dtype()) for key in handle.keys()}
    return found


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def digest(path: Path) -> dict[str, str]:
    paths = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {p.name if path.is_file() else p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in paths}


def test_every_twin_builds_to_the_same_bytes_under_its_original_name(twin, tmp_path):
    for name, spec in TWINS.items():
        built = twin(name)
        assert built.name == spec.original.name
        assert digest(build_twin(name, tmp_path)) == digest(built), name
    assert digest(build_twin("svi-2.0-pro-high", tmp_path / "other", seed=1)) != digest(twin("svi-2.0-pro-high"))
    with pytest.raises(KeyError, match="no twin named 'nope'"):
        build_twin("nope", tmp_path)


def test_the_wan_twin_has_the_repos_layout_configs_and_dtypes(twin):
    wan = twin(WAN)
    shards = [f"diffusion_pytorch_model-{k:05d}-of-00012.safetensors" for k in range(1, 13)]
    assert files(wan) == sorted(
        ["model_index.json", "scheduler/scheduler_config.json", "vae/config.json",
         "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
         "text_encoder/model.safetensors.index.json",
         *[f"text_encoder/model-{k:05d}-of-00003.safetensors" for k in (1, 2, 3)],
         "tokenizer/special_tokens_map.json", "tokenizer/spiece.model", "tokenizer/tokenizer.json",
         "tokenizer/tokenizer_config.json",
         *[f"{expert}/{name}" for expert in ("transformer", "transformer_2")
           for name in [*shards, "config.json", "diffusion_pytorch_model.safetensors.index.json"]]])
    index = json.loads((wan / "model_index.json").read_text())
    assert index["boundary_ratio"] == 0.9 and index["image_encoder"] == [None, None] and "expand_timesteps" not in index
    assert index["tokenizer"] == ["transformers", "T5TokenizerFast"]
    scheduler = json.loads((wan / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["_class_name"], scheduler["flow_shift"], scheduler["use_flow_sigmas"]) == (
        "UniPCMultistepScheduler", 3.0, True) and len(scheduler) == 28
    config = json.loads((wan / "transformer" / "config.json").read_text())
    assert (config["in_channels"], config["image_dim"], config["added_kv_proj_dim"], config["qk_norm"]) == (
        36, None, None, "rms_norm_across_heads")
    assert set(headers(wan / "transformer").values()) == {"F32"} == set(headers(wan / "vae").values())
    weight_map = json.loads((wan / "transformer" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert set(weight_map["weight_map"].values()) == set(shards)
    text = headers(wan / "text_encoder")
    assert set(text.values()) == {"BF16"} and "shared.weight" in text and "encoder.embed_tokens.weight" not in text
    text_config = json.loads((wan / "text_encoder" / "config.json").read_text())
    assert text_config["torch_dtype"] == "bfloat16" and text_config["transformers_version"].startswith("4.5")
    assert text_config["_name_or_path"] == "google/umt5-xxl"
    # 855 B on the hub: the twin's config at the real dimensions, with an 11-character development version
    # string (x.yy.z.devN, as a converter run from a source checkout writes), is that to the byte.
    real = dict(text_config, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_decoder_layers=24, num_heads=64,
                vocab_size=256384, transformers_version="4.55.0.dev0")
    assert len(json.dumps(real, indent=2, sort_keys=True)) + 1 == 855
    index = json.loads((wan / "text_encoder" / "model.safetensors.index.json").read_text())["metadata"]
    stored = [t for f in sorted((wan / "text_encoder").glob("model-*.safetensors")) for t in load_file(f).values()]
    assert index == {"total_parameters": sum(t.numel() for t in stored),
                     "total_size": sum(2 * t.numel() for t in stored)}
    assert json.loads((wan / "vae" / "config.json").read_text())["latents_std"][0] == 2.8184


def test_the_qwen_twin_has_the_repos_layout_configs_and_dtypes(twin):
    qwen = twin(QWEN)
    assert files(qwen / "tokenizer") == ["added_tokens.json", "chat_template.jinja", "merges.txt",
                                         "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    assert files(qwen / "processor") == ["added_tokens.json", "chat_template.jinja", "merges.txt",
                                         "preprocessor_config.json", "special_tokens_map.json", "tokenizer.json",
                                         "tokenizer_config.json", "video_preprocessor_config.json", "vocab.json"]
    assert len(list((qwen / "transformer").glob("diffusion_pytorch_model-0000?-of-00005.safetensors"))) == 5
    assert len(list((qwen / "text_encoder").glob("model-0000?-of-00004.safetensors"))) == 4
    assert (qwen / "text_encoder" / "generation_config.json").is_file()
    assert json.loads((qwen / "model_index.json").read_text())["_class_name"] == "QwenImageEditPlusPipeline"
    for component in ("transformer", "text_encoder", "vae"):
        assert set(headers(qwen / component).values()) == {"BF16"}, component
    legacy, current = headers(qwen / "text_encoder"), headers(twin("qwen-image-edit-2509-te-new-keys") / "text_encoder")
    assert "model.layers.0.self_attn.q_proj.weight" in legacy and "visual.blocks.0.attn.qkv.weight" in legacy
    assert "model.language_model.layers.0.self_attn.q_proj.weight" in current
    assert "model.visual.merger.ln_q.weight" in current
    scheduler = json.loads((qwen / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["base_shift"], scheduler["max_shift"], scheduler["shift_terminal"]) == (0.5, 0.9, 0.02)


KEY_PATTERNS = {  # every key of the twin must match: the tensor-name patterns of the original
    "svi-2.0-pro-high": r"blocks\.\d+\.(?:(?:self|cross)_attn\.[qkvo]|ffn\.[02])\.lora_[AB]\.default\.weight",
    "lightning-seko-v1-low": r"diffusion_model\.blocks\.\d+\.(?:(?:self|cross)_attn\.[qkvo]|ffn\.[02])"
                             r"\.(?:lora_(?:down|up)\.weight|alpha)",
    "lightning-seko-v1-low-unprefixed": r"blocks\.\d+\.(?:(?:self|cross)_attn\.[qkvo]|ffn\.[02])"
                                        r"\.(?:lora_(?:down|up)\.weight|alpha)",
    "musubi-wan22": r"lora_unet_blocks_\d+_(?:(?:self|cross)_attn_[qkvo]|ffn_[02])\.(?:lora_(?:down|up)\.weight|alpha)",
    "qwen-2509-lightning-8steps-bf16": r"transformer_blocks\.\d+\.(?:attn\.(?:to_[qkv]|add_[qkv]_proj|to_out\.0|"
                                       r"to_add_out)|(?:img|txt)_mlp\.net\.(?:0\.proj|2))"
                                       r"\.(?:lora_(?:down|up)\.weight|alpha)",
    "comfy-wan2.2-i2v-high-fp16": r"model\.diffusion_model\.(?:blocks\.\d+\.|head\.|patch_embedding|text_embedding|"
                                  r"time_embedding|time_projection).*",
}


@pytest.mark.parametrize("name", KEY_PATTERNS)
def test_file_twins_keep_the_originals_tensor_names(twin, name):
    with safe_open(str(twin(name)), framework="pt") as handle:
        keys = list(handle.keys())
    assert keys and [k for k in keys if not re.fullmatch(KEY_PATTERNS[name], k)] == []


def test_file_twins_keep_the_originals_storage(twin):
    def dtypes(name):
        with safe_open(str(twin(name)), framework="pt") as handle:
            keys = list(handle.keys())
            return {str(handle.get_slice(k).get_dtype()) for k in keys}, handle.metadata() or {}, keys

    assert dtypes("lightning-seko-v1-high")[0] == {"F32"}
    assert dtypes("svi-2.0-pro-high")[0] == {"BF16"} and dtypes("svi-2.0-pro-high-fp16")[0] == {"F16"}
    with safe_open(str(twin("lightning-seko-v1-high")), framework="pt") as handle:
        alpha, down = handle.get_tensor("diffusion_model.blocks.0.ffn.0.alpha"), handle.get_tensor(
            "diffusion_model.blocks.0.ffn.0.lora_down.weight")
    assert alpha.item() / down.shape[0] == 8 / 64  # the original's alpha/rank
    old, _, old_keys = dtypes("comfy-wan2.2-i2v-high-fp8-scaled")
    assert old == {"F8_E4M3", "F16", "F32"} and "model.diffusion_model.scaled_fp8" in old_keys
    assert any(k.endswith(".scale_weight") for k in old_keys) and any(k.endswith(".scale_input") for k in old_keys)
    _, metadata, new_keys = dtypes("comfy-qwen-2511-fp8mixed")
    layers = json.loads(metadata["_quantization_metadata"])["layers"]
    assert layers and {f"model.diffusion_model.{layer}.weight_scale" for layer in layers} <= set(new_keys)
    assert "transformer_blocks.0.img_mod.1" not in layers  # "mixed": some layers stay bf16
    assert any(k.endswith(".comfy_quant") for k in dtypes("comfy-qwen-2511-fp8mixed-comfy-quant-tensors")[2])
    assert dtypes("comfy-qwen-2509-fp8-e4m3fn")[0] == {"F8_E4M3", "BF16"}
    all_fp8, _, keys = dtypes("comfy-qwen-2509-fp8-e4m3fn-all-fp8")
    assert all_fp8 == {"F8_E4M3"} and all(k.startswith("model.diffusion_model.") for k in keys)
    # The measured ComfyUI Wan fp8_scaled layout: unprefixed, every Linear (embeddings too) scaled with a
    # scale_input, modulation and patch embedding 16-bit, and the empty marker ComfyUI's save writes.
    with safe_open(str(twin("comfy-wan2.2-i2v-high-fp8-scaled-unprefixed")), framework="pt") as handle:
        keys = set(handle.keys())
        kinds = {k: str(handle.get_slice(k).get_dtype()) for k in keys}
        marker = handle.get_tensor("scaled_fp8")
    assert (marker.dtype, marker.shape) == (torch.float8_e4m3fn, (0,))
    scaled = {k.removesuffix(".scale_weight") for k in keys if k.endswith(".scale_weight")}
    assert scaled == {k.removesuffix(".scale_input") for k in keys if k.endswith(".scale_input")}
    assert {"time_embedding.0", "text_embedding.2", "time_projection.1", "head.head"} <= scaled
    assert kinds["blocks.0.modulation"] == kinds["patch_embedding.weight"] == "F16"
    assert all(kinds[f"{layer}.weight"] == "F8_E4M3" for layer in scaled)
    for name in TWINS:  # ComfyUI saves every 2511 model with its zero-timestep marker, and no other
        if name.startswith("comfy-qwen-25"):
            assert ("model.diffusion_model.__index_timestep_zero__" in dtypes(name)[2]) == ("2511" in name), name


@pytest.mark.parametrize("name, kept", [("quantstack-wan2.2-i2v-high-q8_0", "F16"),
                                        ("quantstack-wan2.2-i2v-high-q8_0-bf16-kept", "BF16")])
def test_the_gguf_twins_are_city96_style(twin, name, kept):
    """Which tensor has which type, by city96's convert.py (1-D and modulation F32), lcpp.patch (embeddings,
    time projection and head kept 16-bit) and fix_5d_tensors.py (the 5-D patch embedding F32, last)."""
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(str(twin(name)))
    arch = reader.get_field("general.architecture")
    assert bytes(arch.parts[arch.data[-1]]).decode() == "wan"
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert reader.tensors[-1].name == "patch_embedding.weight" and len(reader.tensors[-1].shape) == 5
    kept_layers = ("text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2",
                   "time_projection.1", "head.head")
    expected = {key: "F32" if key.endswith(("bias", "modulation", "norm_q.weight", "norm_k.weight", "norm3.weight",
                                            "patch_embedding.weight"))
                else kept if key.removesuffix(".weight") in kept_layers else "Q8_0" for key in types}
    assert types == expected
    qwen = gguf.GGUFReader(str(twin("quantstack-qwen-2509-q8_0-prefixed")))
    assert "model.diffusion_model.transformer_blocks.0.attn.to_q.weight" in {t.name for t in qwen.tensors}


# ---------------------------------------------------------------------------------------------
# The pipeline twins through the app's loader, in bf16
# ---------------------------------------------------------------------------------------------


def wan_video(pipe) -> np.ndarray:
    return pipe(Image.new("RGB", (32, 32), (200, 30, 30)), prompt="a red square", height=32, width=32, num_frames=5,
                num_inference_steps=2, max_sequence_length=16, output_type="np",
                generator=torch.Generator().manual_seed(0)).frames


def module_dtypes(pipe) -> dict[str, set]:
    return {name: {p.dtype for p in component.parameters()} for name, component in pipe.components.items()
            if isinstance(component, torch.nn.Module)}


@pytest.mark.parametrize("name", [WAN, "wan2.2-i2v-a14b-diffusers-image-dim"])
def test_wan_twins_load_in_bf16_and_run_a_job(twin, name):
    cache = ModelCache(idle_unload_s=None)
    pipe = cache.get(twin(name), dtype="bfloat16", placement="cpu").pipe
    dtypes = module_dtypes(pipe)
    assert dtypes["text_encoder"] == {torch.bfloat16}
    # bf16 except the layers diffusers keeps in fp32 for Wan (time embedder, norms, scale_shift_tables)
    assert dtypes["transformer"] == dtypes["transformer_2"] == {torch.bfloat16, torch.float32}
    assert pipe.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert pipe.transformer.config.image_dim is None and pipe.transformer_2.condition_embedder.image_embedder is None
    frames = wan_video(pipe)
    assert frames.shape == (1, 5, 32, 32, 3) and np.isfinite(frames).all() and frames.std() > 0


def test_the_qwen_twin_loads_as_the_plus_pipeline_in_bf16_and_edits(twin, shrink_qwen_condition_area):
    pipe = load_pipeline(twin(QWEN), dtype="bfloat16")
    assert type(pipe).__name__ == "QwenImageEditPlusPipeline"
    assert all(d == {torch.bfloat16} for d in module_dtypes(pipe).values())
    image = pipe(image=[Image.new("RGB", (64, 64), (200, 30, 30))], prompt="Make the sky purple", height=64,
                 width=64, num_inference_steps=2, true_cfg_scale=1.0, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all() and image.std() > 0


# ---------------------------------------------------------------------------------------------
# Text encoders saved by transformers 4.5x, loaded by transformers 5
# ---------------------------------------------------------------------------------------------

LEGACY = [("model.language_model.", "model."), ("model.visual.", "visual.")]


@pytest.mark.parametrize("name", [WAN, QWEN, "qwen-image-edit-2509-te-new-keys"])
def test_text_encoders_saved_by_transformers_4x_load_whole(twin, name):
    from safetensors.torch import load_file
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration, UMT5EncoderModel

    folder = twin(name) / "text_encoder"
    cls = UMT5EncoderModel if name == WAN else Qwen2_5_VLForConditionalGeneration
    model, info = cls.from_pretrained(folder, dtype=torch.bfloat16, output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    stored = {k: v for f in sorted(folder.glob("model-*.safetensors")) for k, v in load_file(f).items()}
    loaded = model.state_dict()
    for key, value in loaded.items():
        source = key if key in stored else next((new + key[len(old):] for old, new in LEGACY if key.startswith(old)),
                                                "shared.weight" if key == "encoder.embed_tokens.weight" else key)
        assert torch.equal(value, stored[source]), key
    if name != WAN:  # the multimodal rope survives the 4.5x config
        assert AutoConfig.from_pretrained(folder).text_config.rope_parameters["mrope_section"] == [1, 1, 2]


# ---------------------------------------------------------------------------------------------
# Tokenizers as the originals hold them, and as the app reads them
# ---------------------------------------------------------------------------------------------


def published_size(path: Path, shift_ids_from: int = 0, first_real_id: int = 0) -> int:
    """The byte size ``path`` would have with the real vocabulary: JSON re-dumped as transformers writes it
    (indent 2, sorted keys, trailing newline), every added-token id >= ``shift_ids_from`` moved so the first
    of them becomes ``first_real_id`` (only the ids' digit counts change the size)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    shift = first_real_id - shift_ids_from

    def moved(i: int) -> int:
        return i + shift if i >= shift_ids_from else i

    if "added_tokens_decoder" in data:
        data["added_tokens_decoder"] = {str(moved(int(i))): v for i, v in data["added_tokens_decoder"].items()}
    elif shift_ids_from:  # added_tokens.json: {token: id}
        data = {token: moved(i) for token, i in data.items()}
    return len(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False).encode()) + 1


def test_the_wan_tokenizer_has_umt5s_layout_and_the_published_file_sizes(twin):
    import sentencepiece

    folder = twin(WAN) / "tokenizer"
    spm = sentencepiece.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    assert [spm.id_to_piece(i) for i in range(4)] == ["<pad>", "</s>", "<s>", "<unk>"]
    assert (spm.pad_id(), spm.eos_id(), spm.bos_id(), spm.unk_id()) == (0, 1, 2, 3)
    assert spm.encode("☃", out_type=str)[-3:] == ["<0xE2>", "<0x98>", "<0x83>"]  # mT5's byte fallback
    config = json.loads((folder / "tokenizer_config.json").read_text())
    sentinels = {int(i): t["content"] for i, t in config["added_tokens_decoder"].items() if int(i) > 3}
    first = min(sentinels)
    assert first == spm.get_piece_size() and sentinels == {first + k: f"<extra_id_{299 - k}>" for k in range(300)}
    assert (config["extra_ids"], config["legacy"], config["add_prefix_space"]) == (300, True, None)
    # Wan2.2-I2V-A14B-Diffusers/tokenizer on the hub: special_tokens_map.json 7.08 kB, tokenizer_config.json
    # 61.8 kB, whose added tokens start at id 256000.
    assert round(published_size(folder / "special_tokens_map.json") / 1000, 2) == 7.08
    assert round(published_size(folder / "tokenizer_config.json", first, 256000) / 1000, 1) == 61.8
    fast = json.loads((folder / "tokenizer.json").read_text())["model"]
    assert (fast["type"], fast["unk_id"], fast["byte_fallback"]) == ("Unigram", 3, False)
    assert len(fast["vocab"]) == first + 300
    rows = json.loads((twin(WAN) / "text_encoder" / "config.json").read_text())["vocab_size"]
    assert rows == -(-len(fast["vocab"]) // 128) * 128  # as UMT5-XXL's 256300 tokens have 256384 rows


@pytest.mark.parametrize("name", [WAN, "wan2.2-i2v-a14b-diffusers-tokenizer-byte-fallback"])
def test_the_app_tokenizes_wan_prompts_as_sentencepiece_does(twin, name):
    """Through the app's loader: English and Wan's Chinese negative prompt give sentencepiece's own ids (+
    </s>); a character outside the vocabulary gives <unk> or, with byte fallback in tokenizer.json, its
    bytes as sentencepiece does, never <s> (id 2), which transformers 5's T5Tokenizer would give it."""
    import sentencepiece

    from diffbox.workflows.i2v import WAN_NEGATIVE_PROMPT

    folder = twin(name)
    tokenizer = load_pipeline(folder, dtype="bfloat16").tokenizer
    spm = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer" / "spiece.model"))
    for text in ("A cat walks slowly across a sunny garden, zebra!", WAN_NEGATIVE_PROMPT):
        assert tokenizer(text).input_ids == spm.encode(text) + [1]
    snowman = tokenizer("a ☃ b").input_ids
    byte_fallback = name.endswith("byte-fallback")
    assert snowman == (spm.encode("a ☃ b") if byte_fallback else [*spm.encode("a"), 260, 3, *spm.encode("b")]) + [1]
    assert tokenizer.convert_ids_to_tokens(snowman)[2] == ("<0xE2>" if byte_fallback else "<unk>")
    padded = tokenizer("a", padding="max_length", max_length=8).input_ids  # as the pipeline pads: <pad> = 0
    assert padded == [*spm.encode("a"), 1] + [0] * (7 - len(spm.encode("a")))


def test_the_qwen_tokenizer_files_have_the_published_sizes(twin):
    """Qwen-Image-Edit-2509's tokenizer/ and processor/ on the hub: added_tokens.json 605 B (22 added tokens
    from id 151643), special_tokens_map.json 613 B (13 plain-string additional tokens, eos/pad as dicts)."""
    for folder in (twin(QWEN) / "tokenizer", twin(QWEN) / "processor"):
        added = json.loads((folder / "added_tokens.json").read_text())
        first = added["<|endoftext|>"]
        assert sorted(added.values()) == list(range(first, first + 22))
        assert published_size(folder / "added_tokens.json", first, 151643) == 605
        assert published_size(folder / "special_tokens_map.json") == 605 + 8 == (folder / "special_tokens_map.json"
                                                                                   ).stat().st_size
        special = json.loads((folder / "special_tokens_map.json").read_text())
        assert all(isinstance(t, str) for t in special["additional_special_tokens"])
        assert special["additional_special_tokens"][:2] == ["<|im_start|>", "<|im_end|>"]


# ---------------------------------------------------------------------------------------------
# The registry, README and docs/twins.md agree
# ---------------------------------------------------------------------------------------------


def test_readme_and_docs_list_exactly_the_registry():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Verified with", 1)[1].split("\n## ", 1)[0]
    assert verified_with_table(TWINS) in section
    docs = (ROOT / "docs" / "twins.md").read_text(encoding="utf-8")
    assert catalogue(TWINS) in docs
    for spec in TWINS.values():
        assert f"`{spec.name}`" in section and str(spec.original) in section
