"""The published models at their real size, on the meta device: no weight is allocated, in memory or on disk.

The real configs (Wan 2.2 I2V A14B expert, UMT5-XXL, the Qwen-Image-Edit-2509 transformer, Qwen2.5-VL-7B)
are instantiated with accelerate's init_empty_weights. Their shapes are written as safetensors files laid
out like the published repos (same shard counts, storage dtypes and index files): a real header, then the
file truncated to its full length, so the data is a hole the filesystem never allocates. The app's own
estimate path reads those headers, and must land within 2 % of the published sizes. The same meta
modules then show that the app's pipeline views share them without a cast.

Published sizes (the hub's file listings; a repo's shards add up to the parameter bytes plus headers):
Wan2.2-I2V-A14B-Diffusers: each expert 14,288,901,184 parameters stored in float32 (57,155,604,736 B;
28.58 GB in bf16), text encoder 3 bf16 shards of 4,935,812,536 + 4,983,103,192 + 1,442,935,480 B, VAE
507,591,892 B in float32. Qwen-Image-Edit-2509: transformer 40.86 GB bf16 (5 shards), text encoder
4.97 + 4.99 + 4.93 + 1.69 GB bf16 (4 shards), VAE 254 MB bf16.
"""

import json

import pytest
import torch
from accelerate import init_empty_weights

from diffbox.engine import qwen_pipes
from diffbox.engine.cache import estimate_pipeline_bytes
from diffbox.engine.svi_pipeline import svi_view

WAN_EXPERT_PARAMS = 14_288_901_184
PUBLISHED = {  # bytes, for the dtype named
    ("wan", "transformer", "float32"): 57_155_604_736,
    ("wan", "transformer", "bfloat16"): 28.58e9,
    ("wan", "text_encoder", "bfloat16"): 4_935_812_536 + 4_983_103_192 + 1_442_935_480,
    ("wan", "vae", "float32"): 507_591_892,
    ("qwen", "transformer", "bfloat16"): 40_860_802_176,
    ("qwen", "text_encoder", "bfloat16"): (4.97 + 4.99 + 4.93 + 1.69) * 1e9,
    ("qwen", "vae", "bfloat16"): 254e6,
}

WAN_TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
                       out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
                       qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None,
                       rope_max_seq_len=1024, pos_embed_seq_len=None)
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_decoder_layers=24,
                num_heads=64, feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True,
                relative_attention_num_buckets=32, relative_attention_max_distance=128, scalable_attention=True)
QWEN_TRANSFORMER = dict(attention_head_dim=128, axes_dims_rope=[16, 56, 56], guidance_embeds=False, in_channels=64,
                        joint_attention_dim=3584, num_attention_heads=24, num_layers=60, out_channels=16, patch_size=2)
QWEN_VL_TEXT = dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                    intermediate_size=18944, vocab_size=152064, max_position_embeddings=128000, rope_theta=1e6,
                    rms_norm_eps=1e-6, hidden_act="silu",
                    rope_scaling={"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"})
QWEN_VL_VISION = dict(depth=32, hidden_size=1280, out_hidden_size=3584, num_heads=16, intermediate_size=3420,
                      fullatt_block_indexes=[7, 15, 23, 31], patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                      window_size=112, tokens_per_second=2, in_chans=3, hidden_act="silu")
ST_DTYPES = {"F32": 4, "BF16": 2, "F16": 2}


# ---------------------------------------------------------------------------------------------
# Meta models and hole-filled checkpoints
# ---------------------------------------------------------------------------------------------


def meta_models() -> dict:
    from diffusers import AutoencoderKLQwenImage, AutoencoderKLWan, QwenImageTransformer2DModel, WanTransformer3DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, UMT5Config, UMT5EncoderModel

    with init_empty_weights():
        return {
            "wan_expert": WanTransformer3DModel(**WAN_TRANSFORMER),
            "wan_expert_2": WanTransformer3DModel(**WAN_TRANSFORMER),
            "umt5": UMT5EncoderModel(UMT5Config(**UMT5_XXL)),
            "wan_vae": AutoencoderKLWan(),
            "qwen_transformer": QwenImageTransformer2DModel(**QWEN_TRANSFORMER),
            "qwen_vl": Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
                **QWEN_VL_TEXT, vision_config=QWEN_VL_VISION, tie_word_embeddings=False)),
            "qwen_vae": AutoencoderKLQwenImage(),
        }


def write_hollow_checkpoint(folder, model, *, dtype: str, stem: str, shards: int, index_name: str = "",
                            tied: tuple[str, ...] = (), rename=lambda name: name) -> None:
    """The model's tensors as `shards` safetensors files (+ index) whose data is an unallocated hole;
    `tied` names weights the published file stores once under another name, `rename` gives a tensor the
    name the published file uses."""
    tensors = [(rename(name), tuple(p.shape)) for name, p in model.named_parameters() if name not in tied]
    sizes = [ST_DTYPES[dtype] * torch.Size(shape).numel() for _, shape in tensors]
    per_shard = sum(sizes) / shards
    groups, current, filled = [[] for _ in range(shards)], 0, 0
    for tensor, size in zip(tensors, sizes):
        if filled >= per_shard * (current + 1) and current < shards - 1:
            current += 1
        groups[current].append((tensor, size))
        filled += size
    folder.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for number, group in enumerate(groups, 1):
        name = f"{stem}.safetensors" if shards == 1 else f"{stem}-{number:05d}-of-{shards:05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for (tensor_name, shape), size in group:
            header[tensor_name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
            weight_map[tensor_name] = name
            offset += size
        blob = json.dumps(header).encode()
        with open(folder / name, "wb") as handle:
            handle.write(len(blob).to_bytes(8, "little") + blob)
            handle.truncate(8 + len(blob) + offset)
    if index_name:
        (folder / index_name).write_text(json.dumps({"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}))


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Meta models and the two published repos as hollow folders: {"models", "wan", "qwen"}."""
    models = meta_models()
    wan, qwen = tmp_path_factory.mktemp("wan2.2-i2v-a14b"), tmp_path_factory.mktemp("qwen-image-edit-2509")
    shards = "diffusion_pytorch_model.safetensors.index.json"
    write_hollow_checkpoint(wan / "transformer", models["wan_expert"], dtype="F32",
                            stem="diffusion_pytorch_model", shards=12, index_name=shards)
    write_hollow_checkpoint(wan / "transformer_2", models["wan_expert_2"], dtype="F32",
                            stem="diffusion_pytorch_model", shards=12, index_name=shards)
    write_hollow_checkpoint(wan / "text_encoder", models["umt5"], dtype="BF16", stem="model", shards=3,
                            index_name="model.safetensors.index.json", tied=("encoder.embed_tokens.weight",))
    write_hollow_checkpoint(wan / "vae", models["wan_vae"], dtype="F32", stem="diffusion_pytorch_model", shards=1)
    (wan / "model_index.json").write_text(json.dumps({
        "_class_name": "WanImageToVideoPipeline", "boundary_ratio": 0.9, "image_encoder": [None, None],
        "image_processor": [None, None], "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"], "transformer_2": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"]}))
    write_hollow_checkpoint(qwen / "transformer", models["qwen_transformer"], dtype="BF16",
                            stem="diffusion_pytorch_model", shards=5, index_name=shards)
    write_hollow_checkpoint(qwen / "text_encoder", models["qwen_vl"], dtype="BF16", stem="model", shards=4,
                            index_name="model.safetensors.index.json")
    write_hollow_checkpoint(qwen / "vae", models["qwen_vae"], dtype="BF16", stem="diffusion_pytorch_model", shards=1)
    (qwen / "model_index.json").write_text(json.dumps({
        "_class_name": "QwenImageEditPlusPipeline", "processor": ["transformers", "Qwen2VLProcessor"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"], "transformer": ["diffusers", "QwenImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLQwenImage"]}))
    return {"models": models, "wan": wan, "qwen": qwen}


# ---------------------------------------------------------------------------------------------
# Estimates
# ---------------------------------------------------------------------------------------------


def test_the_checkpoints_are_full_length_and_take_no_disk(real):
    files = [f for repo in ("wan", "qwen") for f in real[repo].rglob("*.safetensors")]
    assert len(files) == 12 + 12 + 3 + 1 + 5 + 4 + 1
    logical = sum(f.stat().st_size for f in files)
    allocated = sum(f.stat().st_blocks * 512 for f in files)
    assert logical > 180e9 and allocated < 50e6  # 2 × 57.2 + 11.4 + 0.5 + 40.9 + 16.6 + 0.25 GB of holes


@pytest.mark.parametrize("repo, component, dtype", sorted(PUBLISHED))
def test_estimates_match_the_published_sizes_within_2_percent(real, repo, component, dtype):
    estimate = estimate_pipeline_bytes(real[repo], dtype=dtype, vae_dtype=dtype)[component]
    published = PUBLISHED[(repo, component, dtype)]
    assert abs(estimate - published) / published < 0.02, (estimate, published)


def test_exact_where_the_arithmetic_is_exact(real):
    fp32 = estimate_pipeline_bytes(real["wan"], "float32")
    assert fp32["transformer"] == fp32["transformer_2"] == WAN_EXPERT_PARAMS * 4 == 57_155_604_736
    bf16 = estimate_pipeline_bytes(real["wan"], "bfloat16", vae_dtype="float32")
    # diffusers keeps Wan's time embedder, modulation tables and norm2 in fp32 under bf16: +29.2 M × 2 B
    assert bf16["transformer"] - WAN_EXPERT_PARAMS * 2 == pytest.approx(58.4e6, rel=0.01)
    assert bf16["vae"] == fp32["vae"]  # the Wan VAE stays fp32 under bf16 experts
    assert estimate_pipeline_bytes(real["qwen"], "bfloat16")["transformer"] == 40_860_802_176
    # The whole Wan pipeline as it runs on a GPU: 2 × 28.64 (bf16 experts) + 11.36 (UMT5) + 0.51 (fp32 VAE)
    assert sum(bf16.values()) == pytest.approx(69.14e9, rel=0.005)


def test_a_comfy_expert_file_is_estimated_like_the_folder_at_real_size(real, tmp_path):
    """ComfyUI's fp16 expert (original Wan names under `model.diffusion_model.`): the same bytes as the
    folder's expert in bf16, the 29.2 M values diffusers keeps in fp32 included (the loader keeps them so)."""
    from diffbox.engine.cache import ModelSource
    from diffbox.twins.wan import to_native_wan_keys

    write_hollow_checkpoint(tmp_path, real["models"]["wan_expert"], dtype="F16", shards=1,
                            stem="wan2.2_i2v_high_noise_14B_fp16",
                            rename=lambda name: "model.diffusion_model." + next(iter(to_native_wan_keys({name: 0}))))
    file = tmp_path / "wan2.2_i2v_high_noise_14B_fp16.safetensors"
    assert file.stat().st_size == pytest.approx(28.6e9, rel=0.002)  # the hub's 28.6 GB
    single = estimate_pipeline_bytes(ModelSource(real["wan"], {"transformer": file}), "bfloat16")["transformer"]
    assert single == estimate_pipeline_bytes(real["wan"], "bfloat16")["transformer"]
    assert single - WAN_EXPERT_PARAMS * 2 == pytest.approx(58.4e6, rel=0.01)


# The hub's sizes of single files, with how closely each figure pins the bytes: exact listings leave the
# header (< 2 MB), "GB" ones their 3 significant digits. The named twin's own layout rule (the registry's build
# arguments) applied to the real shapes must give that size; its variants that do not are not the layout.
PUBLISHED_SINGLE_FILES = {
    "comfy-wan2.2-i2v-high-fp8-scaled-unprefixed": (14.3e9, 0.05e9),  # every Linear fp8 (blocks only: 14.5)
    "kijai-wan2.2-i2v-low-fp8-scaled-kj": (15_002_999_858, 2e6),  # block Linears fp8, the rest fp32
    "comfy-qwen-2509-fp8-e4m3fn-all-fp8": (20.4e9, 0.05e9),  # block Linears only: 20.5
    "lightx2v-qwen-2509-fp8-scaled-all-linear": (20.4e9, 0.05e9),
    "quantstack-wan2.2-i2v-high-q8_0": (15.4e9, 0.05e9),  # embeddings and head kept 16-bit (all Q8_0: 15.2)
    "quantstack-qwen-2509-q8_0": (21_761_817_120, 2e6),  # non-block Linears 16-bit (all Q8_0: 38 MB less)
}


def twin_layout_bytes(real, name: str) -> int:
    """Bytes of twin ``name``'s tensors laid out as its registry entry builds it, over the real shapes."""
    import gguf

    from diffbox.twins import TWINS
    from diffbox.twins.single_files import gguf_type, store
    from diffbox.twins.wan import to_native_wan_keys

    spec = TWINS[name]
    kwargs = dict(spec.build.keywords)
    qwen = spec.library[1].startswith("qwen")
    tensors = real["models"]["qwen_transformer" if qwen else "wan_expert"].state_dict()  # meta: shapes only
    tensors = tensors if qwen else to_native_wan_keys(tensors)
    if "arch" in kwargs:  # GGUF
        sizes = [gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[gguf_type(
            key, tuple(t.shape), high_precision=kwargs.get("high_precision", ()),
            high_precision_type=kwargs.get("high_precision_type", "F16"))]] for key, t in tensors.items()]
        return sum(t.numel() // block * size for t, (block, size) in zip(tensors.values(), sizes))
    layout = {k: v for k, v in kwargs.items() if k not in ("weights", "dtype", "prefix", "zero_cond_marker",
                                                          "prefixed_layer_names")}
    stored, _ = store(tensors, kwargs["dtype"], **layout)
    return sum(t.numel() * t.element_size() for t in stored.values())


@pytest.mark.parametrize("name", sorted(PUBLISHED_SINGLE_FILES))
def test_single_file_twin_layouts_give_the_published_sizes(real, name):
    published, within = PUBLISHED_SINGLE_FILES[name]
    assert abs(twin_layout_bytes(real, name) - published) <= within


def test_the_layouts_the_sizes_rule_out(real):
    """The blocks-only fp8 variants, kept as twins for what they may load like, miss the published sizes."""
    assert twin_layout_bytes(real, "comfy-qwen-2509-fp8-e4m3fn") - 20.4e9 > 0.05e9
    assert twin_layout_bytes(real, "lightx2v-qwen-2509-fp8-scaled") - 20.4e9 > 0.05e9


# ---------------------------------------------------------------------------------------------
# Views at real size: the same modules, never cast
# ---------------------------------------------------------------------------------------------


def dtypes(module) -> dict:
    return {name: p.dtype for name, p in module.named_parameters()}


def test_qwen_views_share_the_real_size_modules_without_a_cast(real):
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImageEditPlusPipeline

    models = real["models"]
    transformer = models["qwen_transformer"].to(torch.bfloat16)
    text_encoder, vae = models["qwen_vl"].to(torch.bfloat16), models["qwen_vae"].to(torch.bfloat16)
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    pipe = QwenImageEditPlusPipeline(FlowMatchEulerDiscreteScheduler(), vae, text_encoder, None, None, transformer)
    before = {name: dtypes(getattr(pipe, name)) for name in ("transformer", "text_encoder", "vae")}
    stored = sum(p.numel() * p.element_size() for p in transformer.parameters())
    assert stored < 21e9  # fp8 storage of the 20.4 B transformer (the norms and embedders stay bf16)
    for name in ("QwenImagePipeline", "QwenImageEditPipeline", "QwenImageEditInpaintPipeline",
                 "QwenImageEditPlusInpaintPipeline"):
        view = qwen_pipes.view(pipe, name)
        assert all(getattr(view, c) is getattr(pipe, c) for c in ("transformer", "text_encoder", "vae"))
    assert {name: dtypes(getattr(pipe, name)) for name in before} == before

    # What the views avoid: from_pipe would have cast the shared modules in place (fp8 → fp32, 4×).
    from diffusers import QwenImagePipeline

    QwenImagePipeline.from_pipe(pipe)
    assert sum(p.numel() * p.element_size() for p in transformer.parameters()) > 81e9


def test_the_svi_view_shares_the_real_size_experts_without_a_cast(real):
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline

    models = real["models"]
    pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=models["umt5"].to(torch.bfloat16),
                                   vae=models["wan_vae"].to(torch.float32), scheduler=UniPCMultistepScheduler(),
                                   transformer=models["wan_expert"].to(torch.bfloat16),
                                   transformer_2=models["wan_expert_2"].to(torch.bfloat16), boundary_ratio=0.9)
    names = ("transformer", "transformer_2", "text_encoder", "vae")
    before = {name: dtypes(getattr(pipe, name)) for name in names}
    view = svi_view(pipe)
    assert all(getattr(view, name) is getattr(pipe, name) for name in names)
    assert {name: dtypes(getattr(pipe, name)) for name in names} == before
    assert set(before["vae"].values()) == {torch.float32} and view.config.boundary_ratio == 0.9
    assert all(p.device.type == "meta" for name in names for p in getattr(pipe, name).parameters())


# ---------------------------------------------------------------------------------------------
# The sizes the pod plan declares are these estimates
# ---------------------------------------------------------------------------------------------


def test_the_pod_plans_loaded_sizes_are_the_header_estimates_at_real_size(real):
    """engine/published.py declares each component's loaded size (total, outside the blocks, largest block and
    layer) so the pod plan needs no files; here every one is the app's header estimate of the real shapes."""
    from diffbox.engine.memory import estimate_components
    from diffbox.engine.published import LOADED

    for (model, component, dtype, weights), declared in LOADED.items():
        estimate = estimate_components(real[model], "bfloat16", weights, component_dtypes={"vae": dtype})[component]
        assert estimate == declared, (model, component, dtype, weights)


def test_the_published_file_sizes_agree_with_the_shapes(real):
    from diffbox.engine import published

    wan_te = sum(f.bytes for f in published.WAN_BASE if f.path.startswith("text_encoder/model-"))
    assert wan_te == PUBLISHED[("wan", "text_encoder", "bfloat16")]
    fp16 = published.WAN_EXPERTS["fp16"]["transformer"].bytes
    assert fp16 == pytest.approx(28.6e9, abs=0.05e9)  # the hub's figure for Comfy-Org's fp16 expert
    qwen = sum(f.bytes for f in published.QWEN_TRANSFORMERS["bf16"]["transformer"] if f.path.endswith(".safetensors"))
    assert qwen == pytest.approx(PUBLISHED[("qwen", "transformer", "bfloat16")], rel=0.001)
    assert sum(f.bytes for f in published.QWEN_BASE if "text_encoder/model-" in f.path) == pytest.approx(
        PUBLISHED[("qwen", "text_encoder", "bfloat16")], rel=0.002)
