"""The first-run screen on a fresh home: shown while no model exists, with the pod plan for the measured
VRAM, RAM and disk; gone once the demo models are built."""

import pytest

from diffbox.engine.pod_plan import GB, GiB, recommend
from diffbox.hub import pod_setup
from diffbox.ui.first_run import needs_first_run


def handler(app, api_name):
    return next(fn.fn for fn in app.fns.values() if fn.api_name == api_name)


def test_an_empty_home_gets_the_first_run_screen_and_demo_models_end_it(tmp_path):
    from diffbox.services import Services
    from diffbox.settings import Settings, prepare_home
    from diffbox.ui.app import build_app

    settings = Settings(home=tmp_path / "home", demo=False)
    prepare_home(settings, env={})
    services = Services.start(settings)
    try:
        assert needs_first_run(services)
        app = build_app(services)
        group = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "first-run")
        assert group.visible
        update, text = handler(app, "ui_first_run_demo")()
        assert update.visible is False and "Reload the page" in text
        assert services.models("i2v") and services.models("qwen_edit") and not needs_first_run(services)
        rebuilt = build_app(services)  # a reloaded page: the screen is gone for good
        assert not next(b for b in rebuilt.blocks.values() if getattr(b, "elem_id", None) == "first-run").visible
    finally:
        services.hub.close()
        services.history.close()


@pytest.fixture
def fresh(tmp_path):
    from diffbox.services import Services
    from diffbox.settings import Settings, prepare_home

    settings = Settings(home=tmp_path / "home", demo=False)
    prepare_home(settings, env={})
    services = Services.start(settings)
    yield services
    services.hub.close()
    services.history.close()


def plan_markdown(app) -> str:
    text = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "first-run-plan").value
    return text.replace("\\", "")  # as rendered: Markdown escapes dropped


def test_without_a_gpu_the_screen_says_so_and_proposes_nothing(fresh):
    from diffbox.ui.app import build_app

    measured = fresh.pod_resources()  # this machine's real probes: no CUDA here
    assert measured["vram_bytes"] == 0 and measured["ram_bytes"] > 0 and measured["disk_free_bytes"] > 0
    app = build_app(fresh)
    text = plan_markdown(app)
    assert "No CUDA GPU was found" in text and "RAM" in text and "free disk" in text
    button = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "first-run-download")
    assert not button.visible


def test_a_24_gb_pod_is_shown_its_plan_and_one_click_queues_exactly_it(fresh, monkeypatch):
    from diffbox.ui.app import build_app

    pod = {"vram_bytes": 24 * GiB, "ram_bytes": 64 * GiB, "disk_free_bytes": 150 * GB, "device": "cuda:0 test"}
    monkeypatch.setattr(fresh, "pod_resources", lambda: pod)
    plan = recommend(24, 64, 150)
    app = build_app(fresh)
    text = plan_markdown(app)
    assert "Wan-AI/Wan2.2-I2V-A14B-Diffusers" in text and "without the weights of transformer, transformer_2" in text
    assert "HighNoise-Q8_0.gguf" in text and f"**{plan.total_bytes / GB:.1f} GB** of 150.0 GB free" in text
    for title in ("Image → Video", "SVI 2.0 Pro", "Qwen Image Edit", "Upscale", "Interpolate"):
        assert f"| {title} | yes |" in text
    assert "RealESRGAN_x4plus.safetensors" in text  # the finishing workflows' one file (67 MB)
    assert "model_offload" in text and "Wan2.2-I2V-A14B · GGUF Q8_0" in text

    asked = []
    monkeypatch.setattr(fresh.downloads, "request", lambda source, model_id, file="", without=(): asked.append(
        (source, model_id, file, tuple(without))) or f"id{len(asked)}")
    reply = handler(app, "ui_first_run_download")()
    assert "Queued 7 download(s)" in reply and "Wan2.2-I2V-A14B · GGUF Q8_0" in reply.replace("\\", "")
    expected = [(r.source, r.model_id, r.file, r.without) for r in pod_setup.requests(plan)]
    assert asked == expected
    fetched = {(f.repo, f.path) for f in plan.files}
    singles = {(model_id, file) for _, model_id, file, _ in asked if file}
    assert singles == {key for key in fetched if key[0] not in pod_setup.BASE_REPOS.values()}
    assert sum(r.bytes for r in pod_setup.requests(plan)) == plan.total_bytes
    variant = next(v for v in fresh.library.variants() if v.name == "Wan2.2-I2V-A14B · GGUF Q8_0")
    assert variant.missing == ["base", "transformer", "transformer_2"]  # offered once its downloads land


def test_a_pod_too_small_for_a_workflow_is_told_why_with_numbers(fresh, monkeypatch):
    from diffbox.ui.app import build_app

    monkeypatch.setattr(fresh, "pod_resources", lambda: {"vram_bytes": 8 * GiB, "ram_bytes": 16 * GiB,
                                                         "disk_free_bytes": 60 * GB, "device": "cuda:0 test"})
    text = plan_markdown(build_app(fresh))
    assert "| Image → Video | **does not fit** |" in text and "too small" in text and "GB" in text
