"""The first-run screen on a fresh home: shown while no model exists, gone once the demo models are built."""

from diffbox.ui.first_run import RECOMMENDED, needs_first_run


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


def test_the_recommended_set_covers_every_workflow():
    ids = {model_id for _, model_id, _ in RECOMMENDED}
    assert {"Wan-AI/Wan2.2-I2V-A14B-Diffusers", "Qwen/Qwen-Image-Edit-2509", "vita-video-gen/svi-model"} == ids
    files = [file for _, _, file in RECOMMENDED if file]
    assert any("high_noise" in f for f in files) and any("low_noise" in f for f in files)
