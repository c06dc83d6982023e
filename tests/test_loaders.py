"""Where models come from: local folders, HF cache snapshots, single-file checkpoints (safetensors, GGUF)."""

import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffbox.engine import loaders
from diffbox.engine.cache import ModelCache, ModelSource, estimate_pipeline_bytes
from diffbox.engine.loaders import load_pipeline, resolve_diffusers_folder


def tiny_video(pipe) -> np.ndarray:
    frames = pipe(Image.new("RGB", (32, 32), (200, 30, 30)), prompt="a red square", height=32, width=32,
                  num_frames=5, num_inference_steps=2, max_sequence_length=16, output_type="np",
                  generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (1, 5, 32, 32, 3) and np.isfinite(frames).all()
    return frames


@pytest.fixture
def wan(demo_models):
    return demo_models["wan22-i2v"]


def to_original_wan_keys(state_dict: dict) -> dict:
    """diffusers Wan transformer keys -> the original Wan / ComfyUI layout most single files ship in
    (the inverse of diffusers' convert_wan_transformer_to_diffusers for the I2V A14B layers)."""
    renames = [("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
               ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
               ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
               ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
               ("condition_embedder.time_proj", "time_projection.1"), ("attn1", "self_attn"), ("attn2", "cross_attn"),
               (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
               ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
               ("norm2", "norm__swap"), ("norm3", "norm2"), ("norm__swap", "norm3"), ("proj_out", "head.head")]
    converted = {}
    for key, value in state_dict.items():
        if key == "scale_shift_table":
            key = "head.modulation"
        for old, new in renames:
            key = key.replace(old, new)
        converted[re.sub(r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation", key)] = value
    return converted


@pytest.fixture
def swapped_expert_files(wan, tmp_path):
    """The demo's two experts as single files, swapped (so a test can tell the files were used):
    the low-noise expert with diffusers keys, the high-noise one with original Wan keys."""
    first, second = tmp_path / "wan-first.safetensors", tmp_path / "wan-second.safetensors"
    save_file(load_file(wan / "transformer_2" / "diffusion_pytorch_model.safetensors"), first)
    save_file(to_original_wan_keys(load_file(wan / "transformer" / "diffusion_pytorch_model.safetensors")), second)
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
    folder.transformer, folder.transformer_2 = folder.transformer_2, folder.transformer
    assert np.array_equal(tiny_video(from_files), tiny_video(folder))
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
    with pytest.raises(ValueError, match=r"could not load .*unrelated.safetensors as the transformer "
                                         r"\(WanTransformer3DModel\) of .*tensors do not match"):
        load_pipeline(ModelSource(wan, {"transformer": unrelated}))
    scaled = tmp_path / "wan_fp8_scaled.safetensors"
    save_file({"blocks.0.self_attn.q.weight": torch.zeros(2, 2), "blocks.0.self_attn.q.scale_weight": torch.ones(1),
               "scaled_fp8": torch.zeros(0)}, scaled)
    with pytest.raises(ValueError, match="wan_fp8_scaled.safetensors is a ComfyUI fp8-scaled checkpoint"):
        load_pipeline(ModelSource(wan, {"transformer": scaled}))
    pickle = tmp_path / "old.ckpt"
    pickle.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"old.ckpt: unsupported checkpoint type .ckpt"):
        load_pipeline(ModelSource(wan, {"transformer": pickle}))
    with pytest.raises(FileNotFoundError, match=r"checkpoint for transformer not found: .*missing.safetensors"):
        load_pipeline(ModelSource(wan, {"transformer": tmp_path / "missing.safetensors"}))
    with pytest.raises(ValueError, match="has no diffusers component 'unet'"):
        load_pipeline(ModelSource(wan, {"unet": unrelated}))


def write_q8_gguf(path, state_dict):
    """A GGUF file like city96's: original Wan keys, Q8_0 where the row length allows (32), F32 elsewhere."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="wan")
    quantized = 0
    for key, value in state_dict.items():
        array = value.float().numpy()
        if array.ndim == 2 and array.shape[-1] % 32 == 0:
            writer.add_tensor(key, gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            quantized += 1
        else:
            writer.add_tensor(key, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return quantized


def test_a_gguf_expert_loads_quantized_and_runs(wan, tmp_path):
    pytest.importorskip("gguf", reason="GGUF checkpoints need the gguf package")
    from diffusers.quantizers.gguf.utils import GGUFParameter

    low = tmp_path / "wan-low-Q8_0.gguf"
    state = to_original_wan_keys(load_file(wan / "transformer_2" / "diffusion_pytorch_model.safetensors"))
    assert write_q8_gguf(low, state) >= 3
    cache = ModelCache(idle_unload_s=None)
    loaded = cache.get(ModelSource(wan, {"transformer_2": low}), weights="fp8", placement="cpu")
    assert isinstance(loaded.pipe.transformer_2.blocks[0].ffn.net[2].weight, GGUFParameter)
    # fp8 storage applies to the bf16/fp32 expert only; the GGUF one is already quantized.
    assert loaded.pipe.transformer.blocks[0].ffn.net[2].weight.dtype == torch.float8_e4m3fn
    tiny_video(loaded.pipe)
    sizes = estimate_pipeline_bytes(ModelSource(wan, {"transformer_2": low}))
    assert sizes["transformer_2"] < sizes["transformer"]  # Q8_0 tensors counted at their stored size


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
