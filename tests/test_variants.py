"""Variants as models: a diffusers base without its experts' weights plus single-file experts, picked by name
in the forms and run as an I2V job, for each kind of published expert (twins: diffusers folder, bf16/fp16
single file, scaled fp8, GGUF)."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import read_frames
from fake_hubs import fakes  # noqa: F401 (fixture)
from diffbox.hub.variants import Ref
from diffbox.store import DONE

WAN = "wan2.2-i2v-a14b-diffusers"
KINDS = {  # variant name -> (high-noise twin, low-noise twin)
    "Wan2.2-I2V-A14B · fp16": ("comfy-wan2.2-i2v-high-fp16", "comfy-wan2.2-i2v-low-fp16"),
    "Wan2.2-I2V-A14B · fp8 scaled": ("comfy-wan2.2-i2v-high-fp8-scaled-unprefixed", "kijai-wan2.2-i2v-low-fp8-scaled-kj"),
    "Wan2.2-I2V-A14B · GGUF Q8_0": ("quantstack-wan2.2-i2v-high-q8_0", "quantstack-wan2.2-i2v-high-q8_0"),
}
SMALL = {"width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 2, "seed": 3, "dtype": "bfloat16",
         "prompt": "a red square"}


def copy_base(twin_folder, dest):
    """The -Diffusers repo as the pod plan fetches it: everything but the experts' weights (configs kept)."""
    shutil.copytree(twin_folder, dest)
    for expert in ("transformer", "transformer_2"):
        for weights in (dest / expert).iterdir():
            if weights.name != "config.json":
                weights.unlink()


@pytest.fixture(scope="module")
def variant_services(tmp_path_factory, twin):
    from diffbox.services import Services
    from diffbox.settings import Settings, prepare_home

    home = tmp_path_factory.mktemp("variants") / "home"
    models = home / "models"
    copy_base(twin(WAN), models / "diffusers" / "Wan-AI--Wan2.2-I2V-A14B-Diffusers")
    shutil.copytree(twin(WAN), models / "diffusers" / "wan-full")
    (models / "checkpoints").mkdir(parents=True)
    for high, low in KINDS.values():
        for which, name in (("high", high), ("low", low)):
            file = twin(name)
            shutil.copy(file, models / "checkpoints" / f"{which}-{file.name}")
    settings = Settings(home=home, demo=False)
    prepare_home(settings, env={})
    services = Services.start(settings)
    for variant, (high, low) in KINDS.items():
        parts = {c: Ref("local", f"checkpoints/{which}-{twin(name).name}")
                 for c, which, name in (("transformer", "high", high), ("transformer_2", "low", low))}
        services.library.variant_records.add(variant, "wan2.2-i2v",
                                             Ref("local", "diffusers/Wan-AI--Wan2.2-I2V-A14B-Diffusers"), parts)
    yield services
    services.hub.close()
    services.history.close()


def test_a_base_without_experts_is_offered_only_through_its_variants(variant_services):
    names = [m.name for m in variant_services.models("i2v")]
    assert "diffusers/Wan-AI--Wan2.2-I2V-A14B-Diffusers" not in names
    assert names == ["diffusers/wan-full", *sorted(KINDS)]
    assert [m.name for m in variant_services.models("svi")] == names
    assert not variant_services.models("qwen_edit")
    # A variant whose part is not here is not offered (and says what is missing).
    variant_services.library.variant_records.add("half", "wan2.2-i2v", Ref("local", "diffusers/wan-full"),
                                                 {"transformer": Ref("hf", "QuantStack/Wan2.2-I2V-A14B-GGUF",
                                                                     "HighNoise/x.gguf")})
    try:
        half = next(v for v in variant_services.library.variants() if v.name == "half")
        assert not half.ready and half.missing == ["transformer"]
        assert "half" not in [m.name for m in variant_services.models("i2v")]
    finally:
        variant_services.library.variant_records.remove("half")


def test_each_variant_kind_is_picked_in_the_form_and_runs_an_i2v_job(variant_services, tmp_path):
    from diffbox.ui.app import build_app

    app = build_app(variant_services)
    picker = next(b for b in app.blocks.values() if b.__class__.__name__ == "Dropdown"
                  and any(c[0] == "Wan2.2-I2V-A14B · GGUF Q8_0" for c in b.choices))
    choices = [value for _, value in picker.choices]
    image = tmp_path / "start.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(image)
    videos = {}
    for name in ["diffusers/wan-full", *KINDS]:
        assert name in choices
        outcome = variant_services.submit_i2v({**SMALL, "model": name}, str(image)).wait(300)
        assert outcome.status == DONE, outcome.error
        frames = np.stack(read_frames(outcome.result.outputs[0]))
        assert frames.shape == (5, 32, 32, 3)
        assert outcome.result.metadata["model"] == name
        videos[name] = frames
    # Each kind ran its own expert files: the outputs differ from the folder's own experts'.
    for name in KINDS:
        assert not np.array_equal(videos[name], videos["diffusers/wan-full"]), name
    assert variant_services.health()["models_loaded"]


# ---------------------------------------------------------------------------------------------
# The pod plan's downloads, and a config pinning a variant rebuilding it on a fresh home (local fake Hub)
# ---------------------------------------------------------------------------------------------

GGUF_HIGH = "HighNoise/Wan2.2-I2V-A14B-HighNoise-Q8_0.gguf"
GGUF_LOW = "LowNoise/Wan2.2-I2V-A14B-LowNoise-Q8_0.gguf"


@pytest.fixture
def published_twins(fakes, twin):
    """The published Wan repos on the fake Hub under their real names, holding the twins' bytes."""
    from diffbox.engine.published import WAN_GGUF, WAN_REPO

    folder = twin(WAN)
    fakes.hf.add_repo(WAN_REPO, {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
                                 if p.is_file()}, library_name="diffusers")
    # Two different files (the library finds a download by its hash: the same bytes twice would be one file)
    fakes.hf.add_repo(WAN_GGUF, {GGUF_HIGH: twin("quantstack-wan2.2-i2v-high-q8_0").read_bytes(),
                                 GGUF_LOW: twin("quantstack-wan2.2-i2v-high-q8_0-prefixed").read_bytes()}, tags=["gguf"])
    return fakes


@pytest.fixture
def start(published_twins, tmp_path, monkeypatch):
    from diffbox.services import Services
    from diffbox.settings import Settings, prepare_home

    monkeypatch.setenv("HF_ENDPOINT", published_twins.hf.url)
    started = []

    def start_services(name):
        settings = Settings(home=tmp_path / name, demo=False)
        prepare_home(settings, env={})
        started.append(Services.start(settings))
        return started[-1]

    yield start_services
    for services in started:
        services.hub.close()
        services.history.close()


def wait_all(services, ids):
    for download_id in ids:
        state = services.downloads.wait(download_id, 60)
        assert state["state"] == "done", state


def expert_weights_fetched(fakes) -> list[str]:
    return [r.path for r in fakes.hf.requests("/resolve/") if "/transformer" in r.path and "config.json" not in r.path]


def test_a_plan_queues_the_base_without_its_experts_and_a_config_rebuilds_the_variant(start, published_twins,
                                                                                     tmp_path):
    from diffbox import portable
    from diffbox.engine.pod_plan import recommend
    from diffbox.hub import pod_setup

    plan = recommend(24, 64, 150, workflows=("i2v",))
    assert [v.name for v in pod_setup.variants(plan)] == ["Wan2.2-I2V-A14B · GGUF Q8_0"]
    pod_a = start("pod-a")
    done = pod_setup.queue(plan, pod_a.downloads, pod_a.library)
    assert done["failed"] == [] and done["variants"] == ["Wan2.2-I2V-A14B · GGUF Q8_0"]
    assert [m.name for m in pod_a.models("i2v")] == []  # recorded, not offered until its files land
    wait_all(pod_a, done["queued"])
    assert expert_weights_fetched(published_twins) == []  # the fp32 experts never left the Hub
    base = pod_a.library.get("diffusers/Wan-AI--Wan2.2-I2V-A14B-Diffusers")
    assert base.missing_weights == ("transformer", "transformer_2")
    assert [m.name for m in pod_a.models("i2v")] == ["Wan2.2-I2V-A14B · GGUF Q8_0"]
    image = tmp_path / "start.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(image)
    outcome = pod_a.submit_i2v({**SMALL, "model": "Wan2.2-I2V-A14B · GGUF Q8_0"}, str(image)).wait(300)
    assert outcome.status == DONE, outcome.error
    assert np.stack(read_frames(outcome.result.outputs[0])).shape == (5, 32, 32, 3)

    exported = portable.export_document(pod_a)
    assert exported["variants"] == [{"name": "Wan2.2-I2V-A14B · GGUF Q8_0", "base_model": "wan2.2-i2v",
                                     "base": {"source": "hf", "id": "Wan-AI/Wan2.2-I2V-A14B-Diffusers", "file": ""},
                                     "parts": {"transformer": {"source": "hf", "id": "QuantStack/Wan2.2-I2V-A14B-GGUF",
                                                               "file": GGUF_HIGH},
                                               "transformer_2": {"source": "hf", "id": "QuantStack/Wan2.2-I2V-A14B-GGUF",
                                                                 "file": GGUF_LOW}}}]
    models = {m["id"]: m for m in exported["models"]}
    base_entry, parts_entry = models["Wan-AI/Wan2.2-I2V-A14B-Diffusers"], models["QuantStack/Wan2.2-I2V-A14B-GGUF"]
    assert base_entry["whole_repo"] and base_entry["without"] == ["transformer", "transformer_2"]
    assert base_entry["revision"] == published_twins.hf.repos["Wan-AI/Wan2.2-I2V-A14B-Diffusers"]["sha"]
    assert [f["name"] for f in parts_entry["files"]] == [GGUF_HIGH, GGUF_LOW]
    assert all(len(f["sha256"]) == 64 for f in parts_entry["files"])
    assert parts_entry["revision"] == published_twins.hf.repos["QuantStack/Wan2.2-I2V-A14B-GGUF"]["sha"]
    pod_a.hub.close()

    pod_b = start("pod-b")
    report = portable.import_bytes(pod_b, json.dumps(exported))
    assert report["variants"]["added"] == ["Wan2.2-I2V-A14B · GGUF Q8_0"] and not report["errors"]
    wait_all(pod_b, report["download_ids"])
    assert expert_weights_fetched(published_twins) == []
    assert [m.name for m in pod_b.models("i2v")] == ["Wan2.2-I2V-A14B · GGUF Q8_0"]
    again = portable.plan_import(pod_b, portable.read_document(pod_b, json.dumps(exported)))
    assert again["changes"] == 0, again


def test_a_config_naming_a_bad_variant_is_refused_field_by_field():
    from diffbox.config import ConfigError, validate
    from diffbox.services import WORKFLOW_SPECS

    good = {"name": "Wan · Q8", "base_model": "wan2.2-i2v", "base": {"source": "hf", "id": "a/base"},
            "parts": {"transformer": {"source": "hf", "id": "a/gguf", "file": "High/x.gguf"}}}
    assert validate({"version": 1, "variants": [good]}, WORKFLOW_SPECS).variants[0]["parts"]["transformer"]["file"] \
        == "High/x.gguf"
    for bad, field in ((dict(good, name="a/b"), "variants[0].name"),
                       (dict(good, parts={"unet": good["parts"]["transformer"]}), "variants[0].parts"),
                       (dict(good, parts={"transformer": {"source": "hf", "id": "a/gguf", "file": "../x.gguf"}}),
                        "variants[0].parts.transformer.file"),
                       (dict(good, base={"source": "hf", "id": "a/base", "file": "x.gguf"}), "variants[0].base.file")):
        with pytest.raises(ConfigError) as refused:
            validate({"version": 1, "variants": [bad]}, WORKFLOW_SPECS)
        assert field in refused.value.errors, refused.value.errors
    with pytest.raises(ConfigError) as refused:
        validate({"version": 1, "models": [{"source": "hf", "id": "a/b", "without": ["transformer"]}]}, WORKFLOW_SPECS)
    assert "models[0].without" in refused.value.errors


def test_presets_and_defaults_name_a_variant(variant_services):
    from diffbox.presets import check

    preset, _ = check({"workflow": "i2v", "name": "Quantised", "params": {"model": "Wan2.2-I2V-A14B · GGUF Q8_0"}},
                      variant_services.specs)
    assert preset["params"]["model"] == "Wan2.2-I2V-A14B · GGUF Q8_0"
    chosen = variant_services.resolve_model("i2v", preset["params"]["model"])
    assert chosen.name == "Wan2.2-I2V-A14B · GGUF Q8_0" and chosen.parts_found["transformer"].name.endswith(".gguf")


def test_a_variant_made_by_hand_in_the_library_panel_is_offered_and_refusals_name_the_field(variant_services, twin):
    """Models → Library → Variants: files copied in by hand become a variant the forms offer."""
    from diffbox.ui.variants_panel import save_variant, single_files, variant_rows

    high, low = KINDS["Wan2.2-I2V-A14B · fp16"]
    files = single_files(variant_services)
    high_name, low_name = (f"checkpoints/{which}-{twin(name).name}" for which, name in (("high", high), ("low", low)))
    assert {high_name, low_name} <= set(files)
    base = "diffusers/Wan-AI--Wan2.2-I2V-A14B-Diffusers"
    for fields, named in (({"transformer": high_name}, "parts"),  # Wan needs both experts
                          ({"transformer": "checkpoints/nope.gguf", "transformer_2": low_name}, "transformer"),
                          ({}, "parts")):
        with pytest.raises(ValueError, match=named):
            save_variant(variant_services, "mine", base, fields)
    with pytest.raises(ValueError, match="base"):
        save_variant(variant_services, "mine", "checkpoints/nope", {"transformer": high_name})
    with pytest.raises(ValueError, match="variant name"):
        save_variant(variant_services, "a/b", base, {"transformer": high_name, "transformer_2": low_name})
    assert "mine" not in [m.name for m in variant_services.models("i2v")]

    try:
        assert save_variant(variant_services, " mine ", base,
                            {"transformer": high_name, "transformer_2": low_name}) == "mine"
        mine = next(m for m in variant_services.models("i2v") if m.name == "mine")
        assert {c: m.name for c, m in mine.parts_found.items()} == {"transformer": high_name, "transformer_2": low_name}
        assert ["mine", "wan2.2-i2v", base, f"transformer: {high_name}; transformer_2: {low_name}", "yes"] \
            in variant_rows(variant_services)
    finally:
        variant_services.library.variant_records.remove("mine")
