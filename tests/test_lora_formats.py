"""Every published LoRA format (as twins) loads into the right expert(s) in bf16, with the right scale,
and changes the output; at real size (meta device) every key of a real-rank SVI / Lightning LoRA lands
on a layer of the real Wan 2.2 A14B / Qwen-Image-Edit-2509 transformer."""

import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import read_frames
from diffbox.engine.loaders import load_pipeline
from diffbox.engine.loras import LoraRequest, apply_loras, wan_lora_key_renames
from diffbox.twins import TWINS
from diffbox.twins.loras import lora_tensors, qwen_modules, wan_modules
from diffbox.twins.qwen import TRANSFORMER_CONFIG as QWEN_TWIN
from diffbox.twins.wan import TRANSFORMER_CONFIG as WAN_TWIN

LORA_TWINS = [name for name, spec in TWINS.items() if spec.kind == "lora"]
WEIGHTS = {"high": (1.0, 0.0), "low": (0.0, 1.0), "both": (1.0, 1.0), "transformer": (1.0, 0.0)}
LANDS_ON = {"high": {"transformer"}, "low": {"transformer_2"}, "both": {"transformer", "transformer_2"},
            "transformer": {"transformer"}}


@pytest.fixture(scope="module")
def wan(twin):
    return load_pipeline(twin("wan2.2-i2v-a14b-diffusers"), dtype="bfloat16")


@pytest.fixture(scope="module")
def qwen(twin):
    return load_pipeline(twin("qwen-image-edit-2509"), dtype="bfloat16")


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


@pytest.mark.parametrize("name", LORA_TWINS)
def test_every_lora_format_lands_on_its_experts_in_bf16_and_changes_the_output(twin, wan, qwen, name, base_outputs,
                                                                            shrink_qwen_condition_area):
    spec = TWINS[name]
    pipe = qwen if spec.target == "transformer" else wan
    base, dtypes = base_outputs(pipe), module_dtypes(pipe)
    request = LoraRequest(name, twin(name), *WEIGHTS[spec.target])
    apply_loras(pipe, [request])
    try:
        landed = {component for component, adapters in pipe.get_list_adapters().items() if request.adapter in adapters}
        assert landed == LANDS_ON[spec.target]
        for component in landed:
            lora = {p.dtype for n, p in getattr(pipe, component).named_parameters() if request.adapter in n}
            assert lora == {torch.bfloat16}, component  # fp32 / fp16 files are stored in the model's dtype
        assert module_dtypes(pipe) == dtypes  # and the base layers stay as they were
        changed = run(pipe)
        assert np.abs(changed - base).max() > 1e-3
    finally:
        apply_loras(pipe, [])
    if name.startswith(("svi-2.0-pro-high", "qwen-2509-lightning-8steps-bf16")):
        assert np.array_equal(run(pipe), base)  # removed without a trace


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
