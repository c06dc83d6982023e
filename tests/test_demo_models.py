"""The tiny demo models: deterministic builds, and every pipeline really loads and runs on CPU."""

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffbox import demo
from diffbox.engine.loaders import load_pipeline, read_model_index

# Qwen drops the first 64 template tokens of the prompt; a shorter prompt would leave nothing.
LONG_PROMPT = (
    "A red fox sitting in a snowy forest at dawn, soft golden light filtering through tall pine trees, "
    "small clouds of breath in the cold air, fresh snow on the branches, a frozen stream in the background, "
    "highly detailed fur, calm and quiet atmosphere, photographed with a long lens, shallow depth of field."
)
WAN_PROMPT = "A cat walks slowly across a sunny garden, the camera follows it."


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != demo.MARKER_NAME
    }


def random_image(size=(32, 32), seed=0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)




# demo_models (tests/conftest.py): the session's tiny models, built once with seed 0.


@pytest.fixture(scope="session")
def demo_root(demo_models) -> Path:
    return demo_models["wan22-i2v"].parent


# --- building --------------------------------------------------------------------------------


def test_build_is_deterministic_per_seed(demo_root, tmp_path):
    assert set(demo.build_all(tmp_path / "again", seed=0)) == set(demo.DEMO_LAYOUT)
    reference = file_hashes(demo_root)
    assert file_hashes(tmp_path / "again") == reference

    other_seed = file_hashes(demo.build_all(tmp_path / "seed1", seed=1)["wan22-i2v"].parent)
    assert other_seed.keys() == reference.keys()
    weights = [name for name in reference if name.endswith(".safetensors")]
    assert len(weights) >= 12
    assert all(other_seed[name] != reference[name] for name in weights)


def test_cli_build_matches_in_process_build(demo_root, tmp_path):
    target = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "diffbox.demo", "build", str(target)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1],
    )
    assert result.returncode == 0, result.stderr
    for name in demo.DEMO_LAYOUT:
        assert f"built {name}" in result.stdout
        assert (target / demo.DEMO_LAYOUT[name]).exists()
    assert json.loads((target / demo.MARKER_NAME).read_text())["version"] == demo.DEMO_VERSION
    # Another process, same seed: byte-identical (hash seeds and RNG state must not leak in).
    assert file_hashes(target) == file_hashes(demo_root)


def test_ensure_demo_models_builds_only_what_is_missing(demo_root, tmp_path):
    root = tmp_path / "demo"
    shutil.copytree(demo_root, root)
    marker = root / demo.MARKER_NAME
    mtimes = {path: path.stat().st_mtime_ns for path in root.rglob("*")}

    started = time.perf_counter()
    assert demo.ensure_demo_models(root) == demo.demo_paths(root)
    assert time.perf_counter() - started < 0.5
    assert {path: path.stat().st_mtime_ns for path in root.rglob("*")} == mtimes

    shutil.rmtree(root / "qwen-controlnet")
    (root / demo.DEMO_LAYOUT["wan-lora-low"]).unlink()
    rebuilt = []
    demo.ensure_demo_models(root, on_built=lambda name, path: rebuilt.append(name))
    assert sorted(rebuilt) == ["qwen-controlnet", "wan-lora-low"]
    assert file_hashes(root) == file_hashes(demo_root)
    untouched = root / "wan22-i2v" / "model_index.json"
    assert untouched.stat().st_mtime_ns == mtimes[untouched]
    assert not list(root.glob("**/.building-*")) and not list(root.glob(".*.tmp"))

    marker.write_text(json.dumps({"version": demo.DEMO_VERSION - 1, "seed": 0}))
    rebuilt.clear()
    demo.ensure_demo_models(root, on_built=lambda name, path: rebuilt.append(name))
    assert sorted(rebuilt) == sorted(demo.DEMO_LAYOUT)
    assert json.loads(marker.read_text())["version"] == demo.DEMO_VERSION


def test_read_model_index_names_the_bad_path(demo_models, tmp_path):
    assert read_model_index(demo_models["wan22-i2v"])["_class_name"] == "WanImageToVideoPipeline"
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        read_model_index(tmp_path)
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ValueError, match=str(tmp_path)):
        read_model_index(tmp_path)


# --- Wan 2.2 image-to-video ------------------------------------------------------------------


@pytest.fixture(scope="module")
def wan_pipe(demo_models):
    return load_pipeline(demo_models["wan22-i2v"])


def run_wan(pipe, steps=2) -> np.ndarray:
    return pipe(
        image=random_image(), prompt=WAN_PROMPT, negative_prompt="blurry", height=32, width=32, num_frames=9,
        num_inference_steps=steps, guidance_scale=2.0, max_sequence_length=32, output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).frames


def test_wan_i2v_runs_both_experts(wan_pipe):
    assert type(wan_pipe).__name__ == "WanImageToVideoPipeline"
    assert wan_pipe.dtype == torch.float32 and wan_pipe.image_encoder is None
    calls = {"transformer": 0, "transformer_2": 0}
    hooks = [
        getattr(wan_pipe, name).register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
        for name in calls
    ]
    try:
        frames = run_wan(wan_pipe)
    finally:
        for hook in hooks:
            hook.remove()
    assert frames.shape == (1, 9, 32, 32, 3)
    assert np.isfinite(frames).all()
    # Step 1 (t=999) is above the 0.9 boundary, step 2 below it; CFG doubles each.
    assert calls == {"transformer": 2, "transformer_2": 2}


def test_wan_loras_apply_convert_and_unload(wan_pipe, demo_models):
    base = run_wan(wan_pipe)

    wan_pipe.load_lora_weights(demo_models["wan-lora-high"], adapter_name="hi")
    high_only = run_wan(wan_pipe)
    wan_pipe.load_lora_weights(demo_models["wan-lora-low"], adapter_name="lo", load_into_transformer_2=True)
    both = run_wan(wan_pipe)
    wan_pipe.unload_lora_weights()
    assert np.array_equal(run_wan(wan_pipe), base)

    wan_pipe.load_lora_weights(demo_models["wan-lora-high-comfy"], adapter_name="hi")
    wan_pipe.load_lora_weights(demo_models["wan-lora-low-comfy"], adapter_name="lo", load_into_transformer_2=True)
    both_comfy = run_wan(wan_pipe)
    wan_pipe.unload_lora_weights()

    assert np.abs(high_only - base).max() > 0.01
    assert np.abs(both - high_only).max() > 0.01
    np.testing.assert_allclose(both_comfy, both, atol=1e-6)
    assert np.array_equal(run_wan(wan_pipe), base)


# --- Qwen-Image-Edit -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_edit_pipe(demo_models):
    return load_pipeline(demo_models["qwen-image-edit"])


def run_qwen_edit(pipe, **kwargs):
    defaults = dict(image=random_image((64, 64)), prompt=LONG_PROMPT, negative_prompt=" ", true_cfg_scale=2.0,
                    height=64, width=64, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    return pipe(**{**defaults, **kwargs}).images


def test_qwen_edit_runs(qwen_edit_pipe, shrink_qwen_condition_area):
    assert type(qwen_edit_pipe).__name__ == "QwenImageEditPipeline"
    images = run_qwen_edit(qwen_edit_pipe, num_images_per_prompt=2)
    assert [image.size for image in images] == [(64, 64), (64, 64)]


def test_qwen_edit_plus_takes_three_references(demo_models, shrink_qwen_condition_area):
    from diffusers import QwenImageEditPlusPipeline

    pipe = load_pipeline(demo_models["qwen-image-edit"], pipeline_class=QwenImageEditPlusPipeline)
    references = [random_image((64, 64), seed) for seed in range(3)]
    images = run_qwen_edit(pipe, image=references)
    assert [image.size for image in images] == [(64, 64)]
    # every reference conditions the result, the last one too, and their order counts ("picture 2")
    three = run_qwen_edit(pipe, image=references, output_type="np")
    last_changed = run_qwen_edit(pipe, image=[*references[:2], random_image((64, 64), 9)], output_type="np")
    reordered = run_qwen_edit(pipe, image=references[::-1], output_type="np")
    assert np.abs(three - last_changed).max() > 1e-3 and np.abs(three - reordered).max() > 1e-4  # noise: ~1e-6
    assert np.array_equal(run_qwen_edit(pipe, image=references, output_type="np"), three)


def test_qwen_edit_inpaint_runs(demo_models, shrink_qwen_condition_area):
    from diffusers import QwenImageEditInpaintPipeline

    pipe = load_pipeline(demo_models["qwen-image-edit"], pipeline_class=QwenImageEditInpaintPipeline)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    images = run_qwen_edit(pipe, mask_image=mask, strength=0.9)
    assert [image.size for image in images] == [(64, 64)]
    # Only the masked area is redrawn. Another prompt, same seed: the packed latents (2×2 patches of the 8×8
    # latent grid, one token per 16 px square) outside the mask are the image's own, bit for bit; inside they change.
    one, other = (run_qwen_edit(pipe, mask_image=mask, strength=0.9, output_type="latent", prompt=prompt)
                  for prompt in (LONG_PROMPT, "Paint it over in thick strokes. " + LONG_PROMPT))
    change = (one - other).abs().amax(dim=-1).reshape(4, 4)
    inside = torch.zeros(4, 4, dtype=torch.bool)
    inside[1:3, 1:3] = True  # the 16..48 px square
    assert (change[~inside] == 0).all() and (change[inside] > 1e-3).all(), change


def test_qwen_controlnet_changes_output(qwen_edit_pipe, demo_models):
    from diffusers import QwenImageControlNetModel, QwenImageControlNetPipeline

    controlnet = QwenImageControlNetModel.from_pretrained(demo_models["qwen-controlnet"])
    pipe = QwenImageControlNetPipeline.from_pipe(qwen_edit_pipe, controlnet=controlnet)

    def generate(scale: float) -> np.ndarray:
        return pipe(
            prompt=LONG_PROMPT, negative_prompt=" ", true_cfg_scale=2.0, control_image=random_image((64, 64), 7),
            controlnet_conditioning_scale=scale, height=64, width=64, num_inference_steps=2, output_type="np",
            generator=torch.Generator().manual_seed(0),
        ).images

    with_control, without_control = generate(1.0), generate(0.0)
    assert with_control.shape == (1, 64, 64, 3)
    assert np.abs(with_control - without_control).max() > 0.01


def test_qwen_lora_changes_output_and_unloads(qwen_edit_pipe, demo_models, shrink_qwen_condition_area):
    base = run_qwen_edit(qwen_edit_pipe, output_type="np")
    qwen_edit_pipe.load_lora_weights(demo_models["qwen-lora"], adapter_name="style")
    with_lora = run_qwen_edit(qwen_edit_pipe, output_type="np")
    qwen_edit_pipe.unload_lora_weights()
    assert np.abs(with_lora - base).max() > 0.01
    assert np.array_equal(run_qwen_edit(qwen_edit_pipe, output_type="np"), base)
