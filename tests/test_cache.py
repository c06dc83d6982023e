"""The VRAM-aware model cache: estimates from headers, placement decisions, eviction, idle unload.

Decisions are tested against a simulated GPU (SimulatedMemory) on two kinds of models: header-only
folders with the real Wan 2.2 A14B shapes (no weights, so a "64 GB" model costs nothing), and the
tiny demo models, which are really loaded, placed with diffusers' hooks and run.
"""

import functools
import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from diffbox.engine import loaders
from diffbox.engine.cache import GiB, MemoryStatus, ModelCache, SimulatedMemory, estimate_pipeline_bytes
from diffbox.engine.memory import (choose_placement, estimate_components, format_bytes,
                                   more_conservative_placement, projected_peak)

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def tiny_video(pipe) -> np.ndarray:
    """A 2-step, 5-frame 32x32 generation on the tiny Wan pipeline."""
    frames = pipe(Image.new("RGB", (32, 32), (200, 30, 30)), prompt="a red square", height=32, width=32,
                  num_frames=5, num_inference_steps=2, max_sequence_length=16, output_type="np",
                  generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (1, 5, 32, 32, 3) and np.isfinite(frames).all()
    return frames


class CountingLoader:
    def __init__(self):
        self.calls = []

    def __call__(self, source, **kwargs):
        self.calls.append(source.key)
        return loaders.load_pipeline(source, **kwargs)


@pytest.fixture
def wan(demo_models):
    return demo_models["wan22-i2v"]


@pytest.fixture
def two_wans(wan, tmp_path):
    """Two different models (two folders) of the same tiny size."""
    first, second = tmp_path / "wan-a", tmp_path / "wan-b"
    shutil.copytree(wan, first)
    shutil.copytree(wan, second)
    return first, second


def write_header_only_safetensors(path, model, dtype="BF16"):
    """A safetensors header with the model's real tensor names and shapes, and no data after it."""
    header, offset = {}, 0
    for name, param in model.named_parameters():
        size = param.numel() * 2
        header[name] = {"dtype": dtype, "shape": list(param.shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(blob).to_bytes(8, "little") + blob)


@pytest.fixture(scope="module")
def wan22_a14b(tmp_path_factory):
    """Wan 2.2 I2V A14B as headers only: two 14.3B experts, the UMT5-XXL encoder and the Wan VAE."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    folder = tmp_path_factory.mktemp("wan22-a14b")
    with torch.device("meta"):  # shapes only, no memory
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
            text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, rope_max_seq_len=1024)
        text_encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
            feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128))
        vae = AutoencoderKLWan()
    write_header_only_safetensors(folder / "transformer" / "diffusion_pytorch_model.safetensors", transformer)
    shutil.copytree(folder / "transformer", folder / "transformer_2")
    write_header_only_safetensors(folder / "text_encoder" / "model.safetensors", text_encoder)
    write_header_only_safetensors(folder / "vae" / "diffusion_pytorch_model.safetensors", vae)
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "WanImageToVideoPipeline", "boundary_ratio": 0.9,
        "transformer": ["diffusers", "WanTransformer3DModel"], "transformer_2": ["diffusers", "WanTransformer3DModel"],
        "text_encoder": ["transformers", "UMT5EncoderModel"], "vae": ["diffusers", "AutoencoderKLWan"],
        "tokenizer": ["transformers", "T5Tokenizer"], "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "image_encoder": [None, None], "image_processor": [None, None]}))
    return folder


def cuda_with(gib: float) -> MemoryStatus:
    return MemoryStatus("cuda", int(gib * GiB), int(gib * GiB))


# ---------------------------------------------------------------------------------------------
# Estimates
# ---------------------------------------------------------------------------------------------


def test_header_estimate_equals_the_loaded_tiny_models_bytes(wan):
    pipe = loaders.load_pipeline(wan, dtype="bfloat16")
    estimate = estimate_pipeline_bytes(wan, "bfloat16")
    loaded = {name: sum(p.numel() * p.element_size() for p in getattr(pipe, name).parameters()) for name in estimate}
    assert estimate == loaded  # exact, fp32-pinned Wan layers included
    assert set(estimate) == {"text_encoder", "transformer", "transformer_2", "vae"}  # no tokenizer/scheduler
    assert estimate_pipeline_bytes(wan, "float32")["vae"] == 2 * estimate["vae"]

    fp8 = estimate_pipeline_bytes(wan, "bfloat16", "fp8")
    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    assert fp8["transformer"] == sum(p.numel() * p.element_size() for p in pipe.transformer.parameters())
    assert fp8["text_encoder"] == estimate["text_encoder"] and fp8["vae"] == estimate["vae"]  # denoisers only


def test_real_size_wan22_estimate_and_fp8_halving(wan22_a14b):
    native = estimate_components(wan22_a14b, "bfloat16", "native")
    fp8 = estimate_components(wan22_a14b, "bfloat16", "fp8")
    expert = native["transformer"]
    assert 26.5 * GiB < expert.total_bytes < 27 * GiB  # 14.3B parameters in bf16
    assert 10.4 * GiB < native["text_encoder"].total_bytes < 10.8 * GiB  # UMT5-XXL encoder, 5.7B
    assert 0.45 < fp8["transformer"].total_bytes / expert.total_bytes < 0.52
    assert expert.largest_block_bytes * 40 < expert.total_bytes  # 40 blocks, each well under 1/40
    assert estimate_components(wan22_a14b, "float32", "native")["transformer"].total_bytes > 1.9 * expert.total_bytes


# ---------------------------------------------------------------------------------------------
# Placement decisions (pure, simulated budgets)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("free_gib, mode, weights", [
    (80, "gpu", "native"),                # H100: everything resident
    (48, "model_offload", "native"),      # one 26.6 GB expert at a time
    (24, "model_offload", "fp8"),         # RTX 4090: fp8 experts, one at a time
    (12, "group_offload", "native"),      # block by block
    (6, "sequential_offload", "native"),  # layer by layer
    (3, "sequential_offload", "native"),  # nothing fits: the smallest, with a warning
])
def test_the_fastest_placement_that_fits_is_chosen(wan22_a14b, free_gib, mode, weights):
    estimates = functools.partial(estimate_components, wan22_a14b, "bfloat16")
    reserve = 4 * GiB
    placement = choose_placement(estimates, cuda_with(free_gib), reserve)
    assert (placement.mode, placement.weights) == (mode, weights)
    assert placement.budget_bytes == free_gib * GiB
    assert placement.projected_bytes == projected_peak(mode, estimates(weights), reserve)
    if free_gib == 80:
        assert re.fullmatch(r"Projected 6\d\.\d GB ≤ 80\.0 GB free: all on GPU", placement.reason)
    elif free_gib == 3:
        assert placement.projected_bytes > 3 * GiB and "even with sequential offload" in placement.reason
    else:
        assert placement.projected_bytes <= free_gib * GiB
        label = {"model_offload": "model CPU offload", "group_offload": "group offload",
                 "sequential_offload": "sequential offload"}[mode]
        assert re.fullmatch(rf"Projected 6\d\.\d GB > {free_gib}\.0 GB free: {label}"
                            rf"{', fp8 weights' if weights == 'fp8' else ''} \(peak \d+\.\d GB\)", placement.reason)


def test_user_overrides_and_the_cpu(wan22_a14b):
    estimates = functools.partial(estimate_components, wan22_a14b, "bfloat16")
    forced = choose_placement(estimates, cuda_with(24), GiB, mode="group_offload")
    assert (forced.mode, forced.weights) == ("group_offload", "native") and "(your choice)" in forced.reason
    # A forced placement that does not fit in native storage falls back to fp8, if that fits.
    gpu = choose_placement(estimates, cuda_with(48), GiB, mode="gpu")
    assert (gpu.mode, gpu.weights) == ("gpu", "fp8")
    fp8 = choose_placement(estimates, cuda_with(80), GiB, weights="fp8")
    assert (fp8.mode, fp8.weights) == ("gpu", "fp8")
    int8 = choose_placement(estimates, cuda_with(24), GiB, weights="int8")
    assert (int8.mode, int8.weights) == ("model_offload", "int8")
    cpu = choose_placement(estimates, MemoryStatus("cpu", 64 * GiB, 60 * GiB), GiB)
    assert (cpu.mode, cpu.weights, cpu.projected_bytes) == ("cpu", "native", 0)


def test_an_out_of_memory_retry_steps_down_until_nothing_is_left(wan22_a14b):
    estimates = functools.partial(estimate_components, wan22_a14b, "bfloat16")
    status = cuda_with(80)
    placement = choose_placement(estimates, status, 4 * GiB)
    seen = [(placement.mode, placement.weights)]
    while (placement := more_conservative_placement(placement, estimates, status, 4 * GiB)) is not None:
        assert placement.vae_tiling and placement.reason.startswith("Out of memory with")
        seen.append((placement.mode, placement.weights))
    assert seen == [("gpu", "native"), ("model_offload", "native"), ("model_offload", "fp8"),
                    ("group_offload", "native"), ("sequential_offload", "native")]
    forced = more_conservative_placement(choose_placement(estimates, status, GiB, weights="fp8"), estimates, status,
                                         GiB, weights="fp8")
    assert (forced.mode, forced.weights) == ("model_offload", "fp8")  # forced weights are kept


def test_sizes_read_like_a_card_spec():
    assert format_bytes(24 * GiB) == "24.0 GB" and format_bytes(41.2 * GiB) == "41.2 GB"
    assert format_bytes(5 * 1024**2) == "5.0 MB"
    assert (format_bytes(2048), format_bytes(512), format_bytes(None)) == ("2 KB", "512 B", "—")


# ---------------------------------------------------------------------------------------------
# The cache, on the tiny models with a simulated budget
# ---------------------------------------------------------------------------------------------


def tiny_cache(total_bytes, **kwargs) -> ModelCache:
    # No activation reserve floor: the tiny models are a few hundred KB.
    return ModelCache(memory_probe=SimulatedMemory(total_bytes), min_reserve_bytes=0, **kwargs)


def test_two_models_that_do_not_fit_together_evict_the_first(two_wans):
    first, second = two_wans
    gpu_peak = projected_peak("gpu", estimate_components(first, "float32", "native"), 0) * 1.15
    cache = tiny_cache(int(gpu_peak * 1.5), loader=CountingLoader())
    messages = []
    a = cache.get(first, log=messages.append)
    assert a.placement.mode == "gpu" and cache.held_vram_bytes() > 0
    b = cache.get(second, log=messages.append)
    assert b.placement.mode == "gpu"  # not squeezed into offload next to an idle model
    assert cache.loaded() == [str(second.resolve())] and a.pipe is None
    assert any(re.fullmatch(r"Unloaded wan-a to free \d+ KB of VRAM for wan-b", m) for m in messages)


def test_a_model_larger_than_the_budget_is_offloaded_and_still_runs(wan):
    native = estimate_components(wan, "float32", "native")
    budget = (projected_peak("model_offload", native, 0) + projected_peak("gpu", native, 0)) // 2
    cache = tiny_cache(budget)
    messages = []
    loaded = cache.get(wan, log=messages.append)
    assert (loaded.placement.mode, loaded.placement.weights) == ("model_offload", "native")
    assert re.search(r"Projected \d+ KB > \d+ KB free: model CPU offload \(peak \d+ KB\)", messages[0])
    assert "CPU as the GPU" in " ".join(messages)  # says the CPU stood in for the GPU
    tiny_video(loaded.pipe)


def test_a_second_job_on_a_warm_model_does_not_load(wan):
    loader = CountingLoader()
    cache = tiny_cache(10 * GiB, loader=loader)
    first = cache.get(wan)
    with cache.measure(first):
        assert first.in_use
    messages = []
    second = cache.get(wan, log=messages.append)
    assert second is first and len(loader.calls) == 1
    assert messages == ["wan22-i2v is already loaded (all on GPU): no load needed"]
    (stats,) = cache.stats()
    assert stats["jobs"] == 1 and stats["measured_peak_bytes"] is None  # nothing to measure on a CPU
    json.dumps(stats)  # plain data, for /health
    # Other settings are another entry: the old copy is unloaded first, never kept beside it.
    fp8 = cache.get(wan, weights="fp8")
    assert len(loader.calls) == 2 and fp8.key[2] == "fp8" and len(cache.loaded()) == 1


def test_the_vae_dtype_is_loaded_counted_and_part_of_the_key(wan):
    loader = CountingLoader()
    cache = tiny_cache(10 * GiB, loader=loader)
    mixed = cache.get(wan, dtype="bfloat16", vae_dtype="float32")  # one load, two dtypes
    assert mixed.pipe.vae.dtype == torch.float32 and mixed.pipe.transformer_2.dtype == torch.bfloat16
    vae_bytes = sum(p.numel() * p.element_size() for p in mixed.pipe.vae.parameters())
    assert mixed.components["vae"].total_bytes == vae_bytes == estimate_pipeline_bytes(wan, "float32")["vae"]
    assert estimate_pipeline_bytes(wan, "bfloat16", vae_dtype="float32")["vae"] == vae_bytes
    assert cache.get(wan, dtype="bfloat16", vae_dtype="float32") is mixed and len(loader.calls) == 1
    assert cache.stats()[0]["vae_dtype"] == "float32"
    plain = cache.get(wan, dtype="bfloat16")  # VAE auto = the compute dtype: other settings, another load
    assert plain.pipe.vae.dtype == torch.bfloat16 and len(loader.calls) == 2 and len(cache.loaded()) == 1


def test_idle_models_are_unloaded(two_wans):
    now = [0.0]
    cache = tiny_cache(10 * GiB, clock=lambda: now[0], idle_unload_s=900)
    first, second = two_wans
    cache.get(first)
    now[0] = 600.0
    cache.get(second)
    now[0] = 1000.0
    assert cache.unload_idle() == [str(first.resolve())]  # 1000 s idle; the second only 400 s
    now[0] = 2000.0
    messages = []
    cache.get(first, log=messages.append)  # get() unloads the idle second one on its way
    assert messages[0] == "Unloaded wan-b after 23 min idle"
    assert cache.loaded() == [str(first.resolve())]


def test_short_ram_evicts_the_least_recently_used(two_wans):
    first, second = two_wans
    need = sum(estimate_pipeline_bytes(first).values())
    cache = ModelCache(memory_probe=lambda: MemoryStatus("cpu", 0, 0),
                       ram_probe=lambda: MemoryStatus("cpu", 3 * need // 2,
                                                      3 * need // 2 - sum(s["host_bytes"] for s in cache.stats())),
                       min_reserve_bytes=0)
    cache.get(first)
    cache.get(first)
    messages = []
    cache.get(second, log=messages.append)
    assert cache.loaded() == [str(second.resolve())]
    assert messages[0].startswith("Unloaded wan-a to free") and "of RAM for wan-b" in messages[0]


@pytest.mark.parametrize("mode", ["gpu", "model_offload", "group_offload", "sequential_offload", "cpu"])
def test_every_placement_applied_on_the_cpu_still_generates(wan, mode):
    cache = tiny_cache(10 * GiB)
    loaded = cache.get(wan, placement=mode)
    assert loaded.placement.mode == mode and "(your choice)" in loaded.placement.reason
    tiny_video(loaded.pipe)


def test_fp8_weights_run_and_shrink_the_denoisers(wan):
    cache = tiny_cache(10 * GiB)
    loaded = cache.get(wan, weights="fp8", placement="model_offload")
    assert loaded.pipe.transformer.blocks[0].ffn.net[2].weight.dtype == torch.float8_e4m3fn
    assert loaded.pipe.transformer_2.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert loaded.pipe.text_encoder.dtype == torch.float32  # only the denoisers change storage
    tiny_video(loaded.pipe)


def test_int8_weights_need_torchao(wan):
    cache = tiny_cache(10 * GiB)
    if not loaders.torchao_available():
        with pytest.raises(ValueError, match="int8 weights need torchao"):
            cache.get(wan, weights="int8")
        return
    loaded = cache.get(wan, weights="int8")
    assert loaded.placement.weights == "int8"
    tiny_video(loaded.pipe)


def test_out_of_memory_retry_replaces_without_reloading_then_gives_up(wan):
    loader = CountingLoader()
    cache = tiny_cache(10 * GiB, loader=loader)
    messages = []
    loaded = cache.get(wan)
    retry = cache.more_conservative(loaded, log=messages.append)
    assert (retry.placement.mode, retry.placement.weights) == ("model_offload", "native")
    assert len(loader.calls) == 1 and loaded.pipe is None  # moved in place; the old entry is spent
    assert retry.placement.vae_tiling and retry.pipe.vae.use_tiling
    assert messages[0].startswith("wan22-i2v: Out of memory with all on GPU")
    tiny_video(retry.pipe)
    while (nxt := cache.more_conservative(retry)) is not None:
        retry = nxt
    assert retry.placement.mode == "sequential_offload" and cache.loaded() == [str(wan.resolve())]
    tiny_video(retry.pipe)


def test_bad_arguments_are_refused_before_loading(wan):
    cache = tiny_cache(10 * GiB, loader=CountingLoader())
    with pytest.raises(ValueError, match="unknown placement 'everywhere'"):
        cache.get(wan, placement="everywhere")
    with pytest.raises(ValueError, match="unknown weights 'fp4'"):
        cache.get(wan, weights="fp4")
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        cache.get(wan, dtype="float8")
    assert cache.loaded() == []


def test_the_default_cache_still_works_without_arguments(wan):
    cache = ModelCache()
    loaded = cache.get(wan)
    assert loaded.placement.mode == ("gpu" if torch.cuda.is_available() else "cpu")
    assert cache.loaded() == [str(wan.resolve())]
    cache.close()
    assert cache.loaded() == []


# ---------------------------------------------------------------------------------------------
# Host RAM: the container's limit, the projection, the refusal, and a measured load
# ---------------------------------------------------------------------------------------------


def fake_proc(tmp_path, cgroup_line: str, total_gib=1024, available_gib=900):
    (tmp_path / "cgroup").write_text(cgroup_line + "\n")
    (tmp_path / "meminfo").write_text(f"MemTotal: {total_gib * 1024**2} kB\nMemAvailable: {available_gib * 1024**2} kB\n")
    return dict(proc_cgroup=tmp_path / "cgroup", meminfo=tmp_path / "meminfo", cgroup_root=tmp_path / "sys")


def test_host_ram_is_the_cgroup_v2_limit_not_the_machines(tmp_path):
    from diffbox.engine.host_memory import host_ram_status

    paths = fake_proc(tmp_path, "0::/pod/app")
    root = paths["cgroup_root"]
    (root / "pod" / "app").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "pod" / "memory.max").write_text(f"{46 * GiB}\n")  # the pod's limit, one level up
    (root / "pod" / "memory.current").write_text(f"{20 * GiB}\n")
    (root / "pod" / "memory.stat").write_text(f"anon {12 * GiB}\ninactive_file {6 * GiB}\n")
    (root / "pod" / "app" / "memory.max").write_text("max\n")
    status = host_ram_status(**paths)
    assert (status.total_bytes, status.free_bytes) == (46 * GiB, 46 * GiB - 14 * GiB)  # page cache counts as free


def test_host_ram_reads_cgroup_v1_and_a_namespaced_path(tmp_path):
    from diffbox.engine.host_memory import host_ram_status

    paths = fake_proc(tmp_path, "4:memory:/process_api/abc", available_gib=10)
    memory = paths["cgroup_root"] / "memory"
    memory.mkdir(parents=True)  # the path printed does not exist under the mount: the mount is the container's
    (memory / "memory.limit_in_bytes").write_text(f"{64 * GiB}\n")
    (memory / "memory.usage_in_bytes").write_text(f"{8 * GiB}\n")
    (memory / "memory.stat").write_text(f"cache {3 * GiB}\ntotal_inactive_file {2 * GiB}\n")
    status = host_ram_status(**paths)
    assert (status.total_bytes, status.free_bytes) == (64 * GiB, 10 * GiB)  # the machine has less free: it wins
    (memory / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert host_ram_status(**paths).total_bytes == 1024 * GiB


@pytest.mark.parametrize("vram, ram, expected", [
    (80, 32, ("gpu", "native")),            # each expert goes to the GPU as it loads: 26.7 GB peak on the host
    (48, 128, ("model_offload", "native")),
    (48, 48, ("gpu", "fp8")),               # model offload would keep 64 GB of bf16 weights on the host
    (24, 64, ("model_offload", "fp8")),     # 38 GB kept, 40.3 GB while the second expert loads
    (24, 32, None),                         # refused before loading, with the numbers
])
def test_host_ram_decides_the_placement_at_real_size(wan22_a14b, vram, ram, expected):
    from diffbox.engine.memory import HostMemoryError

    estimates = functools.partial(estimate_components, wan22_a14b, "bfloat16")
    host = MemoryStatus("cpu", ram * GiB, ram * GiB)
    if expected is None:
        with pytest.raises(HostMemoryError) as refused:
            choose_placement(estimates, cuda_with(vram), 4 * GiB, host=host)
        assert re.fullmatch(r"Not enough RAM: the smallest placement that fits the 24\.0 GB free on the GPU \(model CPU "
                            r"offload, fp8 weights\) needs 40\.\d GB of host RAM \(steady 38\.\d GB, 40\.\d GB while "
                            r"loading\), but only 32\.0 GB of 32\.0 GB is free; nothing was loaded\..*", str(refused.value))
        return
    placement = choose_placement(estimates, cuda_with(vram), 4 * GiB, host=host)
    assert (placement.mode, placement.weights) == expected
    assert placement.projected_bytes <= vram * GiB and placement.host_bytes <= ram * GiB
    if (vram, ram) == (48, 48):
        assert placement.reason.endswith("not model CPU offload: it needs 64.2 GB of RAM, 48.0 GB is free")


def test_group_offload_pins_only_when_the_second_copy_fits(wan22_a14b):
    estimates = functools.partial(estimate_components, wan22_a14b, "bfloat16")
    roomy = choose_placement(estimates, cuda_with(80), GiB, mode="group_offload", host=MemoryStatus("cpu", 0, 200 * GiB))
    tight = choose_placement(estimates, cuda_with(80), GiB, mode="group_offload", host=MemoryStatus("cpu", 0, 80 * GiB))
    assert roomy.pin_memory and not tight.pin_memory
    assert roomy.host_bytes > 2 * 63 * GiB and 64 * GiB < tight.host_bytes < 70 * GiB  # two copies, or one


def test_a_model_no_ram_can_hold_is_refused_before_loading(wan):
    from diffbox.engine.memory import HostMemoryError

    loader = CountingLoader()
    cache = tiny_cache(10 * GiB, loader=loader, ram_probe=lambda: MemoryStatus("cpu", 4096, 1024))  # the demo: ~100 KB
    with pytest.raises(HostMemoryError, match=r"^wan22-i2v: Not enough RAM: .* needs \d+ KB of host RAM .* but "
                                              r"only 1 KB of 4 KB is free; nothing was loaded"):
        cache.get(wan)
    assert loader.calls == [] and cache.loaded() == []


MEASURE_LOAD = """
import json, sys
from diffbox.engine.cache import GiB, MemoryStatus, ModelCache, SimulatedMemory
from diffbox.engine.host_memory import PeakRss
cache = ModelCache(memory_probe=SimulatedMemory(24 * GiB), min_reserve_bytes=0, idle_unload_s=None,
                   ram_probe=lambda: MemoryStatus("cpu", 64 * GiB, 64 * GiB))
with PeakRss() as peak:
    loaded = cache.get(sys.argv[1], dtype="bfloat16", weights="fp8", placement="model_offload")
print(json.dumps({"peak": peak.added_bytes, "projected": loaded.placement.host_bytes,
                  "bf16_experts": sum(loaded.estimates("native")[n].total_bytes for n in ("transformer", "transformer_2"))}))
"""


def test_loading_holds_no_more_host_ram_than_projected(wan, tmp_path):
    """Two float32 experts (~115 MB each) loaded in bf16 and stored in fp8, in a fresh process: the peak of
    its own memory (RssAnon) stays within the projection, below both experts in bf16 at once."""
    import subprocess
    import sys

    from diffusers import WanTransformer3DModel

    from diffbox.demo import WAN_TRANSFORMER

    folder = tmp_path / "wan-big-experts"
    shutil.copytree(wan, folder)
    config = {**WAN_TRANSFORMER, "num_attention_heads": 8, "attention_head_dim": 128, "ffn_dim": 4096, "num_layers": 3}
    for seed, name in enumerate(("transformer", "transformer_2")):
        torch.manual_seed(seed)
        shutil.rmtree(folder / name)
        WanTransformer3DModel(**config).save_pretrained(folder / name, max_shard_size="40MB")
    assert len(list((folder / "transformer").glob("*.safetensors"))) > 2
    run = subprocess.run([sys.executable, "-c", MEASURE_LOAD, str(folder)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["peak"] <= 1.15 * figures["projected"], figures
    assert figures["projected"] < 0.8 * figures["bf16_experts"] < figures["peak"] * 1.2, figures
