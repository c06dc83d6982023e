"""Every published LoRA format (as twins) lands exactly where its keys say, in bf16 and on fp8, GGUF and
int8 weights: each key is either applied to the layer it names, in the right expert, or one diffusers
0.42 cannot apply and the job log counts it. At real size (meta device) every key of a real-rank SVI /
Lightning / distill LoRA lands on a layer of the real Wan 2.2 A14B / Qwen-Image-Edit-2509 transformer."""

import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import read_frames
from diffbox.engine.cache import ModelCache
from diffbox.engine.loaders import ModelSource, load_pipeline, torchao_available
from diffbox.engine.loras import LoraRequest, apply_loras, wan_lora_key_renames
from diffbox.twins import TWINS
from diffbox.twins.loras import lora_tensors, qwen_modules, wan_modules, x2v_distill_tensors
from diffbox.twins.qwen import TRANSFORMER_CONFIG as QWEN_TWIN
from diffbox.twins.wan import TRANSFORMER_CONFIG as WAN_TWIN

LORA_TWINS = [name for name, spec in TWINS.items() if spec.kind == "lora"]
WEIGHTS = {"high": (1.0, 0.0), "low": (0.0, 1.0), "both": (1.0, 1.0), "transformer": (1.0, 0.0)}
LANDS_ON = {"high": {"transformer"}, "low": {"transformer_2"}, "both": {"transformer", "transformer_2"},
            "transformer": {"transformer"}}
EXPERT_WORDS = {"transformer": "high-noise expert", "transformer_2": "low-noise expert"}
WAN, QWEN = "wan2.2-i2v-a14b-diffusers", "qwen-image-edit-2509"


@pytest.fixture(scope="module")
def wan(twin):
    return load_pipeline(twin(WAN), dtype="bfloat16")


@pytest.fixture(scope="module")
def qwen(twin):
    return load_pipeline(twin(QWEN), dtype="bfloat16")


@pytest.fixture(scope="module")
def base_outputs():
    """Each pipeline's output without LoRAs, computed once."""
    outputs = {}
    return lambda pipe: outputs[id(pipe)] if id(pipe) in outputs else outputs.setdefault(id(pipe), run(pipe))


def run(pipe) -> np.ndarray:
    """The denoised latents of a 2-step job (both Wan experts run: t=1000 high, the next step low)."""
    generator = torch.Generator().manual_seed(0)
    if "Qwen" in type(pipe).__name__:
        out = pipe(image=[Image.new("RGB", (64, 64), (30, 120, 200))], prompt="Make the sky purple", height=64,
                   width=64, num_inference_steps=2, true_cfg_scale=1.0, output_type="latent",
                   generator=generator).images
    else:
        out = pipe(Image.new("RGB", (32, 32), (200, 30, 30)), prompt="a red square", height=32, width=32, num_frames=5,
                   num_inference_steps=2, max_sequence_length=16, output_type="latent", generator=generator).frames
    return out.float().numpy()


def module_dtypes(pipe) -> dict[str, torch.dtype]:
    return {f"{c}.{n.replace('.base_layer', '')}": p.dtype for c in ("transformer", "transformer_2")
            if getattr(pipe, c, None) is not None for n, p in getattr(pipe, c).named_parameters() if "lora_" not in n}


def pipe_for(name: str, wan, qwen):
    return qwen if TWINS[name].target == "transformer" else wan


def adapter_layers(pipe, adapter: str) -> dict[tuple[str, str], torch.nn.Module]:
    """{(layer, component): PEFT layer} of every layer that got the adapter."""
    return {(name, component): module for component in ("transformer", "transformer_2")
            if getattr(pipe, component, None) is not None
            for name, module in getattr(pipe, component).named_modules()
            if adapter in (getattr(module, "lora_A", None) or {})}


# ---------------------------------------------------------------------------------------------
# What a file's keys name, stated here independently of the loader and of the twin builders
# ---------------------------------------------------------------------------------------------

KEY = re.compile(r"^(?:diffusion_model\.|lora_unet_)?(?P<module>.+?)\.(?P<part>lora_[AB](?:\.default)?\.weight|"
                 r"lora_(?:down|up)\.weight|alpha|diff|diff_b|diff_m)$")
NATIVE_WAN = [  # original Wan module -> diffusers' WanTransformer3DModel layer
    (r"blocks\.(\d+)\.self_attn\.([qkv])", r"blocks.\1.attn1.to_\2"),
    (r"blocks\.(\d+)\.self_attn\.o", r"blocks.\1.attn1.to_out.0"),
    (r"blocks\.(\d+)\.cross_attn\.([qkv])", r"blocks.\1.attn2.to_\2"),
    (r"blocks\.(\d+)\.cross_attn\.o", r"blocks.\1.attn2.to_out.0"),
    (r"blocks\.(\d+)\.cross_attn\.([kv])_img", r"blocks.\1.attn2.add_\2_proj"),
    (r"blocks\.(\d+)\.ffn\.0", r"blocks.\1.ffn.net.0.proj"), (r"blocks\.(\d+)\.ffn\.2", r"blocks.\1.ffn.net.2"),
    (r"text_embedding\.([02])", lambda m: f"condition_embedder.text_embedder.linear_{1 + int(m[1]) // 2}"),
    (r"time_embedding\.([02])", lambda m: f"condition_embedder.time_embedder.linear_{1 + int(m[1]) // 2}"),
    (r"time_projection\.1", "condition_embedder.time_proj"), (r"head\.head", "proj_out"),
]
# Keys diffusers 0.42 has no way to apply (its Wan converter drops them), and the layers Wan 2.2 A14B lacks.
CANNOT_APPLY = re.compile(r"\.diff_m$|norm.*\.diff(?:_b)?$|patch_embedding\.diff(?:_b)?$")
NO_LAYER_IN_A14B = re.compile(r"\.cross_attn\.[kv]_img\.")


def diffusers_layer(module: str, wan: bool) -> str:
    if not wan:
        return module
    module = re.sub(r"^blocks_(\d+)_(self_attn|cross_attn|ffn)_(\w+)$", r"blocks.\1.\2.\3", module)  # musubi
    for pattern, name in NATIVE_WAN:
        if re.fullmatch(pattern, module):
            return re.sub(pattern, name, module)
    raise AssertionError(f"no diffusers layer known for {module}")


def file_landing(tensors: dict, wan: bool) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
    """({diffusers layer: [(part, key), ...]} for the keys that must land, [keys that cannot])."""
    lands, cannot = {}, []
    for key in tensors:
        if wan and (CANNOT_APPLY.search(key) or NO_LAYER_IN_A14B.search(key)):
            cannot.append(key)
            continue
        match = KEY.match(key)
        assert match, key
        lands.setdefault(diffusers_layer(match["module"], wan), []).append((match["part"], key))
    return lands, cannot


def lora_dtype(layer_name: str) -> torch.dtype:
    """diffusers keeps Wan's time embedder in fp32 (_keep_in_fp32_modules); a LoRA on it is fp32 too."""
    return torch.float32 if "time_embedder" in layer_name else torch.bfloat16


@pytest.mark.parametrize("name", LORA_TWINS)
def test_every_key_lands_on_the_layer_it_names_or_the_job_log_counts_it(twin, wan, qwen, name):
    spec, pipe = TWINS[name], pipe_for(name, wan, qwen)
    is_wan, tensors = pipe is wan, load_file(twin(name))
    lands, cannot = file_landing(tensors, is_wan)
    dtypes, said = module_dtypes(pipe), []
    request = LoraRequest(name, twin(name), *WEIGHTS[spec.target])
    apply_loras(pipe, [request], log=said.append)
    try:
        layers = adapter_layers(pipe, request.adapter)
        assert set(layers) == {(layer, component) for layer in lands for component in LANDS_ON[spec.target]}
        for (layer_name, _), layer in layers.items():
            adapter = request.adapter
            assert {p.dtype for n, p in layer.named_parameters() if adapter in n} == {lora_dtype(layer_name)}
            for part, key in lands[layer_name]:  # whole deltas arrive as they are in the file
                if part == "diff_b":
                    assert torch.equal(layer.lora_B[adapter].bias, tensors[key].to(lora_dtype(layer_name)))
                elif part == "diff":
                    assert torch.allclose(layer.get_delta_weight(adapter).float(), tensors[key].float(), atol=1e-6)
        assert module_dtypes(pipe) == dtypes  # and the base layers stay as they were
        if cannot:
            assert [s.split(", which")[0] for s in said] == [
                f"LoRA {name}: {len(cannot)} of its {len(tensors)} keys not applied to the {EXPERT_WORDS[c]}"
                for c in sorted(LANDS_ON[spec.target])]
        else:
            assert said == []
    finally:
        apply_loras(pipe, [])
    assert not adapter_layers(pipe, request.adapter)


@pytest.mark.parametrize("name", ["svi-2.0-pro-high", "qwen-2509-lightning-8steps-bf16"])
def test_a_lora_changes_the_output_and_goes_without_a_trace(twin, wan, qwen, name, base_outputs,
                                                            shrink_qwen_condition_area):
    pipe = pipe_for(name, wan, qwen)
    base = base_outputs(pipe)
    apply_loras(pipe, [LoraRequest(name, twin(name), *WEIGHTS[TWINS[name].target])])
    try:
        assert np.abs(run(pipe) - base).max() > 1e-2
    finally:
        apply_loras(pipe, [])
    assert np.array_equal(run(pipe), base)


def test_the_job_log_says_which_keys_of_the_distill_lora_were_not_applied_and_why(twin, wan):
    import diffusers

    said = []
    apply_loras(wan, [LoraRequest("loras/distill_low.safetensors", twin("distill-1022-low"), 0.0, 1.0)],
                log=said.append)
    apply_loras(wan, [LoraRequest("loras/distill_low.safetensors", twin("distill-1022-low"), 0.0, 1.0)],
                log=said.append)  # every job that uses it hears it, not only the one that loaded it
    apply_loras(wan, [])
    assert len(said) == 2 and said[0] == said[1]
    assert said[0] == ("LoRA loras/distill_low.safetensors: 25 of its 102 keys not applied to the low-noise expert, "
                       f"which diffusers {diffusers.__version__} cannot apply: 12 norm deltas, 3 modulation deltas "
                       "(diff_m), 2 patch/image-embedding deltas, 8 for layers this model does not have (e.g. "
                       "blocks.0.attn2.add_k_proj)")


# ---------------------------------------------------------------------------------------------
# Low-precision weights: fp8 storage, GGUF, int8
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp8(twin):
    """Both pipeline twins through the cache with fp8 weight storage (compute in bf16)."""
    return {name: ModelCache(idle_unload_s=None).get(twin(name), dtype="bfloat16", weights="fp8",
                                                     placement="gpu").pipe for name in (WAN, QWEN)}


def fp8_weights(pipe) -> set[str]:
    return {k for k, dtype in module_dtypes(pipe).items() if dtype == torch.float8_e4m3fn}


@pytest.mark.parametrize("name", LORA_TWINS)
def test_every_lora_format_runs_on_fp8_weights_in_the_compute_dtype(twin, fp8, name, base_outputs,
                                                                    shrink_qwen_condition_area):
    pipe = fp8[QWEN if TWINS[name].target == "transformer" else WAN]
    stored, base = fp8_weights(pipe), base_outputs(pipe)
    assert len(stored) > 10  # the block Linear weights
    request = LoraRequest(name, twin(name), *WEIGHTS[TWINS[name].target])
    apply_loras(pipe, [request])
    try:
        layers = adapter_layers(pipe, request.adapter)
        assert layers
        for (layer_name, _), layer in layers.items():
            assert {p.dtype for n, p in layer.named_parameters() if request.adapter in n} == {lora_dtype(layer_name)}
            if layer.base_layer.weight.dtype == torch.float8_e4m3fn:  # still upcast per layer by diffusers' hook
                assert "layerwise_casting" in layer.base_layer._diffusers_hook.hooks
        assert fp8_weights(pipe) == stored
        changed = run(pipe)
        assert np.isfinite(changed).all() and np.abs(changed - base).max() > 1e-3
    finally:
        apply_loras(pipe, [])


@pytest.mark.parametrize("quantized", ["gguf", pytest.param("int8", marks=pytest.mark.skipif(
    not torchao_available(), reason="int8 weights need torchao, not installed here"))])
def test_loras_on_quantized_wan_experts_run_in_the_compute_dtype(twin, quantized):
    if quantized == "gguf":
        pipe = load_pipeline(ModelSource(twin(WAN), {"transformer": twin("quantstack-wan2.2-i2v-high-q8_0")}),
                             dtype="bfloat16")
    else:
        pipe = ModelCache(idle_unload_s=None).get(twin(WAN), dtype="bfloat16", weights="int8", placement="gpu").pipe
    base = run(pipe)
    for name in ("lightning-seko-v1-high", "distill-1022-high"):  # fp32 file; bf16 file with bias deltas
        request = LoraRequest(name, twin(name), 1.0, 0.0)
        apply_loras(pipe, [request])
        layers = adapter_layers(pipe, request.adapter)
        assert layers and {layer_name for layer_name, _ in layers} >= {"blocks.0.attn1.to_q", "blocks.1.ffn.net.2"}
        for (layer_name, _), layer in layers.items():
            assert {p.dtype for n, p in layer.named_parameters() if request.adapter in n} == {lora_dtype(layer_name)}
        changed = run(pipe)
        apply_loras(pipe, [])
        assert np.isfinite(changed).all() and np.abs(changed - base).max() > 1e-3


# ---------------------------------------------------------------------------------------------
# The applied numbers
# ---------------------------------------------------------------------------------------------


def file_delta(path, module: str) -> torch.Tensor:
    """B·A·alpha/rank of one module, read from the LoRA file in whatever key style it uses."""
    tensors = load_file(path)
    for key in (module, "diffusion_model." + module, "lora_unet_" + module.replace(".", "_")):
        for down, up in (("lora_down.weight", "lora_up.weight"), ("lora_A.default.weight", "lora_B.default.weight"),
                         ("lora_A.weight", "lora_B.weight")):
            if f"{key}.{down}" in tensors:
                a, b = tensors[f"{key}.{down}"].float(), tensors[f"{key}.{up}"].float()
                alpha = tensors.get(f"{key}.alpha")
                return b @ a * (alpha.item() / a.shape[0] if alpha is not None else 1.0)
    raise KeyError(module)


SCALED = [  # (twin, module in the file's original names, the diffusers layer it must land on)
    ("lightning-seko-v1-high", "blocks.0.self_attn.q", "transformer", "blocks.0.attn1.to_q"),
    ("lightning-seko-v1-low-unprefixed", "blocks.1.ffn.2", "transformer_2", "blocks.1.ffn.net.2"),
    ("svi-2.0-pro-low", "blocks.1.cross_attn.o", "transformer_2", "blocks.1.attn2.to_out.0"),
    ("musubi-wan22", "blocks.0.ffn.0", "transformer", "blocks.0.ffn.net.0.proj"),
    ("qwen-2509-lightning-8steps-bf16", "transformer_blocks.1.img_mlp.net.0.proj", "transformer",
     "transformer_blocks.1.img_mlp.net.0.proj"),
    ("qwen-2509-lightning-4steps-fp32-prefixed", "transformer_blocks.0.attn.add_k_proj", "transformer",
     "transformer_blocks.0.attn.add_k_proj"),
]


@pytest.mark.parametrize("name, module, component, layer", SCALED)
def test_the_applied_delta_is_b_a_alpha_over_rank(twin, wan, qwen, name, module, component, layer):
    spec = TWINS[name]
    pipe = qwen if spec.target == "transformer" else wan
    request = LoraRequest(name, twin(name), *WEIGHTS[spec.target])
    apply_loras(pipe, [request])
    try:
        applied = getattr(pipe, component).get_submodule(layer).get_delta_weight(request.adapter).float()
    finally:
        apply_loras(pipe, [])
    expected = file_delta(twin(name), module)
    # bf16 storage of A and B: ~1 % per element; a wrong alpha/rank (1 instead of 1/8) would be 8x off
    assert torch.allclose(applied, expected, rtol=0.03, atol=0.03 * expected.abs().max().item())


def test_a_lora_that_matches_nothing_fails_naming_the_file(twin, wan, qwen):
    qwen_lora = LoraRequest("loras/Qwen-Image-Edit-2509-Lightning.safetensors",
                            twin("qwen-2509-lightning-8steps-bf16"), 1.0, 1.0)
    with pytest.raises(ValueError, match=re.escape(qwen_lora.name)):
        apply_loras(wan, [qwen_lora])
    svi = LoraRequest("loras/SVI_high.safetensors", twin("svi-2.0-pro-high"), 1.0, 0.0)
    with pytest.raises(ValueError, match=re.escape(svi.name)):
        apply_loras(qwen, [svi])
    assert not wan.get_list_adapters().get("transformer") and not qwen.get_list_adapters().get("transformer")


def test_diffsynth_and_unprefixed_keys_get_the_prefix_diffusers_converts():
    svi = ["blocks.3.self_attn.q.lora_A.default.weight", "blocks.3.ffn.2.lora_B.default.weight"]
    assert wan_lora_key_renames(svi) == {
        "blocks.3.self_attn.q.lora_A.default.weight": "diffusion_model.blocks.3.self_attn.q.lora_A.weight",
        "blocks.3.ffn.2.lora_B.default.weight": "diffusion_model.blocks.3.ffn.2.lora_B.weight"}
    assert wan_lora_key_renames(["blocks.0.cross_attn.k.lora_down.weight", "blocks.0.cross_attn.k.alpha"]) == {
        "blocks.0.cross_attn.k.lora_down.weight": "diffusion_model.blocks.0.cross_attn.k.lora_down.weight",
        "blocks.0.cross_attn.k.alpha": "diffusion_model.blocks.0.cross_attn.k.alpha"}
    # formats diffusers already reads are left alone
    assert wan_lora_key_renames(["diffusion_model.blocks.0.self_attn.q.lora_down.weight"]) == {}
    assert wan_lora_key_renames(["transformer.blocks.0.attn1.to_q.lora_A.weight"]) == {}
    assert wan_lora_key_renames(["lora_unet_blocks_0_self_attn_q.lora_down.weight"]) == {}


# ---------------------------------------------------------------------------------------------
# Real size, on the meta device: nothing allocated, seconds
# ---------------------------------------------------------------------------------------------

REAL_WAN = dict(WAN_TWIN, attention_head_dim=128, ffn_dim=13824, num_attention_heads=40, num_layers=40, text_dim=4096)
REAL_QWEN = dict(QWEN_TWIN, attention_head_dim=128, axes_dims_rope=[16, 56, 56], joint_attention_dim=3584,
                 num_attention_heads=24, num_layers=60)
LORA_KEY = re.compile(r"^transformer\.(.+)\.(lora_A|lora_B)\.(weight|bias)$")


def landing(model: torch.nn.Module, converted: dict) -> tuple[set[str], list[str]]:
    """(modules hit, keys that name no Linear of the right shape)."""
    modules, hit, misses = dict(model.named_modules()), set(), []
    for key, value in converted.items():
        name, part, kind = LORA_KEY.match(key).groups()
        layer = modules.get(name)
        if not isinstance(layer, torch.nn.Linear):
            misses.append(key)
            continue
        rank = value.shape[0] if part == "lora_A" else value.shape[-1]
        shape = {("lora_A", "weight"): (rank, layer.in_features), ("lora_B", "weight"): (layer.out_features, rank),
                 ("lora_B", "bias"): (layer.out_features,)}[(part, kind)]
        if tuple(value.shape) != shape:
            misses.append(key)
        hit.add(name)
    return hit, misses


@pytest.fixture(scope="module")
def real_wan():
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    with init_empty_weights():
        return WanTransformer3DModel.from_config(REAL_WAN)


def test_real_rank_svi_and_lightning_loras_land_on_every_layer_of_the_real_wan_expert(real_wan):
    from diffusers import WanImageToVideoPipeline

    assert sum(p.numel() for p in real_wan.parameters()) == 14_288_901_184  # the published I2V A14B count
    svi = lora_tensors(wan_modules(REAL_WAN), "diffsynth", seed=0, name="svi", rank=128, device="meta")
    seko = lora_tensors(wan_modules(REAL_WAN), "kohya", seed=0, name="seko", rank=64, alpha=8.0,
                        prefix="diffusion_model.", device="meta")
    # the key sets reproduce the published sizes: 1.23 GB in 16-bit at rank 128, in fp32 at rank 64
    assert len(svi) == 800 and sum(v.numel() * 2 for v in svi.values()) == 1_226_833_920
    assert len(seko) == 1200 and sum(v.numel() * 4 for k, v in seko.items() if "alpha" not in k) == 1_226_833_920
    for lora in (svi, seko, {k.removeprefix("diffusion_model."): v for k, v in seko.items()}):
        renames = wan_lora_key_renames(lora)
        converted = WanImageToVideoPipeline.lora_state_dict({renames.get(k, k): v for k, v in lora.items()})
        hit, misses = landing(real_wan, converted)
        assert misses == [] and len(hit) == 400  # 40 blocks x (8 attention projections + 2 ffn)


def test_the_distill_loras_key_set_reproduces_both_published_file_sizes():
    """The extractor's rules applied to the real expert give exactly the published high-noise file: its
    tensors plus a header of the same bytes per key as Kijai's fp16 Seko resave (400 pairs + alphas)."""
    high = x2v_distill_tensors("high", seed=0, name="high", config=REAL_WAN, rank=64, device="meta")
    low = x2v_distill_tensors("low", seed=0, name="low", config=REAL_WAN, rank=64, device="meta")
    data = {which: sum(v.numel() * 2 for v in tensors.values()) for which, tensors in (("high", high), ("low", low))}
    assert len(high) == 1500 and data["high"] == 634_464_384
    header_per_key = (634_645_944 - data["high"]) / len(high)
    seko_header_per_key = (613_561_776 - 613_416_960 - 400 * 2) / 1200
    assert abs(header_per_key - seko_header_per_key) < 2  # one pair more or less would be ~900 bytes per key off
    # the low-noise file adds Wan 2.1's k_img / v_img pairs: 104,857,600 of the 104,826,160 bytes between them
    assert data["low"] - data["high"] == 80 * 64 * (5120 + 5120) * 2
    assert abs((739_472_104 - 634_645_944) / (data["low"] - data["high"]) - 1) < 0.001


@pytest.mark.parametrize("which", ["high", "low"])
def test_a_real_rank_distill_lora_lands_on_every_layer_of_the_real_wan_expert_it_names(real_wan, which):
    from diffusers import WanImageToVideoPipeline

    lora = x2v_distill_tensors(which, seed=0, name=which, config=REAL_WAN, rank=64, device="meta")
    hit, misses = landing(real_wan, WanImageToVideoPipeline.lora_state_dict(lora))
    # 400 block layers + text (2) and time (2) embedders + time_proj + proj_out (head.head.diff as a full pair)
    assert len(hit) == 406 and "proj_out" in hit and "condition_embedder.time_embedder.linear_1" in hit
    image_branch = {f"transformer.blocks.{i}.attn2.add_{kv}_proj" for i in range(40) for kv in "kv"}
    assert {name.rsplit(".", 2)[0] for name in misses} == (image_branch if which == "low" else set())


def test_a_real_rank_qwen_lightning_lora_lands_on_every_layer_of_the_real_2509_transformer():
    from accelerate import init_empty_weights
    from diffusers import QwenImageEditPlusPipeline, QwenImageTransformer2DModel

    with init_empty_weights():
        model = QwenImageTransformer2DModel.from_config(REAL_QWEN)
    assert sum(p.numel() for p in model.parameters()) == 20_430_401_088  # the published 2509 count
    lora = lora_tensors(qwen_modules(REAL_QWEN), "kohya", seed=0, name="qwen", rank=64, alpha=8.0, device="meta")
    assert sum(v.numel() * 2 for k, v in lora.items() if "alpha" not in k) == 849_346_560  # the 850 MB bf16 file
    for prefix in ("", "diffusion_model."):
        converted = QwenImageEditPlusPipeline.lora_state_dict({prefix + k: v for k, v in lora.items()})
        hit, misses = landing(model, converted)
        assert misses == [] and len(hit) == 720  # 60 blocks x 12 Linears


def test_an_svi_job_runs_in_bf16_with_the_official_svi_loras(services, twin, tmp_path):
    """The files the SVI preset downloads, through the app's SVI job (they failed before step 1)."""
    from diffbox.store import DONE

    folder = services.settings.models_dir / "twins"
    folder.mkdir()
    for name in ("wan2.2-i2v-a14b-diffusers", "svi-2.0-pro-high", "svi-2.0-pro-low"):
        (folder / twin(name).name).symlink_to(twin(name), target_is_directory=twin(name).is_dir())
    image = tmp_path / "anchor.png"
    Image.new("RGB", (40, 40), (20, 60, 220)).save(image)
    params = {"model": "twins/Wan2.2-I2V-A14B-Diffusers", "dtype": "bfloat16", "width": 32, "height": 32,
              "num_frames": 9, "num_inference_steps": 2, "num_clips": 2, "seed": 5,
              "svi_lora_high": "twins/SVI_Wan2.2-I2V-A14B_high_noise_lora_v2.0_pro.safetensors",
              "svi_lora_low": "twins/SVI_Wan2.2-I2V-A14B_low_noise_lora_v2.0_pro.safetensors"}
    outcome = services.submit_svi(params, str(image)).wait(180)
    assert outcome.status == DONE, outcome.error
    assert len(read_frames(outcome.result.outputs[0])) == 9 + (9 - 5)  # clip 0, then 9 - (1 + 4) new frames
