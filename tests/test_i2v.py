"""Wan 2.2 image-to-video end to end on the tiny model: options, LoRAs, previews, metadata, errors."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from conftest import read_frames
from diffbox.engine.runner import OutputEvent
from diffbox.params import InvalidParams
from diffbox.store import DONE, FAILED
from diffbox.workflows.outputs import read_metadata

SMALL = {"width": 32, "height": 32, "num_frames": 9, "num_inference_steps": 4, "seed": 7,
         "prompt": "a blue square slowly turning"}


@pytest.fixture
def images(tmp_path):
    start, end = tmp_path / "start.png", tmp_path / "end.png"
    Image.new("RGB", (40, 40), (20, 60, 220)).save(start)
    Image.new("RGB", (40, 40), (240, 200, 10)).save(end)
    return str(start), str(end)


def generate(services, params, image, end_image=None):
    job = services.submit_i2v({**SMALL, **params}, image, end_image)
    outcome = job.wait(180)
    assert outcome.status == DONE, outcome.error
    return np.stack(read_frames(outcome.result.outputs[0])), outcome.result


def test_frames_size_and_determinism(services, images):
    first, result = generate(services, {}, images[0])
    again, _ = generate(services, {}, images[0])
    other_seed, _ = generate(services, {"seed": 8}, images[0])
    assert first.shape == (9, 32, 32, 3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other_seed)
    # the seed moves the motion, not the start: frame 0 is the picture, the rest is new noise
    start_moved, rest_moved = (np.abs(first[part].astype(int) - other_seed[part]).mean()
                               for part in (0, slice(1, None)))
    assert 0 < rest_moved and start_moved < rest_moved / 4
    # -1 draws a seed; the one recorded in the video replays it exactly
    drawn, drawn_result = generate(services, {"seed": -1}, images[0])
    recorded = read_metadata(drawn_result.outputs[0])["params"]["seed"]
    assert recorded >= 0 and recorded == drawn_result.metadata["params"]["seed"]
    replayed, _ = generate(services, {"seed": recorded}, images[0])
    assert np.array_equal(drawn, replayed)


def test_end_image_changes_the_video(services, images):
    plain, _ = generate(services, {}, images[0])
    with_end, _ = generate(services, {}, images[0], images[1])
    assert with_end.shape == plain.shape and not np.array_equal(plain, with_end)


def test_metadata_travels_inside_the_mp4(services, images):
    _, result = generate(services, {"loras": [{"name": "demo/loras/wan-lora-high.safetensors",
                                               "weight_high": 0.8, "weight_low": 0.0}]}, images[0])
    saved = read_metadata(result.outputs[0])
    assert saved == read_metadata(result.outputs[0].replace("video.mp4", "meta.json"))
    assert saved["params"]["seed"] == 7 and saved["params"]["num_frames"] == 9
    assert saved["model"] == "demo/wan22-i2v" and saved["model_defaults"]["boundary_ratio"] == 0.9
    (lora,) = saved["loras"]
    assert lora["weight_high"] == 0.8 and len(lora["sha256"]) == 64


LORA_HIGH = "demo/loras/wan-lora-high.safetensors"
LORA_LOW = "demo/loras/wan-lora-low.safetensors"
LORA_HIGH_COMFY = "demo/loras/wan-lora-high-comfy.safetensors"


def test_loras_per_expert_change_the_output_and_removing_them_restores_it(services, images):
    base, _ = generate(services, {}, images[0])
    high, _ = generate(services, {"loras": [{"name": LORA_HIGH, "weight_high": 1.0, "weight_low": 0.0}]}, images[0])
    low, _ = generate(services, {"loras": [{"name": LORA_LOW, "weight_high": 0.0, "weight_low": 1.0}]}, images[0])
    both, _ = generate(services, {"loras": [LORA_HIGH, {"name": LORA_LOW, "weight_high": 0, "weight_low": 1}]},
                       images[0])
    comfy, _ = generate(services, {"loras": [{"name": LORA_HIGH_COMFY, "weight_high": 1.0, "weight_low": 0.0}]},
                        images[0])
    back, _ = generate(services, {}, images[0])
    assert not np.array_equal(base, high) and not np.array_equal(base, low)
    assert not np.array_equal(high, both) and not np.array_equal(low, both)
    assert np.array_equal(high, comfy)  # the ComfyUI key format is converted to the same weights
    assert np.array_equal(base, back)   # the base model was never touched
    assert len(services.cache.loaded()) == 1  # switching LoRAs never loaded a second model


def test_a_lora_that_produces_nan_is_an_error_not_an_output(services, images, demo_home):
    good = load_file(str(demo_home / "models" / LORA_HIGH))
    broken = {k: v.clone().fill_(float("nan")) if "lora_B" in k or "lora_up" in k else v for k, v in good.items()}
    save_file(broken, str(demo_home / "models" / "broken-lora.safetensors"))
    job = services.submit_i2v({**SMALL, "loras": ["broken-lora.safetensors"]}, images[0])
    outcome = job.wait(180)
    assert outcome.status == FAILED and "NaN" in outcome.error
    assert not outcome.result.outputs


def test_an_unknown_lora_format_names_the_file(services, images, demo_home):
    # Wan-looking LoRA keys for a module the model does not have: diffusers would skip them silently.
    save_file({"blocks.0.attn1.frobnicate.lora_down.weight": torch.zeros(4, 24),
               "blocks.0.attn1.frobnicate.lora_up.weight": torch.zeros(24, 4)},
              str(demo_home / "models" / "odd-wan-lora.safetensors"))
    outcome = services.submit_i2v({**SMALL, "loras": ["odd-wan-lora.safetensors"]}, images[0]).wait(180)
    assert outcome.status == FAILED
    assert "odd-wan-lora.safetensors" in outcome.error and "key format" in outcome.error
    assert generate(services, {}, images[0])[0].shape == (9, 32, 32, 3)  # and nothing is left half-applied


@pytest.mark.parametrize("options", [
    {"vae_tiling": True, "vae_tile_size": 64, "vae_tile_stride": 32},
    {"step_cache": "first_block", "step_cache_threshold": 0.3},
    {"scheduler": "euler", "flow_shift": 3.0},
    {"boundary_ratio": 0.5, "guidance_scale_2": 1.0},
    {"dtype": "float32", "weights": "native", "attention_backend": "native"},
])
def test_expert_options_run(services, images, options):
    frames, result = generate(services, options, images[0])
    assert frames.shape == (9, 32, 32, 3)
    assert result.metadata["params"] == {**result.metadata["params"], **options}


def test_step_cache_changes_and_then_restores_the_output(services, images):
    base, _ = generate(services, {}, images[0])
    cached, _ = generate(services, {"step_cache": "first_block", "step_cache_threshold": 0.5}, images[0])
    back, _ = generate(services, {}, images[0])
    assert not np.array_equal(base, cached) and np.array_equal(base, back)


def test_live_previews_arrive_during_denoising(services, images):
    job = services.submit_i2v({**SMALL, "num_inference_steps": 6, "preview_every": 2}, images[0])
    previews = [e.data for e in job.events(timeout=180) if isinstance(e, OutputEvent) and e.kind == "preview"]
    assert len(previews) == 3
    assert previews[0].dtype == np.uint8 and previews[0].shape[2] == 3 and previews[0].shape[1] > previews[0].shape[0]


def test_unusable_attention_backend_is_a_clear_error(services, images):
    outcome = services.submit_i2v({**SMALL, "attention_backend": "sage"}, images[0]).wait(180)
    assert outcome.status == FAILED and outcome.error.startswith("attention_backend: 'sage' is not usable")
    assert generate(services, {}, images[0])[0].shape == (9, 32, 32, 3)  # the pipeline still works after


@pytest.mark.parametrize("params,image,field", [
    ({"num_frames": 80}, "ok", "num_frames"),
    ({"width": 500}, "ok", "width"),
    ({}, None, "image"),
    ({}, "text", "image"),
    ({"loras": [{"name": "nope.safetensors"}]}, "ok", "loras"),
    ({"loras": [{"name": LORA_HIGH, "weight_high": 9}]}, "ok", "loras"),
    ({"vae_tiling": True, "vae_tile_size": 128, "vae_tile_stride": 256}, "ok", "vae_tile_stride"),
    ({"scheduler": "ddim"}, "ok", "scheduler"),
])
def test_bad_input_is_refused_naming_the_field(services, images, tmp_path, params, image, field):
    if image == "text":
        image = tmp_path / "x.png"
        image.write_text("not really a png")
    elif image == "ok":
        image = images[0]
    with pytest.raises(InvalidParams) as caught:
        services.submit_i2v({**SMALL, **params}, image)
    assert field in caught.value.errors


def test_out_of_memory_retries_once_more_conservatively_with_vae_tiling(services, images, monkeypatch):
    from dataclasses import replace

    from diffbox.workflows import i2v
    from diffbox.workflows.registry import WORKFLOWS

    real_run, calls = i2v.run, []

    def run_that_runs_out_of_memory_once(ctx, pipe, job, *args, **kwargs):
        calls.append(job.params["vae_tiling"])
        if len(calls) == 1:  # what a too-big job does on a GPU; a CPU cannot run out for real
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(ctx, pipe, job, *args, **kwargs)

    from diffbox.engine.cache import ModelCache, SimulatedMemory

    services.cache = ModelCache(memory_probe=SimulatedMemory(24 * 2**30))  # decide as on a 24 GB GPU
    monkeypatch.setitem(WORKFLOWS, "i2v", replace(i2v.WORKFLOW, run=run_that_runs_out_of_memory_once))
    job = services.submit_i2v({**SMALL, "dtype": "float32"}, images[0])
    outcome = job.wait(180)
    assert outcome.status == DONE, outcome.error
    assert calls == [False, True]
    record = services.history.get(job.id)
    assert any("out of memory" in note.lower() for note in record["notes"]), record["notes"]
    assert record["metadata"]["placement"] != "gpu"  # the retry ran one placement down
    assert read_frames(outcome.result.outputs[0])[0].shape == (32, 32, 3)


def test_the_lightning_preset_runs_the_trained_timesteps_two_per_expert(services, images, monkeypatch):
    """The Wan distill LoRAs were trained on 1000/750/500/250 shifted by 5; diffusers' own Euler grid
    at 4 steps would be [1000, 910, 717, 24]."""
    from diffusers import WanTransformer3DModel

    from diffbox.presets import load_shipped

    pipe_experts, seen = {}, []
    real_forward = WanTransformer3DModel.forward

    def forward(self, hidden_states, timestep, *args, **kwargs):
        seen.append((id(self), round(float(timestep.flatten()[0]), 2)))
        return real_forward(self, hidden_states, timestep, *args, **kwargs)

    monkeypatch.setattr(WanTransformer3DModel, "forward", forward)
    (preset,) = [p for p in load_shipped() if p["name"] == "Lightning 4-step"]
    params = {**preset["params"], "loras": [{"name": LORA_HIGH, "weight_high": 1.0, "weight_low": 0.0},
                                            {"name": LORA_LOW, "weight_high": 0.0, "weight_low": 1.0}]}
    job = services.submit_i2v({**SMALL, **params}, images[0])
    assert job.wait(180).status == DONE
    pipe = next(iter(services.cache._entries.values())).pipe
    pipe_experts = {id(pipe.transformer): "high", id(pipe.transformer_2): "low"}
    assert [(pipe_experts[expert], t) for expert, t in seen] == [  # CFG 1: one call per step
        ("high", 1000.0), ("high", 937.5), ("low", 833.33), ("low", 625.0)]
    notes = " | ".join(services.history.get(job.id)["notes"])
    assert "timesteps: 1000, 937.5, 833.3, 625 (high-noise expert 2 steps, low-noise expert 2" in notes


def test_the_default_shift_is_wans_own_five_not_the_diffusers_repos_three(services, images):
    from diffbox.workflows import i2v

    assert i2v.SPEC["flow_shift"].default == 5.0 and i2v.SPEC["scheduler"].default == "unipc"
    job = services.submit_i2v({**SMALL, "num_inference_steps": 4}, images[0])
    assert job.wait(180).status == DONE
    # UniPC at shift 5 lands on Wan's own grid, 2 + 2 steps; the repo's shift 3 would run 999, 900, 750, 500
    notes = " | ".join(services.history.get(job.id)["notes"])
    assert "unipc scheduler, timesteps: 999, 937, 833, 625 (high-noise expert 2 steps" in notes
