"""Where models come from: local folders, HF cache snapshots, single-file checkpoints (safetensors, GGUF)."""

import functools
import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from diffbox.engine import loaders
from diffbox.engine.cache import ModelCache, ModelSource, estimate_pipeline_bytes
from diffbox.engine.loaders import load_pipeline, load_single_file, resolve_diffusers_folder
from diffbox.twins import TWINS
from diffbox.twins.qwen import qwen_transformer_weights
from diffbox.twins.wan import to_native_wan_keys, wan_expert_weights


def tiny_video(pipe) -> np.ndarray:
    frames = pipe(Image.new("RGB", (32, 32), (200, 30, 30)), prompt="a red square", height=32, width=32,
                  num_frames=5, num_inference_steps=2, max_sequence_length=16, output_type="np",
                  generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (1, 5, 32, 32, 3) and np.isfinite(frames).all()
    return frames


@pytest.fixture
def wan(demo_models):
    return demo_models["wan22-i2v"]


@pytest.fixture
def swapped_expert_files(wan, tmp_path):
    """The demo's two experts as single files, swapped (so a test can tell the files were used):
    the low-noise expert with diffusers keys, the high-noise one with original Wan keys."""
    first, second = tmp_path / "wan-first.safetensors", tmp_path / "wan-second.safetensors"
    save_file(load_file(wan / "transformer_2" / "diffusion_pytorch_model.safetensors"), first)
    save_file(to_native_wan_keys(load_file(wan / "transformer" / "diffusion_pytorch_model.safetensors")), second)
    return first, second


# ---------------------------------------------------------------------------------------------
# Folders and the HF cache
# ---------------------------------------------------------------------------------------------


def test_load_pipeline_from_a_folder_keeps_its_signature(wan):
    pipe = load_pipeline(wan)
    assert pipe.__class__.__name__ == "WanImageToVideoPipeline" and pipe.transformer.dtype == torch.float32
    assert load_pipeline(str(wan), dtype="bfloat16").transformer.dtype == torch.bfloat16
    from diffusers import WanImageToVideoPipeline
    assert isinstance(load_pipeline(wan, dtype=torch.float32, pipeline_class=WanImageToVideoPipeline),
                      WanImageToVideoPipeline)


SHA = "0123456789abcdef0123456789abcdef01234567"


def make_hf_cache(root, wan, repo="diffbox/tiny-wan", sha=SHA):
    repo_folder = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(wan, repo_folder / "snapshots" / sha)
    (repo_folder / "refs").mkdir()
    (repo_folder / "refs" / "main").write_text(sha)
    return repo_folder


def test_a_repo_id_resolves_to_its_snapshot_in_the_hf_cache(wan, tmp_path, monkeypatch):
    repo_folder = make_hf_cache(tmp_path / "hub", wan)
    snapshot = (repo_folder / "snapshots" / SHA).resolve()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # read at call time, like prepare_home's HF_HOME
    assert resolve_diffusers_folder("diffbox/tiny-wan") == snapshot
    assert resolve_diffusers_folder(f"diffbox/tiny-wan@{SHA}") == snapshot
    assert resolve_diffusers_folder(repo_folder) == snapshot  # the models--org--name folder itself
    with pytest.raises(FileNotFoundError, match="diffbox/absent is not in the Hugging Face cache"):
        resolve_diffusers_folder("diffbox/absent")
    cache = ModelCache(idle_unload_s=None)
    messages = []
    cache.get("diffbox/tiny-wan", log=messages.append)
    assert cache.loaded() == [str(snapshot)] and "diffbox/tiny-wan" in messages[0]


def test_missing_and_wrong_paths_are_named(wan, tmp_path):
    with pytest.raises(FileNotFoundError, match="no model at /nowhere/model"):
        resolve_diffusers_folder("/nowhere/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty/model_index.json is missing"):
        resolve_diffusers_folder(tmp_path / "empty")
    single = tmp_path / "model.safetensors"
    single.write_bytes(b"")
    with pytest.raises(ValueError, match="is a single-file checkpoint: load it into a base model"):
        load_pipeline(single)
    broken = tmp_path / "broken"
    shutil.copytree(wan, broken)
    (broken / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match=r"broken/vae/diffusion_pytorch_model.safetensors is not a valid safetensors"):
        estimate_pipeline_bytes(broken)
    # Pickled weights have no header: their size on disk stands in.
    (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    (broken / "vae" / "diffusion_pytorch_model.bin").write_bytes(b"\0" * 12345)
    assert estimate_pipeline_bytes(broken)["vae"] == 12345


# ---------------------------------------------------------------------------------------------
# Single-file checkpoints
# ---------------------------------------------------------------------------------------------


def test_single_file_experts_replace_the_folders_own(wan, swapped_expert_files):
    first, second = swapped_expert_files
    source = ModelSource(wan, {"transformer": first, "transformer_2": second})
    from_files = load_pipeline(source)
    folder = load_pipeline(wan)
    for name, expected in (("transformer", folder.transformer_2), ("transformer_2", folder.transformer)):
        # diffusers keys load as they are, original Wan keys are converted: both give the same weights
        expected = expected.state_dict()
        assert all(torch.equal(value, expected[key]) for key, value in getattr(from_files, name).state_dict().items())
    ignored = tiny_video(folder)  # what the job would make if the files were not used
    folder.transformer, folder.transformer_2 = folder.transformer_2, folder.transformer
    swapped = tiny_video(folder)
    # Same weights, same output, up to float noise: CPU kernels may sum in another order (a quarter of an 8-bit
    # level, far below what ignoring the files changes)
    tolerance = 1e-3
    assert np.abs(ignored - swapped).max() > 100 * tolerance
    np.testing.assert_allclose(tiny_video(from_files), swapped, atol=tolerance, rtol=0)
    # The cache keys the model by its files too, and estimates them from their headers.
    cache = ModelCache(idle_unload_s=None)
    loaded = cache.get(source)
    assert loaded.name == f"{wan.resolve()}+transformer={first.resolve()}+transformer_2={second.resolve()}"
    assert estimate_pipeline_bytes(source) == estimate_pipeline_bytes(wan)


def test_bad_single_files_are_named_in_the_error(wan, tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match=r"corrupt.safetensors is not a valid safetensors file"):
        load_pipeline(ModelSource(wan, {"transformer": corrupt}))
    unrelated = tmp_path / "unrelated.safetensors"
    save_file({"foo.weight": torch.zeros(3)}, unrelated)
    truncated = tmp_path / "truncated.safetensors"  # a download cut short: the header is whole, the data is not
    truncated.write_bytes(unrelated.read_bytes()[:-4])
    with pytest.raises(ValueError, match=r"/truncated.safetensors is truncated or padded"):
        load_pipeline(ModelSource(wan, {"transformer": truncated}))
    with pytest.raises(ValueError, match=r"could not load .*unrelated.safetensors as the transformer "
                                         r"\(WanTransformer3DModel\) of .*tensors do not match"):
        load_pipeline(ModelSource(wan, {"transformer": unrelated}))
    int8 = tmp_path / "wan_int8_blockwise.safetensors"
    save_file({"blocks.0.self_attn.q.weight": torch.zeros(2, 2, dtype=torch.int8),
               "blocks.0.self_attn.q.weight_scale": torch.ones(1)}, int8,
              metadata={"_quantization_metadata": '{"layers": {"blocks.0.self_attn.q": {"format": "int8_blockwise"}}}'})
    with pytest.raises(ValueError, match="wan_int8_blockwise.safetensors stores weights as int8_blockwise, which "
                                         "diffbox cannot dequantise; use the model's bf16/fp16 file"):
        load_pipeline(ModelSource(wan, {"transformer": int8}))
    pickle = tmp_path / "old.ckpt"
    pickle.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"old.ckpt: unsupported checkpoint type .ckpt"):
        load_pipeline(ModelSource(wan, {"transformer": pickle}))
    with pytest.raises(FileNotFoundError, match=r"checkpoint for transformer not found: .*missing.safetensors"):
        load_pipeline(ModelSource(wan, {"transformer": tmp_path / "missing.safetensors"}))
    with pytest.raises(ValueError, match="has no diffusers component 'unet'"):
        load_pipeline(ModelSource(wan, {"unet": unrelated}))


# ---------------------------------------------------------------------------------------------
# The published single files, as twins: each loads equal to the pipeline twin's own weights
# ---------------------------------------------------------------------------------------------

LOADABLE = [name for name, spec in TWINS.items() if spec.kind == "single_file" and not spec.refused]
REFUSED = [name for name, spec in TWINS.items() if spec.kind == "single_file" and spec.refused]
QWEN, WAN = "qwen-image-edit-2509", "wan2.2-i2v-a14b-diffusers"
ST_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


def base_of(twin, spec):
    return twin(QWEN if spec.library[1].startswith("qwen") else WAN)


def storage_error(name: str) -> float:
    """How far a stored weight may be from the reference, as a fraction of the tensor's largest value:
    float8_e4m3fn keeps 3 mantissa bits (half a step = 1/16), Q8_0 1/127 of a block's largest value,
    16-bit floats 1/256 before the bf16 load rounds once more."""
    return 0.07 if "fp8" in name else 0.01


@pytest.fixture(scope="module")
def folder_model(twin):
    """``folder_model(spec)``: the component a single-file twin replaces, as the app loads it from the
    pipeline twin's folder in bf16 (once per component)."""
    from diffusers import QwenImageTransformer2DModel, WanTransformer3DModel

    @functools.cache
    def load(base: str, component: str):
        cls = QwenImageTransformer2DModel if base == QWEN else WanTransformer3DModel
        return cls.from_pretrained(twin(base), subfolder=component, dtype=torch.bfloat16)

    return lambda spec: load(QWEN if spec.library[1].startswith("qwen") else WAN, spec.target)


def stored_dtypes(file) -> dict[str, str]:
    """Tensor name (ComfyUI's prefix stripped) -> safetensors dtype; {} for a GGUF file."""
    if file.suffix != ".safetensors":
        return {}
    with safe_open(str(file), framework="pt") as handle:
        return {k.removeprefix("model.diffusion_model."): str(handle.get_slice(k).get_dtype()) for k in handle.keys()}


@pytest.mark.parametrize("name", LOADABLE)
def test_single_file_twins_load_equal_to_the_reference_in_bf16(twin, folder_model, name):
    """Every tensor within its storage's error of the pipeline twin's weights, in the dtype the folder load
    gives it: bf16, or fp32 for what diffusers keeps in fp32 (Wan's time embedder, modulation tables,
    norm2, rope tables), those read at the file's own precision. GGUF weights stay quantized. A 2511 file
    (ComfyUI's marker) loads with zero_cond_t over the 2509 folder, every other one without."""
    from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

    spec = TWINS[name]
    reference = qwen_transformer_weights(0) if spec.library[1].startswith("qwen") else wan_expert_weights(
        "high" if spec.target == "transformer" else "low", 0)
    model = load_single_file(twin(name), base=base_of(twin, spec), component=spec.target, dtype=torch.bfloat16)
    folder = folder_model(spec)
    loaded, folder_dtypes, stored = model.state_dict(), {k: v.dtype for k, v in folder.state_dict().items()}, \
        stored_dtypes(twin(name))
    assert set(loaded) == set(reference)
    for key, expected in reference.items():
        value = loaded[key]
        if isinstance(value, GGUFParameter):  # stays quantized; dequantised per layer at run time
            value = dequantize_gguf_tensor(value)
        else:
            assert value.dtype == folder_dtypes[key], key
        error = (value.float() - expected).abs().max().item()
        assert error <= storage_error(name) * expected.abs().max().item() + 1e-6, (key, error)
        file_dtype = ST_DTYPES.get(stored.get(next(iter(to_native_wan_keys({key: None}))), stored.get(key, "")))
        if value.dtype == torch.float32 and file_dtype is not None:  # the file's value, never via bf16
            assert torch.equal(value, expected.to(file_dtype).float()), key
    buffers = dict(folder.named_buffers())
    assert {k: (b.dtype, b.shape) for k, b in model.named_buffers()} == {k: (b.dtype, b.shape) for k, b in
                                                                          buffers.items()}
    assert all(torch.equal(b, buffers[k]) for k, b in model.named_buffers())
    assert bool(model.config.get("zero_cond_t")) == ("2511" in name)


@pytest.mark.parametrize("name", LOADABLE)
def test_single_file_twins_are_estimated_as_they_load(twin, name):
    """The estimate read from the file's header is the loaded module's size to the byte: fp8 dequantised to
    bf16, Wan's fp32 layers in fp32, GGUF weights at their stored size except where diffusers dequantises
    them to fp32 at load. Files that load to the folder's modules also project the folder's block sizes."""
    from diffbox.engine.memory import estimate_components

    spec = TWINS[name]
    base = base_of(twin, spec)
    single = estimate_components(base, "bfloat16", "native", {spec.target: twin(name)})[spec.target]
    model = load_single_file(twin(name), base=base, component=spec.target, dtype=torch.bfloat16)
    assert single.total_bytes == sum(p.numel() * p.element_size() for p in model.parameters())
    if twin(name).suffix == ".safetensors":
        folder = estimate_components(base, "bfloat16", "native")[spec.target]
        for field in ("total_bytes", "outside_blocks_bytes", "largest_block_bytes"):
            assert getattr(single, field) == getattr(folder, field), field


def test_a_pipeline_runs_on_dequantised_fp8_experts(twin):
    wan = twin(WAN)
    cache = ModelCache(idle_unload_s=None)
    pipe = cache.get(ModelSource(wan, {"transformer": twin("comfy-wan2.2-i2v-high-fp8-scaled-unprefixed"),
                                       "transformer_2": twin("kijai-wan2.2-i2v-low-fp8-scaled-kj")}),
                     dtype="bfloat16", placement="cpu").pipe
    assert pipe.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert pipe.transformer.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    tiny_video(pipe)


def test_a_2511_file_edits_with_zero_cond_t_over_the_2509_folder(twin, shrink_qwen_condition_area):
    """The same weights edit differently once the reference image's tokens get timestep 0, so a 2511 file
    run without zero_cond_t would be silently wrong; ComfyUI's marker makes the loader set it."""
    qwen = twin(QWEN)

    def edit(file):
        pipe = load_pipeline(ModelSource(qwen, {"transformer": twin(file)}), dtype="bfloat16")
        image = pipe(image=[Image.new("RGB", (64, 64), (200, 30, 30))], prompt="Make the sky purple", height=64,
                     width=64, num_inference_steps=2, true_cfg_scale=1.0, output_type="np",
                     generator=torch.Generator().manual_seed(0)).images
        assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()
        return pipe.transformer.config.zero_cond_t, image

    (cond_2511, image_2511), (cond_2509, image_2509) = edit("comfy-qwen-2511-bf16"), edit("comfy-qwen-2509-bf16")
    assert (cond_2511, cond_2509) == (True, False)
    assert np.abs(image_2511 - image_2509).max() > 1e-3


def test_a_2511_file_without_its_marker_needs_a_2511_base(twin, tmp_path):
    """Without ComfyUI's marker only the name tells 2511 from 2509: over a base without zero_cond_t such a
    file is refused with the base to use; over a 2511 base it loads with zero_cond_t. A ComfyUI file
    without the marker is no 2511, even over a 2511 base."""
    qwen = twin(QWEN)
    unmarked = tmp_path / "qwen_image_edit_2511_bf16.safetensors"
    save_file(load_file(twin("comfy-qwen-2509-bf16")), unmarked)
    with pytest.raises(ValueError, match=r"^qwen_image_edit_2511_bf16.safetensors is a Qwen-Image-Edit-2511 "
                                         r"transformer by its name, .* pick Qwen/Qwen-Image-Edit-2511 as the base "
                                         r"model$"):
        load_single_file(unmarked, base=qwen, component="transformer", dtype=torch.bfloat16)
    base_2511 = tmp_path / "Qwen-Image-Edit-2511"
    shutil.copytree(qwen, base_2511, symlinks=True)
    config = base_2511 / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "zero_cond_t": True}))
    assert load_single_file(unmarked, base=base_2511, component="transformer", dtype=torch.bfloat16).zero_cond_t
    comfy_2509 = load_single_file(twin("comfy-qwen-2509-bf16-prefixed"), base=base_2511, component="transformer",
                                  dtype=torch.bfloat16)
    assert comfy_2509.zero_cond_t is False


@pytest.mark.parametrize("name", REFUSED)
def test_text_encoder_single_files_are_refused_saying_what_to_use(twin, name):
    spec = TWINS[name]
    base = base_of(twin, spec)
    file = twin(name)
    with pytest.raises(ValueError, match=rf"{re.escape(file.name)} cannot replace the text_encoder .* from the "
                                         r"model's folder only"):
        load_pipeline(ModelSource(base, {"text_encoder": file}))
    with pytest.raises(ValueError, match=rf"{re.escape(file.name)} is a .* text encoder, not a .*Transformer.*; "
                                         r"diffbox takes text encoders from the base model's diffusers folder"):
        load_pipeline(ModelSource(base, {"transformer": file}))


WAN_BLOCK_LINEARS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                     "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")


def test_a_gguf_expert_loads_quantized_and_runs(twin):
    pytest.importorskip("gguf", reason="GGUF checkpoints need the gguf package")
    from diffusers.quantizers.gguf.utils import GGUFParameter

    wan, gguf_file = twin(WAN), twin("quantstack-wan2.2-i2v-high-q8_0")
    cache = ModelCache(idle_unload_s=None)
    loaded = cache.get(ModelSource(wan, {"transformer": gguf_file}), weights="fp8", placement="cpu")
    # Only the block Linears are quantized: city96's tools keep the embeddings, head and modulation unquantized.
    quantized = {name for name, p in loaded.pipe.transformer.named_parameters() if isinstance(p, GGUFParameter)}
    assert quantized == {f"blocks.{i}.{layer}.weight" for i in range(2) for layer in WAN_BLOCK_LINEARS}
    # fp8 storage applies to the folder's expert only; the GGUF one is already quantized.
    assert loaded.pipe.transformer_2.blocks[0].ffn.net[2].weight.dtype == torch.float8_e4m3fn
    tiny_video(loaded.pipe)
    sizes = estimate_pipeline_bytes(ModelSource(wan, {"transformer": gguf_file}))
    assert sizes["transformer"] < sizes["transformer_2"]  # Q8_0 tensors counted at their stored size


def test_gguf_without_the_package_is_a_clear_error(wan, tmp_path, monkeypatch):
    checkpoint = tmp_path / "wan-Q4_K_M.gguf"
    checkpoint.write_bytes(b"GGUF")
    monkeypatch.setattr(loaders, "gguf_available", lambda: False)
    with pytest.raises(ImportError, match=r"wan-Q4_K_M.gguf is a GGUF checkpoint; reading it needs the gguf "
                                          r"package \(pip install gguf\)"):
        load_pipeline(ModelSource(wan, {"transformer": checkpoint}))


def test_a_model_source_names_its_files_in_a_fixed_order(tmp_path):
    one = ModelSource(tmp_path, {"transformer_2": "b.gguf", "transformer": "a.gguf"})
    assert one == ModelSource(tmp_path, {"transformer": "a.gguf", "transformer_2": "b.gguf"})
    assert one.key == f"{tmp_path}+transformer=a.gguf+transformer_2=b.gguf"


# ---------------------------------------------------------------------------------------------
# float32 experts: converted once, kept next to the model, used on later loads
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fp32_wan(wan, tmp_path, monkeypatch):
    """A copy of the demo Wan (float32 experts), with the size floor for keeping a copy lifted."""
    from diffbox.engine import kept_copies

    monkeypatch.setattr(kept_copies, "MIN_SOURCE_BYTES", 0)
    folder = tmp_path / "wan-fp32"
    shutil.copytree(wan, folder)
    return folder


def header_dtypes(file) -> set[str]:
    from diffbox.engine.memory import tensor_shapes

    return {dtype for dtype, _ in tensor_shapes(file).values()}


def test_a_float32_expert_is_converted_once_and_kept(fp32_wan, monkeypatch):
    from diffusers import WanTransformer3DModel

    from diffbox.engine import kept_copies

    pipe = load_pipeline(fp32_wan, dtype="bfloat16")
    kept = fp32_wan / "transformer" / ".kept-bfloat16"
    files = list(kept.glob("*.safetensors"))
    assert len(files) == 1 and header_dtypes(files[0]) == {"BF16", "F32"}  # time embedder & co. stay float32
    assert (kept / "config.json").read_text() == (fp32_wan / "transformer" / "config.json").read_text()
    assert json.loads((kept / "source.json").read_text())["files"][0][0] == "diffusion_pytorch_model.safetensors"
    assert not list((fp32_wan / "transformer").glob(".kept-writing-*"))
    # exactly what loading the float32 files in bf16 gives
    direct = WanTransformer3DModel.from_pretrained(fp32_wan, subfolder="transformer_2", dtype=torch.bfloat16)
    for name, value in direct.state_dict().items():
        assert torch.equal(value, pipe.transformer_2.state_dict()[name]), name
        assert value.dtype == pipe.transformer_2.state_dict()[name].dtype, name

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(kept_copies, "_convert", no_conversion)
    again = load_pipeline(fp32_wan, dtype="bfloat16")
    assert torch.equal(again.transformer.blocks[0].ffn.net[2].weight, pipe.transformer.blocks[0].ffn.net[2].weight)
    tiny_video(again)


def test_a_changed_source_is_converted_again(fp32_wan):
    load_pipeline(fp32_wan, dtype="bfloat16")
    shard = fp32_wan / "transformer" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(shard)
    tensors["proj_out.bias"] = torch.full_like(tensors["proj_out.bias"], 0.5)
    save_file(tensors, shard, metadata={"format": "pt"})
    pipe = load_pipeline(fp32_wan, dtype="bfloat16")
    assert torch.equal(pipe.transformer.proj_out.bias, torch.full_like(pipe.transformer.proj_out.bias, 0.5))


def test_no_copy_without_room_and_no_half_copy_on_a_failed_write(fp32_wan, monkeypatch):
    from diffbox.engine import kept_copies

    monkeypatch.setattr(kept_copies, "MIN_FREE_AFTER", 1 << 60)  # no disk can hold it
    assert load_pipeline(fp32_wan, dtype="bfloat16").transformer.dtype == torch.bfloat16
    assert not (fp32_wan / "transformer" / ".kept-bfloat16").exists()
    monkeypatch.setattr(kept_copies, "MIN_FREE_AFTER", 0)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kept_copies, "save_file", disk_full)
    assert load_pipeline(fp32_wan, dtype="bfloat16").transformer.dtype == torch.bfloat16  # the float32 files
    assert [p.name for p in (fp32_wan / "transformer").iterdir() if p.name.startswith(".")] == []
    assert load_pipeline(fp32_wan, dtype="float32").transformer.dtype == torch.float32  # no copy for float32
