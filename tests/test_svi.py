"""SVI 2.0 Pro on the tiny model: frame arithmetic, the exact conditioning per clip, prompts and seeds
per clip, Stop keeping finished clips, Extend continuing from the saved latents, infinite mode."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import read_frames
from diffbox.engine.runner import OutputEvent
from diffbox.engine.svi_pipeline import SVIPipeline
from diffbox.params import InvalidParams
from diffbox.store import CANCELLED, DONE
from diffbox.workflows import svi
from diffbox.workflows.images import cover, load_image
from diffbox.workflows.outputs import read_metadata

SMALL = {"width": 32, "height": 32, "num_frames": 9, "num_inference_steps": 2, "seed": 5,
         "svi_lora_high": "demo/loras/wan-lora-high.safetensors", "svi_lora_low": "demo/loras/wan-lora-low.safetensors"}


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "anchor.png"
    pixels = np.zeros((40, 40, 3), np.uint8)
    pixels[:, :20] = (20, 60, 220)
    pixels[:, 20:] = (230, 180, 30)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture
def calls(monkeypatch):
    """Records, per pipeline call, the condition prepare_latents built, the prompt, the seed and the
    denoised latents the call returned (the real methods still run)."""
    recorded = []
    real_prepare, real_call = SVIPipeline.prepare_latents, SVIPipeline.__call__

    def prepare(self, *args, **kwargs):
        noise, condition = real_prepare(self, *args, **kwargs)
        recorded[-1]["condition"] = condition.clone()
        return noise, condition

    def call(self, *args, **kwargs):
        recorded.append({"prompt": kwargs["prompt"], "seed": kwargs["generator"].initial_seed()})
        output = real_call(self, *args, **kwargs)
        recorded[-1]["latents"] = output.frames.clone()
        return output

    monkeypatch.setattr(SVIPipeline, "prepare_latents", prepare)
    monkeypatch.setattr(SVIPipeline, "__call__", call)
    return recorded


def run_svi(services, params, image, timeout=180):
    outcome = services.submit_svi({**SMALL, **params}, image).wait(timeout)
    assert outcome.status == DONE, outcome.error
    return outcome.result


def independent_anchor(demo_models, image, size=32):
    """The user's image encoded alone by the VAE, normalized: what every clip's latent 0 must be."""
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline.from_pretrained(demo_models["wan22-i2v"])
    pixels = pipe.video_processor.preprocess(cover(load_image(image, "image"), size, size), height=size, width=size)
    with torch.no_grad():
        latent = pipe.vae.encode(pixels.unsqueeze(2)).latent_dist.mode()
    mean = torch.tensor(pipe.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(pipe.vae.config.latents_std).view(1, -1, 1, 1, 1)
    return (latent - mean) / std


@pytest.mark.parametrize("frames,motion,clips", [(9, 1, 3), (13, 2, 2)])
def test_n_clips_give_exactly_f_plus_n_minus_1_times_f_minus_1_minus_4m_frames(services, image, frames, motion,
                                                                               clips):
    result = run_svi(services, {"num_frames": frames, "num_motion_latents": motion, "num_clips": clips}, image)
    stitched, *clip_files, state = result.outputs
    expected = frames + (clips - 1) * (frames - 1 - 4 * motion)
    whole = read_frames(stitched)
    assert len(whole) == expected and whole[0].shape == (32, 32, 3)
    parts = [read_frames(path) for path in clip_files]
    assert [len(p) for p in parts] == [frames] + [frames - 1 - 4 * motion] * (clips - 1)
    assert np.array_equal(np.stack(whole), np.concatenate(parts))  # clip 0 + trimmed clips = the video
    assert state.endswith(svi.STATE_FILE)
    saved = read_metadata(stitched)
    assert saved["workflow"] == "svi" and saved["clips"] == clips and saved["frames_added"] == expected
    assert saved == read_metadata(stitched.replace("video.mp4", "meta.json"))


def test_every_clip_is_conditioned_on_anchor_then_previous_denoised_latents_then_zeros(services, image, calls,
                                                                                      demo_models):
    result = run_svi(services, {"num_frames": 13, "num_motion_latents": 2, "num_clips": 3,
                                "prompts": ["first", "second"]}, image)
    anchor = independent_anchor(demo_models, image)
    assert len(calls) == 3
    for k, call in enumerate(calls):
        condition = call["condition"]
        mask, y = condition[:, :4], condition[:, 4:]
        assert condition.shape == (1, 20, 4, 4, 4)  # 13 frames = 4 latents of 4×4
        assert torch.all(mask[:, :, 0] == 1) and torch.all(mask[:, :, 1:] == 0)  # the anchor only
        torch.testing.assert_close(y[:, :, :1], anchor, rtol=1e-4, atol=1e-4)
        if k == 0:
            assert torch.all(y[:, :, 1:] == 0)
        else:
            previous = calls[k - 1]["latents"]  # denoised, before decoding: never re-encoded pixels
            assert torch.equal(y[:, :, 1:3], previous[:, :, -2:])
            assert torch.all(y[:, :, 3:] == 0)
    assert [c["prompt"] for c in calls] == ["first", "second", "second"]  # the last prompt repeats
    seeds = [c["seed"] for c in calls]
    assert seeds == [5 + k * svi.SEED_STRIDE for k in range(3)] == result.metadata["clip_seeds"]
    clip_meta = [read_metadata(path) for path in result.outputs[1:4]]
    assert [m["prompt"] for m in clip_meta] == ["first", "second", "second"]
    assert [m["seed"] for m in clip_meta] == seeds


def test_stop_after_clip_2_of_5_keeps_two_clips_and_their_stitched_video(services, image):
    job = services.submit_svi({**SMALL, "num_clips": 5, "num_inference_steps": 4}, image)
    delivered = []
    for event in job.events(timeout=180):
        if isinstance(event, OutputEvent) and event.kind == "clip":
            delivered.append(event.path)
            if len(delivered) == 2:
                job.cancel()
    outcome = job.wait(10)
    assert outcome.status == CANCELLED
    stitched, *clips, state = outcome.result.outputs
    assert clips == delivered and len(read_frames(stitched)) == 9 + 4
    assert read_metadata(stitched)["clips"] == 2 and read_metadata(stitched)["stopped"] == "stopped by the user"
    record = services.history.get(job.id)
    assert record["status"] == CANCELLED and record["outputs"][0] == stitched
    assert services.runner.gpu_lock.acquire(timeout=5)  # released: the next job can start
    services.runner.gpu_lock.release()


def test_extend_continues_from_the_saved_latent_exactly_like_one_longer_run(services, image, calls):
    whole = run_svi(services, {"num_clips": 3}, image)
    first = run_svi(services, {"num_clips": 2}, image)
    saved, info = svi.load_state(first.outputs[-1])
    assert info["clips_done"] == 2
    calls.clear()
    job = services.submit_svi_extend(first.metadata["job_id"], {"num_clips": 1})
    outcome = job.wait(180)
    assert outcome.status == DONE, outcome.error
    (call,) = calls
    motion = call["condition"][:, 4:, 1:2]
    assert torch.equal(motion, saved["last"][:, :, -1:])  # the first new clip continues the saved latent
    assert torch.equal(call["condition"][:, 4:, :1], saved["anchor"])
    assert call["seed"] == 5 + 2 * svi.SEED_STRIDE  # clip indices (and seeds) continue too
    extended = read_frames(outcome.result.outputs[0])
    assert len(extended) == 9 + 2 * 4
    assert np.array_equal(np.stack(extended), np.stack(read_frames(whole.outputs[0])))  # seamless
    assert outcome.result.metadata["resumed_from"] == first.metadata["job_id"]


def test_infinite_mode_runs_until_stop(services, image):
    job = services.submit_svi({**SMALL, "infinite": True, "num_clips": 1}, image)
    clips = 0
    for event in job.events(timeout=180):
        if isinstance(event, OutputEvent) and event.kind == "clip":
            clips += 1
            if clips == 2:  # num_clips=1 is ignored: a second clip came
                job.cancel()
    outcome = job.wait(10)
    assert outcome.status == CANCELLED
    assert len(read_frames(outcome.result.outputs[0])) == 9 + 4 * (len(outcome.result.outputs) - 3)
    assert outcome.result.metadata["params"]["infinite"] is True


def test_color_match_changes_the_clips_towards_the_anchor(services, image):
    plain = np.stack(read_frames(run_svi(services, {"num_clips": 1}, image).outputs[0])).astype(float)
    matched = np.stack(read_frames(run_svi(services, {"num_clips": 1, "color_match": True}, image).outputs[0]))
    anchor = np.asarray(cover(load_image(image, "image"), 32, 32), dtype=float)
    distance = lambda frames: np.abs(frames.astype(float).mean(axis=(0, 1, 2)) - anchor.mean(axis=(0, 1))).sum()
    assert distance(matched) < distance(plain)


@pytest.mark.parametrize("params,field", [
    ({"num_motion_latents": 2}, "num_motion_latents"),  # 9 frames = 3 latents: no room for 2
    ({"svi_lora_high": "nope.safetensors"}, "svi_lora_high"),
    ({"distill_lora": "nope.safetensors"}, "distill_lora"),
    ({"prompts": "not a list"}, "prompts"),
    ({"num_clips": 0}, "num_clips"),
    ({"prompt": "i2v's single prompt"}, "params"),
])
def test_bad_input_is_refused_naming_the_field(services, image, params, field):
    with pytest.raises(InvalidParams) as caught:
        services.submit_svi({**SMALL, **params}, image)
    assert field in caught.value.errors


def test_extend_refuses_an_unknown_job_and_a_new_size(services, image):
    with pytest.raises(InvalidParams) as caught:
        services.submit_svi_extend("no-such-job", {})
    assert "job_id" in caught.value.errors
    first = run_svi(services, {"num_clips": 1, "num_inference_steps": 1}, image)
    with pytest.raises(InvalidParams) as caught:
        services.submit_svi_extend(first.metadata["job_id"], {"width": 64})
    assert "width" in caught.value.errors


# The official SVI 2.0 Pro inference (vita-epfl/Stable-Video-Infinity, branch svi_wan22): DiffSynth's Wan Euler
# sampler at shift 5, 50 steps, switch_DiT_boundary 0.875, cfg_scale 4.0, 81 frames, 1 motion latent, 15 fps.
OFFICIAL = {"scheduler": "euler", "flow_shift": 5.0, "num_inference_steps": 50, "boundary_ratio": 0.875,
            "guidance_scale": 4.0, "guidance_scale_2": 4.0, "num_frames": 81, "num_motion_latents": 1, "fps": 15,
            "svi_weight_high": 1.0, "svi_weight_low": 1.0}


def test_svis_defaults_and_its_official_preset_are_the_official_recipe():
    from diffbox.presets import load_shipped

    defaults = svi.SPEC.defaults()
    assert {name: defaults[name] for name in OFFICIAL} == OFFICIAL
    (preset,) = [p for p in load_shipped() if p["name"] == "SVI 2.0 Pro official"]
    assert {name: preset["params"][name] for name in OFFICIAL} == OFFICIAL  # set explicitly: it claims the recipe
    pinned = {f["name"].rsplit("/", 1)[-1] for m in preset["models"] for f in m["files"]}
    assert {preset["params"]["svi_lora_high"], preset["params"]["svi_lora_low"]} == {f"loras/{n}" for n in pinned}


def test_the_official_sampler_splits_the_steps_at_875_and_says_so(services, image):
    job = services.submit_svi({**SMALL, **svi.DISTILL_PRESET, "num_clips": 1}, image)
    assert job.wait(180).status == DONE
    notes = " | ".join(services.history.get(job.id)["notes"])
    # Wan's grid at shift 5, 6 steps: 3 + 3 around t = 875, as SVI's own ComfyUI workflow runs them
    assert "euler scheduler, timesteps: 1000, 961.5, 909.1, 833.3, 714.3, 500 (high-noise expert 3 steps" in notes
