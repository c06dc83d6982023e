"""Upscale: real spandrel on the RealESRGAN_x4plus twin (and its x2plus variant), run through the job runner."""

import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import read_frames
from diffbox.engine.runner import JobRunner
from diffbox.engine.compat import torchvision_usable
from diffbox.engine.upscale import NotAnUpscaler, architecture_of, load_upscaler, upscale_image
from diffbox.engine.weight_files import read_safetensors_header
from diffbox.params import InvalidParams
from diffbox.store import CANCELLED, DONE, FAILED, JobHistory
from diffbox.twins.upscalers import build_esrgan
from diffbox.workflows import upscale
from diffbox.workflows.outputs import read_metadata, write_video


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("upscalers")
    paths = {}
    for scale in (4, 2):
        paths[scale] = root / f"RealESRGAN_x{scale}plus.safetensors"
        build_esrgan(paths[scale], seed=0, scale=scale)
    return paths


@pytest.fixture
def runner(tmp_path):
    history = JobHistory(tmp_path / "jobs.db")
    yield JobRunner(history, tmp_path / "outputs", gpu_lock=threading.Lock())
    history.close()


def picture(width=40, height=24) -> Image.Image:
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    array = np.stack([np.tile(ramp, (height, 1)), np.tile(ramp[::-1], (height, 1)),
                      np.full((height, width), 90, np.uint8)], axis=-1)
    return Image.fromarray(array)


def run_job(runner, model, values, file, cancel_after_frames=None):
    job_input = upscale.prepare(values, file=file)

    def work(ctx):
        if cancel_after_frames is not None:
            def stop_after(event):
                if getattr(event, "stage", "") == "upscaling" and event.step == cancel_after_frames:
                    ctx.job.cancel()
            ctx.job.subscribe(stop_after)
        return upscale.run(ctx, None, job_input, model.name, model_path=model)

    job = runner.submit("upscale", job_input.params, work)
    return job, job.wait(timeout=120)


def test_spandrel_detects_the_twins_architecture_and_scale_without_torchvision(models, twin):
    for scale, path in models.items():
        model = load_upscaler(path, "float32", "cpu")
        assert (model.architecture, model.scale, model.dtype) == ("ESRGAN", scale, torch.float32)
        assert architecture_of(read_safetensors_header(path)) == "ESRGAN"
    if not torchvision_usable():  # the stand-in lived only while spandrel was imported
        assert not any(name.startswith("torchvision") for name in sys.modules)
    for other in ("comfy-wan2.2-i2v-high-fp16", "svi-2.0-pro-high", "comfy-umt5-xxl-fp16"):
        assert architecture_of(read_safetensors_header(twin(other))) is None


def test_the_original_esrgan_names_load_as_the_same_model(models, tmp_path):
    """4x-UltraSharp and most community upscalers keep ESRGAN's `model.N` names; spandrel reads both."""
    old_names = tmp_path / "4x-community.safetensors"
    build_esrgan(old_names, seed=0, scale=4, esrgan_names=True)
    assert architecture_of(read_safetensors_header(old_names)) == "ESRGAN"
    image = torch.tensor(np.asarray(picture())).permute(2, 0, 1).float() / 255
    runs = [upscale_image(load_upscaler(path, "float32", "cpu"), image, 4, 0, 0) for path in (models[4], old_names)]
    assert torch.equal(*runs)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_twin_upscales_into_a_copy_of_the_picture(models, dtype):
    model = load_upscaler(models[4], dtype, "cpu")
    assert next(model.descriptor.model.parameters()).dtype == getattr(torch, dtype)
    image = torch.tensor(np.asarray(picture())).permute(2, 0, 1).float() / 255
    out = upscale_image(model, image, 4, tile=0, overlap=0)
    assert out.shape == (3, 96, 160) and out.dtype == torch.float32
    nearest = image.repeat_interleave(4, 1).repeat_interleave(4, 2)
    assert (out - nearest).abs().mean() < 0.1  # the twin passes colours through: a real picture, not noise
    assert (out - nearest.flip(2)).abs().mean() > 0.3


@pytest.mark.parametrize("model_scale", [4, 2])
def test_tiles_give_the_untiled_pixels(models, model_scale):
    model = load_upscaler(models[model_scale], "float32", "cpu")
    image = torch.tensor(np.asarray(picture(52, 36))).permute(2, 0, 1).float() / 255
    whole = upscale_image(model, image, 4, tile=0, overlap=0)
    seen, run_model = [], model.descriptor
    model.descriptor = lambda patch: seen.append(tuple(patch.shape[2:])) or run_model(patch)
    tiled = upscale_image(model, image, 4, tile=24, overlap=8)
    model.descriptor = run_model
    assert seen and max(max(shape) for shape in seen) == 24  # memory bounded: the model never sees more
    seams = upscale_image(model, image, 4, tile=24, overlap=0)
    assert tiled.shape == whole.shape == (3, 144, 208)
    # Cross-faded tiles stay within 0.04 everywhere; plain averaging of the overlap (no fade) reaches 0.07,
    # butted tiles (no overlap) 0.1-0.2 at the seams.
    assert (tiled - whole).abs().mean() < 0.004 and (tiled - whole).abs().max() < 0.04
    assert (seams - whole).abs().max() > 0.08


@pytest.mark.parametrize("scale, model_scale", [(2, 4), (4, 4), (4, 2)])
def test_an_image_comes_back_as_a_png_at_exactly_the_scale(runner, models, tmp_path, scale, model_scale):
    source = tmp_path / "in.png"
    picture(40, 24).save(source)
    job, outcome = run_job(runner, models[model_scale], {"scale": scale, "tile": 16, "tile_overlap": 4}, str(source))
    assert outcome.status == DONE, outcome.error
    [path] = outcome.result.outputs
    with Image.open(path) as result:
        assert (result.format, result.size, result.mode) == ("PNG", (40 * scale, 24 * scale), "RGB")
        small = np.asarray(result.resize((40, 24), Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(small - np.asarray(picture(40, 24), dtype=np.float32)).mean() < 40
    meta = read_metadata(path)
    assert meta["params"]["scale"] == scale and meta["upscaler"]["model_scale"] == model_scale
    assert (meta["width"], meta["height"]) == (40 * scale, 24 * scale)


def test_a_video_keeps_its_frame_count_and_fps(runner, models, tmp_path):
    frames = np.stack([np.asarray(picture(36, 20)) // (1 + i % 3) for i in range(5)])
    source = write_video(frames, tmp_path / "in.mp4", 12, macro_block_size=2)
    job, outcome = run_job(runner, models[4], {"scale": 2, "tile": 0}, str(source))
    assert outcome.status == DONE, outcome.error
    [path] = outcome.result.outputs
    decoded = read_frames(path)
    assert len(decoded) == 5 and decoded[0].shape == (40, 72, 3)  # exactly ×2, though 72 is no multiple of 16
    brightness = [frame.mean() for frame in decoded]  # the frames stay in order: full, ½, ⅓, full, ½
    assert brightness[0] > brightness[1] > brightness[2] and abs(brightness[3] - brightness[0]) < 3
    meta = read_metadata(path)
    assert meta["fps"] == 12 and meta["frames"] == 5 and meta["source"]["kind"] == "video"
    import imageio.v2 as imageio
    with imageio.get_reader(path) as reader:
        assert reader.get_meta_data()["fps"] == 12


def test_stop_mid_video_leaves_nothing_half_written(runner, models, tmp_path):
    frames = np.stack([np.asarray(picture(32, 16))] * 6)
    source = write_video(frames, tmp_path / "in.mp4", 8)
    job, outcome = run_job(runner, models[4], {"scale": 2, "tile": 8, "tile_overlap": 2}, str(source),
                           cancel_after_frames=2)
    assert outcome.status == CANCELLED
    assert 2 <= job.steps_done < 6
    outdir = runner.outputs_dir / job.id
    assert list(outdir.iterdir()) == []


def test_a_video_whose_result_would_not_fit_in_ram_is_refused_naming_the_file(runner, models, tmp_path,
                                                                               monkeypatch):
    from diffbox.engine.memory import MemoryStatus

    source = write_video(np.stack([np.asarray(picture(32, 16))] * 4), tmp_path / "in.mp4", 8)
    # 4 frames of 128×64×3 (×4) are 98 kB, held twice: with 250 kB free, ¾ of it is too little.
    monkeypatch.setattr(upscale, "host_ram_status", lambda: MemoryStatus("cpu", 10**9, 250_000))
    job, outcome = run_job(runner, models[4], {"scale": 4}, str(source))
    assert outcome.status == FAILED and outcome.error.startswith("file: 4 frames ×4 need")
    assert job.steps_done == 0


def test_a_file_that_is_not_an_upscaler_fails_naming_the_model_field(runner, tmp_path):
    from safetensors.torch import save_file

    lora = tmp_path / "not-an-upscaler.safetensors"
    save_file({"blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 8)}, lora)
    with pytest.raises(NotAnUpscaler, match="not-an-upscaler.safetensors"):
        load_upscaler(lora)
    source = tmp_path / "in.png"
    picture().save(source)
    job, outcome = run_job(runner, lora, {"scale": 2}, str(source))
    assert outcome.status == FAILED and outcome.error.startswith("model: ")
    assert "spandrel recognises" in outcome.error


def test_bad_input_is_refused_naming_the_field(models, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(InvalidParams) as refused:
        upscale.prepare({"scale": 2}, file=str(junk))
    assert set(refused.value.errors) == {"file"}
    with pytest.raises(InvalidParams) as refused:
        upscale.prepare({"scale": 3}, file=picture())
    assert set(refused.value.errors) == {"scale"}
    with pytest.raises(InvalidParams) as refused:
        upscale.prepare({"tile": 16, "tile_overlap": 12}, file=picture())
    assert set(refused.value.errors) == {"tile_overlap"}
    with pytest.raises(InvalidParams) as refused:
        upscale.prepare({"scale": 4}, file=picture(4000, 8))
    assert set(refused.value.errors) == {"scale"}
    with pytest.raises(InvalidParams) as refused:
        upscale.prepare({"scale": 2}, file=None)
    assert set(refused.value.errors) == {"file"}


# ---------------------------------------------------------------------------------------------
# From outside: /upscale on a launched `python app.py --demo` (the registry makes the endpoint)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory, demo_models):
    from gradio_client import Client

    from conftest import make_demo_home
    from test_app import start_app

    process, url, _ = start_app(make_demo_home(tmp_path_factory.mktemp("app"), demo_models))
    yield Client(url, verbose=False)
    process.terminate()
    process.wait(30)


def test_the_api_upscales_an_image_with_the_demo_model(client, tmp_path):
    from gradio_client import handle_file

    source = tmp_path / "in.png"
    picture(40, 24).save(source)
    path, meta = client.predict({"scale": 4}, handle_file(str(source)), api_name="/upscale")
    with Image.open(path) as result:
        assert (result.format, result.size) == ("PNG", (160, 96))
    assert meta["model"].endswith("RealESRGAN_x4plus.safetensors") and meta["upscaler"]["architecture"] == "ESRGAN"
    assert read_metadata(path)["params"] == meta["params"]


def test_the_api_upscales_a_video_keeping_frames_and_fps(client, tmp_path):
    from gradio_client import handle_file

    source = write_video(np.stack([np.asarray(picture(32, 16))] * 3), tmp_path / "in.mp4", 10)
    path, meta = client.predict({"scale": 2}, handle_file(str(source)), api_name="/upscale")
    decoded = read_frames(path)
    assert len(decoded) == 3 and decoded[0].shape == (32, 64, 3) and meta["fps"] == 10


def test_the_api_names_the_bad_field(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    source = tmp_path / "in.png"
    picture().save(source)
    with pytest.raises(AppError, match="scale"):
        client.predict({"scale": 3}, handle_file(str(source)), api_name="/upscale")
