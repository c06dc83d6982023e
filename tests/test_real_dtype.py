"""Every workflow in bfloat16, as on a GPU: no mode, view, LoRA change, preset or out-of-memory retry
changes the dtype, the device or the hooks of any module of the cached pipeline.

Runs on the twins of the published repos (Wan2.2-I2V-A14B-Diffusers: fp32 experts on disk, loaded in
bf16 with the VAE in fp32; Qwen-Image-Edit-2509: QwenImageEditPlusPipeline), and on the demo Qwen model
for the original Qwen-Image-Edit's routes. CPU bf16 is slow per FLOP but the models are tiny, so each
job takes a fraction of a second.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import running_services

from diffbox.engine import qwen_pipes
from diffbox.engine.cache import ModelCache, SimulatedMemory
from diffbox.presets import load_shipped
from diffbox.store import DONE
from diffbox.workflows import i2v, qwen_edit
from diffbox.workflows.registry import WORKFLOWS

BF16 = {"dtype": "bfloat16"}
WAN_SMALL = {**BF16, "width": 32, "height": 32, "num_frames": 9, "num_inference_steps": 2, "seed": 3,
             "prompt": "a lighthouse in a storm"}
QWEN_SMALL = {**BF16, "width": 64, "height": 64, "num_inference_steps": 2, "seed": 3, "prompt": "paint it red"}
WAN_LORAS = ["loras/SVI_Wan2.2-I2V-A14B_high_noise_lora_v2.0_pro.safetensors", "loras/low_noise_model.safetensors"]
QWEN_LORA = "loras/Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors"
CONTROLNET = "fit-qwen-controlnet"
SVI_SMALL = {k: v for k, v in WAN_SMALL.items() if k != "prompt"} | {
    "num_clips": 2, "prompts": ["waves"], "svi_lora_high": WAN_LORAS[0], "svi_lora_low": WAN_LORAS[1]}


# ---------------------------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------------------------


# The twins of the LoRA files the shipped presets pin, under the names a download gives them (loras/<file name>).
PRESET_LORA_TWINS = ("svi-2.0-pro-high", "svi-2.0-pro-low", "lightning-seko-v1-high", "lightning-seko-v1-low",
                     "qwen-2509-lightning-8steps-bf16")


@pytest.fixture
def home(twin, demo_home):
    """The demo home plus the twins of the two published pipelines ("wan", "qwen-2509") and of the LoRAs
    the shipped presets pin, so every preset runs exactly as shipped."""
    models = demo_home / "models"
    (models / "wan").symlink_to(twin("wan2.2-i2v-a14b-diffusers"))
    (models / "qwen-2509").symlink_to(twin("qwen-image-edit-2509"))
    (models / "loras").mkdir()
    for name in (*PRESET_LORA_TWINS, "distill-1022-low"):
        file = twin(name)
        (models / "loras" / file.name).symlink_to(file)
    write_fitting_controlnet(models / "qwen-2509", models)
    return demo_home


def write_fitting_controlnet(qwen, models) -> None:
    """A Qwen-Image ControlNet shaped for the 2509 twin (none is published as a twin), random weights."""
    from diffusers import QwenImageControlNetModel, QwenImageTransformer2DModel

    config = QwenImageTransformer2DModel.load_config(qwen / "transformer")
    torch.manual_seed(3)
    dims = {k: v for k, v in config.items() if not k.startswith("_") and k != "guidance_embeds"}
    controlnet = QwenImageControlNetModel(**{**dims, "num_layers": 1})
    for layer in [*controlnet.controlnet_blocks, controlnet.controlnet_x_embedder]:
        layer.reset_parameters()  # the real class starts them at zero: a ControlNet that does nothing
    controlnet.save_pretrained(models / CONTROLNET)


@pytest.fixture
def services(home):
    with running_services(home) as started:
        yield started


def noise(size=(64, 48), seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "start.png"
    noise((40, 40), 1).save(path)
    return str(path)


def done(job, timeout=300):
    outcome = job.wait(timeout)
    assert outcome.status == DONE, outcome.error
    return outcome.result


# ---------------------------------------------------------------------------------------------
# What "placed" means: every parameter's dtype and device, every hook
# ---------------------------------------------------------------------------------------------


def snapshot(pipe) -> dict:
    """Dtype and device of every base parameter and buffer of every module, and the hooks on each
    submodule (diffusers' registry: layerwise casting, group offload; accelerate's offload hook).
    LoRA adapters are left out: adding them is their job; PEFT's wrapper renames the base weight."""
    state = {}
    for component, module in pipe.components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        tensors = [*module.named_parameters(), *module.named_buffers()]
        for name, tensor in tensors:
            if "lora_" not in name:
                state[f"{component}.{name.replace('.base_layer', '')}"] = (tensor.dtype, tensor.device.type)
        for name, sub in module.named_modules():
            if "lora_" in name:
                continue
            registry = getattr(sub, "_diffusers_hook", None)
            hooks = tuple(sorted(registry.hooks)) if registry is not None else ()
            offload = type(getattr(sub, "_hf_hook", None)).__name__
            if hooks or offload != "NoneType":
                state[f"{component}.{name.replace('.base_layer', '')}#hooks"] = (hooks, offload)
    return state


def cached_pipe(services):
    (entry,) = [e for e in services.cache._entries.values()]
    return entry.pipe


def assert_unchanged(before: dict, after: dict, what: str) -> None:
    changed = {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not changed, f"{what} changed {len(changed)} module entries, e.g. {list(changed.items())[:3]}"


def dtypes_of(module: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for name, p in module.named_parameters() if "lora_" not in name}


def shipped(workflow: str) -> list[dict]:
    return [p for p in load_shipped() if p["workflow"] == workflow]


def demo_loras(params: dict, lora: str) -> dict:
    """A Qwen preset's params with a LoRA that fits the demo model (the published ones fit 2509)."""
    return {**params, "loras": [{**entry, "name": lora} for entry in params.get("loras", [])]}


# ---------------------------------------------------------------------------------------------
# Wan: I2V and SVI share one cached pipeline
# ---------------------------------------------------------------------------------------------


def test_wan_in_bf16_keeps_every_module_as_placed_and_the_vae_in_fp32(services, image):
    done(services.submit_i2v({**WAN_SMALL, "model": "wan"}, image))
    pipe = cached_pipe(services)
    placed = snapshot(pipe)
    assert dtypes_of(pipe.vae) == {torch.float32}  # diffusers' recommendation, under bf16 experts
    assert dtypes_of(pipe.text_encoder) == {torch.bfloat16}
    for expert in (pipe.transformer, pipe.transformer_2):  # bf16, except what diffusers pins to fp32
        assert torch.bfloat16 in dtypes_of(expert)
        pinned = {n for n, p in expert.named_parameters() if p.dtype == torch.float32}
        assert all(any(m in n for m in expert._keep_in_fp32_modules) for n in pinned)

    loras = [{"name": WAN_LORAS[0], "weight_high": 1.0, "weight_low": 0.0},
             {"name": WAN_LORAS[1], "weight_high": 0.0, "weight_low": 0.7}]
    jobs = [("i2v with LoRAs", services.submit_i2v, {**WAN_SMALL, "loras": loras}),
            ("i2v without them", services.submit_i2v, WAN_SMALL),
            ("svi (its own view)", services.submit_svi, SVI_SMALL)]
    tiny = {"width": 32, "height": 32, "num_frames": 9}  # the preset's own steps, scheduler, shift and CFG
    for preset in shipped("i2v"):  # with the twins of the very LoRA files they pin
        jobs.append((f"preset {preset['name']}", services.submit_i2v, {**WAN_SMALL, **preset["params"], **tiny}))
    for preset in shipped("svi"):
        jobs.append((f"preset {preset['name']}", services.submit_svi, {**SVI_SMALL, **preset["params"], **tiny}))
    for what, submit, params in jobs:
        done(submit({**params, "model": "wan"}, image))
        assert cached_pipe(services) is pipe, f"{what} loaded the model again"
        assert_unchanged(placed, snapshot(pipe), what)


def test_an_out_of_memory_retry_moves_the_weights_but_never_casts_them(services, image, monkeypatch):
    services.cache = ModelCache(memory_probe=SimulatedMemory(24 * 2**30))  # decide as on a 24 GB GPU
    done(services.submit_i2v({**WAN_SMALL, "model": "wan"}, image))
    before = snapshot(cached_pipe(services))
    real_run, calls = i2v.run, []

    def run_out_of_memory_once(ctx, pipe, job, *args, **kwargs):
        calls.append(job.params["vae_tiling"])
        if len(calls) == 1:  # what a too-big job does on a GPU
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(ctx, pipe, job, *args, **kwargs)

    monkeypatch.setitem(WORKFLOWS, "i2v", replace(i2v.WORKFLOW, run=run_out_of_memory_once))
    result = done(services.submit_i2v({**WAN_SMALL, "model": "wan"}, image))
    assert calls == [False, True] and result.metadata["placement"] == "model_offload"
    after = snapshot(cached_pipe(services))
    assert {k: v for k, v in after.items() if not k.endswith("#hooks")} == \
           {k: v for k, v in before.items() if not k.endswith("#hooks")}  # every dtype as loaded
    assert any(v[1] != "NoneType" for k, v in after.items() if k.endswith("#hooks"))  # now offload hooks
    assert dtypes_of(cached_pipe(services).vae) == {torch.float32}
    monkeypatch.setitem(WORKFLOWS, "i2v", i2v.WORKFLOW)
    # A view over the offloaded pipeline. (No new LoRA here: diffusers re-installs model offload around a LoRA
    # load with its default device, which must be an accelerator: a CPU-only artifact.)
    done(services.submit_svi({**SVI_SMALL, "model": "wan", "svi_lora_high": "", "svi_lora_low": ""}, image))
    assert_unchanged(after, snapshot(cached_pipe(services)), "svi under model offload")


DISTILL_LOW = "wan2.2_i2v_A14b_low_noise_lora_rank64_lightx2v_4step_1022.safetensors"


def test_loras_on_fp8_weights_live_in_the_compute_dtype_and_survive_an_out_of_memory_retry(services, image,
                                                                                          monkeypatch):
    import diffusers

    from conftest import read_frames

    services.cache = ModelCache(memory_probe=SimulatedMemory(24 * 2**30))  # all on the "GPU" first
    fp8 = {**WAN_SMALL, "model": "wan", "weights": "fp8"}
    loras = [{"name": WAN_LORAS[0], "weight_high": 1.0, "weight_low": 0.0},   # SVI high: a bf16 file
             {"name": WAN_LORAS[1], "weight_high": 0.0, "weight_low": 1.0}]   # Lightning low: an fp32 file
    without = done(services.submit_i2v(fp8, image))
    pipe = cached_pipe(services)
    stored = {k: v for k, v in snapshot(pipe).items() if v[0] == torch.float8_e4m3fn}
    assert len(stored) > 10
    distill = {"name": "loras/" + DISTILL_LOW, "weight_high": 0.0, "weight_low": 1.0}
    job = services.submit_i2v({**fp8, "loras": [distill]}, image)
    done(job)
    notes = services.history.get(job.id)["notes"]  # the keys diffusers cannot apply, counted for the user
    assert [n for n in notes if n.startswith("LoRA ")] == [
        f"LoRA loras/{DISTILL_LOW}: 25 of its 102 keys not applied to the low-noise expert, which diffusers "
        f"{diffusers.__version__} cannot apply: 12 norm deltas, 3 modulation deltas (diff_m), 2 patch/image-embedding "
        "deltas, 8 for layers this model does not have (e.g. blocks.0.attn2.add_k_proj)"]
    real_settings, calls = i2v.apply_job_settings, []

    def out_of_memory_once_the_loras_are_on(ctx, target, *args, **kwargs):
        two_experts = real_settings(ctx, target, *args, **kwargs)
        calls.append(target)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return two_experts

    monkeypatch.setattr(i2v, "apply_job_settings", out_of_memory_once_the_loras_are_on)
    result = done(services.submit_i2v({**fp8, "loras": loras}, image))
    assert len(calls) == 2 and (result.metadata["placement"], result.metadata["weights"]) == ("model_offload", "fp8")
    assert cached_pipe(services) is pipe  # re-placed in memory: the weights stay fp8 and the LoRAs stay loaded
    assert {k: v for k, v in snapshot(pipe).items() if v[0] == torch.float8_e4m3fn} == stored
    for expert in (pipe.transformer, pipe.transformer_2):
        lora = {p.dtype for n, p in expert.named_parameters() if "lora_" in n}
        assert lora == {torch.bfloat16}
    assert not np.array_equal(np.stack(read_frames(result.outputs[0])), np.stack(read_frames(without.outputs[0])))


# ---------------------------------------------------------------------------------------------
# Qwen: one cached pipeline, every mode through views over it
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, plus, lora, controlnet", [
    ("qwen-2509", True, QWEN_LORA, CONTROLNET),
    ("demo/qwen-image-edit", False, "demo/loras/qwen-lora.safetensors", "demo/qwen-controlnet"),  # the original Edit
])
def test_qwen_in_bf16_every_mode_keeps_every_module_as_placed(services, shrink_qwen_condition_area, model, plus,
                                                              lora, controlnet):
    refs, mask = [noise(seed=s) for s in range(3)], Image.new("L", (64, 48), 0)
    mask.paste(255, (16, 8, 40, 32))
    first = done(services.submit_qwen_edit({**QWEN_SMALL, "model": model, "mode": "edit"}, refs[:1]))
    pipe = cached_pipe(services)
    placed = snapshot(pipe)
    assert type(pipe).__name__ == ("QwenImageEditPlusPipeline" if plus else "QwenImageEditPipeline")
    assert {dtypes_of(getattr(pipe, n)) == {torch.bfloat16} for n in ("transformer", "text_encoder", "vae")} == {True}

    jobs = [("generate", {"mode": "generate"}, [], None, None),
            ("edit, 3 references", {"mode": "edit"}, refs, None, None),
            ("inpaint", {"mode": "inpaint"}, refs[:1], mask, None),
            ("ControlNet", {"mode": "generate", "controlnet": controlnet}, [], None, noise((64, 64), 7)),
            ("a LoRA", {"mode": "edit", "loras": [{"name": lora, "weight": 0.8}]}, refs[:1], None, None),
            ("no LoRA again", {"mode": "edit"}, refs[:1], None, None)]
    jobs += [(f"preset {p['name']}", p["params"] if plus else demo_loras(p["params"], lora), refs[:1], None, None)
             for p in shipped("qwen_edit")]
    pipelines = {"edit, 1 reference": first.metadata["pipeline"]}
    for what, params, images, job_mask, control in jobs:
        result = done(services.submit_qwen_edit({**QWEN_SMALL, **params, "model": model}, images, job_mask,
                                                control))
        pipelines[what] = result.metadata["pipeline"]
        assert cached_pipe(services) is pipe, f"{what} loaded the model again"
        assert_unchanged(placed, snapshot(pipe), what)
    assert pipelines["edit, 1 reference"] == ("QwenImageEditPlusPipeline" if plus else "QwenImageEditPipeline")
    assert pipelines["inpaint"] == ("QwenImageEditPlusInpaintPipeline" if plus else "QwenImageEditInpaintPipeline")
    assert pipelines["edit, 3 references"] == "QwenImageEditPlusPipeline"
    assert pipelines["generate"] == "QwenImagePipeline" and pipelines["ControlNet"] == "QwenImageControlNetPipeline"


@pytest.mark.parametrize("storage", [{"weights": "fp8"}, {"weights": "fp8", "placement": "group_offload"}])
def test_fp8_storage_and_offload_hooks_survive_every_qwen_view(services, shrink_qwen_condition_area, storage):
    refs, mask = [noise(seed=s) for s in range(2)], Image.new("L", (64, 48), 0)
    mask.paste(255, (0, 0, 32, 48))
    services.cache = ModelCache(memory_probe=SimulatedMemory(24 * 2**30))  # placements as on a 24 GB GPU
    fp8 = {**QWEN_SMALL, "model": "qwen-2509", **storage}
    done(services.submit_qwen_edit({**fp8, "mode": "edit"}, refs[:1]))
    pipe = cached_pipe(services)
    stored = {n for n, p in pipe.transformer.named_parameters() if p.dtype == torch.float8_e4m3fn}
    assert len(stored) > 10  # the block Linear weights
    placed = snapshot(pipe)
    if "placement" in storage:
        assert any("group_offloading" in str(v[0]) for k, v in placed.items() if k.endswith("#hooks"))
    for params, images, job_mask in [({"mode": "generate"}, [], None), ({"mode": "inpaint"}, refs[:1], mask),
                                     ({"mode": "edit"}, refs, None)]:
        done(services.submit_qwen_edit({**fp8, **params}, images, job_mask))
        assert_unchanged(placed, snapshot(pipe), params["mode"])
    assert {n for n, p in pipe.transformer.named_parameters() if p.dtype == torch.float8_e4m3fn} == stored


def test_qwen_out_of_memory_retry_never_casts(services, shrink_qwen_condition_area, monkeypatch):
    services.cache = ModelCache(memory_probe=SimulatedMemory(24 * 2**30))
    params = {**QWEN_SMALL, "model": "qwen-2509", "mode": "generate"}
    done(services.submit_qwen_edit(params))
    before = {k: v for k, v in snapshot(cached_pipe(services)).items() if not k.endswith("#hooks")}
    real_run, calls = qwen_edit.run, []

    def run_out_of_memory_once(ctx, pipe, job, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(ctx, pipe, job, *args, **kwargs)

    monkeypatch.setitem(WORKFLOWS, "qwen_edit", replace(qwen_edit.WORKFLOW, run=run_out_of_memory_once))
    result = done(services.submit_qwen_edit(params))
    assert len(calls) == 2 and result.metadata["placement"] != "gpu"
    after = {k: v for k, v in snapshot(cached_pipe(services)).items() if not k.endswith("#hooks")}
    assert after == before


def test_views_share_the_modules_and_build_without_from_pipe(twin, monkeypatch):
    from diffusers import DiffusionPipeline

    from diffbox.engine.loaders import load_pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("from_pipe casts every shared module; views must not use it")

    monkeypatch.setattr(DiffusionPipeline, "from_pipe", classmethod(refuse))
    pipe = load_pipeline(twin("qwen-image-edit-2509"), dtype="bfloat16")
    assert type(pipe).__name__ == "QwenImageEditPlusPipeline"
    for name in ("QwenImagePipeline", "QwenImageEditPipeline", "QwenImageEditInpaintPipeline",
                 "QwenImageEditPlusInpaintPipeline"):
        view = qwen_pipes.view(pipe, name)
        assert type(view).__name__ == name and qwen_pipes.view(pipe, name) is view  # built once
        for component in ("transformer", "vae", "text_encoder", "scheduler"):
            assert getattr(view, component) is getattr(pipe, component)
        assert pipe.transformer.dtype == torch.bfloat16
