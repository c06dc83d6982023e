"""README.md's API snippets, run exactly as written against `python app.py --demo`.

The only change is the address (the app listens on a free port, not 7860). The files the snippets
name are made in the working directory, and the SVI LoRA files they name are put in models/loras/
(copies of the tiny demo LoRAs), where Models → Download puts them.
"""

import re
import shutil
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from conftest import make_demo_home, read_frames
from test_app import start_app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOC_URL = "http://127.0.0.1:7860/"


def api_snippets() -> list[str]:
    section = README.split("\n## API\n", 1)[1].split("The model hub is scriptable", 1)[0]
    return re.findall(r"```python\n(.+?)\n```", section, re.S)


def test_the_api_section_has_one_snippet_per_workflow_and_health():
    snippets = api_snippets()
    assert len(snippets) == 5
    for name, snippet in zip(("/i2v", "/svi", "/qwen_edit", "/upscale", "/health"), snippets):
        assert name in snippet


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_models):
    home = make_demo_home(tmp_path_factory.mktemp("readme-api"), demo_models)
    (home / "models" / "loras").mkdir()
    for expert in ("high", "low"):
        names = re.findall(rf'"svi_lora_{expert}": "([^"]+)"', README)
        assert names and "/" not in names[0], f"README's SVI snippet names no svi_lora_{expert} file"
        shutil.copy(demo_models["wan22-i2v"].parent / "loras" / f"wan-lora-{expert}.safetensors",
                    home / "models" / "loras" / names[0])
    process, url, _ = start_app(home)
    yield url, home
    process.terminate()
    process.wait(30)


def test_readme_api_snippets_run_against_the_demo_app(app, tmp_path, monkeypatch, capsys):
    app, _ = app
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 48), (30, 120, 220)).save("start.png")
    Image.new("RGB", (64, 48), (200, 60, 40)).save("photo.png")
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (16, 12, 48, 36))
    mask.save("mask.png")
    snippets = api_snippets()
    assert DOC_URL in snippets[0] and DOC_URL in snippets[-1]
    namespace: dict = {}
    for snippet in snippets:
        exec(compile(snippet.replace(DOC_URL, app), "README.md", "exec"), namespace)  # noqa: S102

    printed = capsys.readouterr().out
    frames = read_frames(namespace["video"])
    assert len(frames) == 17 and frames[0].shape == (128, 128, 3)
    clips = re.findall(r"clip_\d+\.mp4 (\d+)", printed)
    assert [int(c) for c in clips] == [0, 1, 2, 3], printed[-3000:]
    stitched = len(read_frames(namespace["stitched"]))
    longer = namespace["longer"]
    assert Path(longer[0] if isinstance(longer, (list, tuple)) else longer).is_file()
    assert stitched > len(read_frames(namespace["job"].outputs()[0][0]))
    pngs = namespace["pngs"]
    assert len(pngs) == 1
    with Image.open(pngs[0]) as image:
        assert image.size == (64, 48)  # match_input_size
    with Image.open(namespace["big"]) as image:
        assert image.size == (128, 96)  # the 64×48 start image ×2
    smooth = read_frames(namespace["smooth"])
    assert len(smooth) == (17 - 1) * 2 + 1 and smooth[0].shape == (128, 128, 3)
    assert namespace["meta"]["params"]["factor"] == 2
    assert "'ok': True" in printed and "'device': 'cpu'" in printed
    # The cancelled 200-step job stopped on the server: not done, at most a step after the cancel.
    long_jobs = [r for r in namespace["client"].predict(50, api_name="/history")
                 if r["workflow"] == "i2v" and r["params"]["num_inference_steps"] == 200]
    for record in long_jobs:  # none: it left Gradio's queue before it started
        assert record["status"] == "cancelled", record["status"]
        assert record["steps_done"] - record["steps_at_cancel"] <= 1 and record["steps_done"] < 200


def test_a_bare_lora_name_that_two_library_files_share_is_refused_with_both(app, tmp_path):
    url, home = app
    name = re.findall(r'"svi_lora_high": "([^"]+)"', README)[0]
    (home / "models" / "loras" / "again").mkdir(exist_ok=True)
    shutil.copy(home / "models" / "loras" / name, home / "models" / "loras" / "again" / name)
    Image.new("RGB", (64, 48)).save(tmp_path / "start.png")
    client = Client(url, verbose=False)
    try:
        with pytest.raises(AppError) as refused:
            client.predict({"svi_lora_high": name, "svi_lora_low": "", "num_clips": 1}, handle_file(
                str(tmp_path / "start.png")), api_name="/svi")
        message = str(refused.value)
        assert f"svi_lora_high: {name!r} names 2 library files" in message
        assert f"loras/{name}" in message and f"loras/again/{name}" in message
        # The path under models/ chooses one; the job runs.
        stitched, meta = client.predict({"svi_lora_high": f"loras/again/{name}", "svi_lora_low": "",
                                         "num_clips": 1, "num_inference_steps": 1},
                                        handle_file(str(tmp_path / "start.png")), api_name="/svi")
        assert Path(stitched).is_file() and meta["params"]["svi_lora_high"] == f"loras/again/{name}"
    finally:
        shutil.rmtree(home / "models" / "loras" / "again")


def test_missing_svi_loras_are_each_named_with_where_to_get_them(app, tmp_path):
    url, _ = app
    Image.new("RGB", (64, 48)).save(tmp_path / "start.png")
    with pytest.raises(AppError) as refused:
        Client(url, verbose=False).predict({"svi_lora_high": "SVI_high.safetensors",
                                            "svi_lora_low": "loras/SVI_low.safetensors"},
                                           handle_file(str(tmp_path / "start.png")), api_name="/svi")
    message = str(refused.value)
    assert "svi_lora_high: 'SVI_high.safetensors' is not in the library" in message
    assert "svi_lora_low: 'loras/SVI_low.safetensors' is not in the library" in message
    assert "Download its models" in message
