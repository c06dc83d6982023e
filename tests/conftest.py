import os
from contextlib import contextmanager

import pytest

# Apps and hubs the tests start walk no hub for the model catalog on their own (there is none to reach, or a
# fake that a background walk would race); tests/test_catalog.py and the catalog's browser test ask for it.
os.environ.setdefault("DIFFBOX_CATALOG_HOURS", "0")


@pytest.fixture
def shrink_qwen_condition_area(monkeypatch):
    """Make the Qwen edit pipelines condition on ~64x64 images instead of their fixed ~1 MP.

    The edit pipelines resize every input image to about 1024x1024 (hard-coded
    ``calculate_dimensions(1024 * 1024, ...)`` / ``VAE_IMAGE_SIZE``); on a CPU the VAE then takes
    seconds per image even with the tiny demo models (docs/tiny_models.md, trap 6). Returns the area.
    """
    from diffusers.pipelines.qwenimage import (
        pipeline_qwenimage_edit,
        pipeline_qwenimage_edit_inpaint,
        pipeline_qwenimage_edit_plus,
    )

    area = 64 * 64
    for module in (pipeline_qwenimage_edit, pipeline_qwenimage_edit_inpaint, pipeline_qwenimage_edit_plus):
        original = module.calculate_dimensions
        monkeypatch.setattr(
            module, "calculate_dimensions", lambda target_area, ratio, original=original: original(area, ratio)
        )
    monkeypatch.setattr(pipeline_qwenimage_edit_plus, "VAE_IMAGE_SIZE", area)
    monkeypatch.setattr(pipeline_qwenimage_edit_plus, "CONDITION_IMAGE_SIZE", area)
    return area


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory):
    """The tiny random-weight models, built once per test session (the same builder --demo uses)."""
    from diffbox.demo import ensure_demo_models

    return ensure_demo_models(tmp_path_factory.mktemp("demo-models"))


@pytest.fixture(scope="session")
def twin(tmp_path_factory):
    """``twin(name) -> Path``: a miniature twin of a published file (diffbox.twins), built on first use."""
    from diffbox.twins import build_twin

    root = tmp_path_factory.mktemp("twins")
    return lambda name: build_twin(name, root)


@pytest.fixture(scope="session")
def streaming_tools():
    """Gradio streams video (the SVI tab's live clips) through the system ffmpeg and ffprobe; without them
    a browser test watching for clips would only time out. Fails at once with the app's own sentence."""
    from diffbox.workflows.outputs import STREAMING_NEEDS_FFMPEG, streaming_tools_missing

    missing = streaming_tools_missing()
    if missing:
        pytest.fail(f"{STREAMING_NEEDS_FFMPEG} (missing: {', '.join(missing)})", pytrace=False)


@pytest.fixture
def demo_home(tmp_path, demo_models):
    """A fresh diffbox home whose models/demo points at the session's tiny models."""
    return make_demo_home(tmp_path, demo_models)


@pytest.fixture
def services(demo_home):
    with running_services(demo_home) as started:
        yield started


def make_demo_home(folder, demo_models):
    """`folder`/home with models/demo pointing at the session's tiny models (what --demo would build)."""
    home = folder / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "demo").symlink_to(demo_models["wan22-i2v"].parent)
    return home


@contextmanager
def running_services(home):
    """Services started on `home` in demo mode, closed afterwards (download workers, hashing thread, db)."""
    from diffbox.services import Services
    from diffbox.settings import Settings, prepare_home

    settings = Settings(home=home, demo=True)
    prepare_home(settings, env={})
    started = Services.start(settings)
    try:
        yield started
    finally:
        if started.hub is not None:
            started.hub.close()
        started.history.close()


def read_frames(path) -> list:
    """Every frame of a video file, decoded by ffmpeg (imageio-ffmpeg); (H, W, 3) uint8 arrays."""
    import imageio.v2 as imageio

    with imageio.get_reader(path) as reader:
        return [frame for frame in reader.iter_data()]


@pytest.fixture
def browser_page(tmp_path, request):
    """A headless Chromium page (1280×900, 30 s timeouts) for a test that drives the app from outside; a
    full-page screenshot of how it ended lands in the test's tmp_path. DIFFBOX_SKIP_BROWSER=1 skips."""
    if os.environ.get("DIFFBOX_SKIP_BROWSER") == "1":
        pytest.skip("DIFFBOX_SKIP_BROWSER=1: browser tests skipped on request")
    from playwright.sync_api import sync_playwright

    from test_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            page.screenshot(path=str(tmp_path / f"{request.node.name}.png"), full_page=True)
            browser.close()
