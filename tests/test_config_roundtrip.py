"""Export → fresh home → import brings back defaults, presets, pins and the models (from local fake hubs)."""

import json
import os
from pathlib import Path

import pytest

from fake_hubs import fakes, qwen_lora, wan_lora  # noqa: F401 (fixture)
from diffbox import portable
from diffbox.config import ConfigDoc, ConfigError
from diffbox.presets import check

HF_TOKEN = "hf_" + "Qq7" * 12
CIVITAI_TOKEN = "civ" + "Zt4" * 10


@pytest.fixture
def start(fakes, tmp_path, monkeypatch):
    """Starts Services on a home (again = an app restart); the hub talks to the fakes."""
    from diffbox.services import Services
    from diffbox.settings import Settings, prepare_home

    monkeypatch.setenv("HF_ENDPOINT", fakes.hf.url)
    monkeypatch.setenv("DIFFBOX_CIVITAI_URL", fakes.civitai.url)
    started = []

    def start_services(name: str):
        settings = Settings(home=tmp_path / name)
        prepare_home(settings, env={})
        services = Services.start(settings)
        started.append(services)
        return services

    yield start_services
    for services in started:
        stop(services)


def stop(services):
    if services.hub is not None:
        services.hub.close()
    services.presets.close()
    services.history.close()
    services.hub = None


def snapshot(home: Path) -> dict:
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted((home / "db").glob("*.json"))
            if p.name != "search.json"} | ({"tokens": (home / "tokens.json").read_bytes()}
                                            if (home / "tokens.json").exists() else {})


def without_time(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "exported_at"}


def test_round_trip_to_a_fresh_home_downloads_and_verifies_the_pinned_models(start, fakes, tmp_path):
    lora = wan_lora(0.05)
    fakes.hf.add_repo("studio/wan-orbit-lora", {"orbit.safetensors": lora}, tags=["lora"])
    fakes.civitai.add_model(1, 11, "Qwen glow", {"glow.safetensors": qwen_lora(3)}, base_model="Qwen")
    pod_a = start("pod-a")
    pod_a.tokens.set("hf", HF_TOKEN)
    for source, model_id, file in (("hf", "studio/wan-orbit-lora", "orbit.safetensors"), ("civitai", "1", "")):
        assert pod_a.downloads.wait(pod_a.downloads.request(source, model_id, file), 30)["state"] == "done"
        pod_a.hub.pin(source, model_id, True)
    pod_a.presets.save(check({"workflow": "i2v", "name": "Slow push-in",
                              "params": {"prompt": "the camera pushes in", "num_inference_steps": 30, "seed": 7}},
                             pod_a.specs)[0])
    portable.apply(pod_a, ConfigDoc(defaults={"i2v": {"num_frames": 49, "guidance_scale": 4.0}},
                                    ui={"start_tab": "models"}))
    exported = json.loads(portable.export_file(pod_a, folder=tmp_path).read_text())
    assert "tokens" not in exported and HF_TOKEN not in json.dumps(exported)
    assert exported["defaults"]["i2v"] == {"num_frames": 49, "guidance_scale": 4.0}
    hf_pin = next(m for m in exported["models"] if m["source"] == "hf")
    assert hf_pin["revision"] == fakes.hf.repos["studio/wan-orbit-lora"]["sha"]
    assert hf_pin["files"][0]["sha256"] == __import__("hashlib").sha256(lora).hexdigest()
    stop(pod_a)

    pod_b = start("pod-b")
    preview = portable.import_bytes(pod_b, json.dumps(exported), dry_run=True)
    assert [m["model"].split("@")[0] for m in preview["models"]["download"]] == ["civitai:1", "hf:studio/wan-orbit-lora"]
    assert preview["download_bytes"] > 0 and preview["defaults"]["i2v"]["num_frames"] == {"from": 81, "to": 49}
    assert snapshot(pod_b.settings.home).get("db/presets.json", b"") in (b"", b'{"presets":{}}')  # a preview applies nothing

    report = portable.import_bytes(pod_b, json.dumps(exported))
    assert report["applied"] and not report["errors"] and len(report["download_ids"]) == 2
    for download_id in report["download_ids"]:
        assert pod_b.downloads.wait(download_id, 30)["state"] == "done"
    library = {(m.source, m.model_id): m for m in pod_b.library.models()}
    for pin in exported["models"]:
        model = library[(pin["source"], pin["id"])]
        assert model.verified and model.revision == pin["revision"] and model.sha256 == pin["files"][0]["sha256"]
    assert pod_b.specs["i2v"]["num_frames"].default == 49 and pod_b.specs["i2v"]["guidance_scale"].default == 4.0
    assert without_time(portable.export_document(pod_b)) == without_time(exported)

    before = snapshot(pod_b.settings.home)
    again = portable.import_bytes(pod_b, json.dumps(exported))
    assert again["changes"] == 0 and again["download_ids"] == [] and len(again["models"]["present"]) == 2
    assert snapshot(pod_b.settings.home) == before  # importing twice changes nothing
    stop(pod_b)

    restarted = start("pod-b")  # defaults and presets survive a restart
    assert restarted.specs["i2v"]["num_frames"].default == 49
    assert restarted.presets.get("i2v", "slow push-in")["params"]["seed"] == 7


def test_tokens_travel_only_when_asked_and_never_reach_the_log(start, tmp_path):
    pod = start("pod")
    pod.tokens.set("hf", HF_TOKEN)
    pod.tokens.set("civitai", CIVITAI_TOKEN)
    plain = portable.export_file(pod, include_tokens=False, folder=tmp_path)
    with_tokens = portable.export_file(pod, include_tokens=True, folder=tmp_path)
    assert HF_TOKEN not in plain.read_text() and CIVITAI_TOKEN not in plain.read_text()
    assert json.loads(with_tokens.read_text())["tokens"] == {"hf": HF_TOKEN, "civitai": CIVITAI_TOKEN}
    assert os.stat(with_tokens).st_mode & 0o077 == 0  # not readable by other users of the pod

    fresh = start("fresh")
    report = portable.import_bytes(fresh, with_tokens.read_text())
    assert report["tokens"] == {"hf": "set", "civitai": "set"} and fresh.tokens.get("civitai") == CIVITAI_TOKEN
    assert HF_TOKEN not in portable.summary(report) + json.dumps(report)
    log = "".join(p.read_text() for p in (fresh.settings.home / "logs").glob("*") if p.is_file())
    assert HF_TOKEN not in log and CIVITAI_TOKEN not in log


def test_refused_documents_apply_nothing_and_name_the_field(start):
    pod = start("pod")
    portable.apply(pod, ConfigDoc(defaults={"i2v": {"num_inference_steps": 20}}))
    before = snapshot(pod.settings.home)
    cases = {
        '{"version": 7, "defaults": {"i2v": {"num_inference_steps": 9}}}': "version: 7 is from a newer diffbox",
        '{"defaults": {}}': "version: is missing",
        '{"version": 1, "defaults": {"i2v": {"num_inference_steps": 9}}, "presets": [{"workflow": "i2v", '
        '"name": "../../etc/passwd"}]}': "presets[0].name",
        '{"version": 1, "models": [{"source": "hf", "id": "a/b", "files": [{"name": "../x.safetensors"}]}]}':
            "models[0].files[0].name",
        '{"version": 1, "defaults": {"i2v": {"num_frames": 8}}}': "defaults.i2v.num_frames: must be 4n+1",
        '{"version": 1, "colour": "red"}': "colour: is not a config field",
        '[1, 2]': "file: must hold a JSON object",
        '{"version": 1, "tokens": {"hf": "short"}}': "tokens.hf",
    }
    for text, expected in cases.items():
        with pytest.raises(ConfigError) as caught:
            portable.import_bytes(pod, text)
        assert expected in str(caught.value) and "nothing was applied" in str(caught.value)
    assert snapshot(pod.settings.home) == before and pod.specs["i2v"]["num_inference_steps"].default == 20


def test_an_older_version_migrates(start):
    pod = start("pod")
    old = {"version": 0, "presets": {"i2v": {"Old favourite": {"num_inference_steps": 12}}},
           "models": [{"source": "civitai", "model_id": "5", "revision": "55", "files": []}]}
    preview = portable.import_bytes(pod, json.dumps(old), dry_run=True)
    assert preview["migrated_from"] == 0 and preview["presets"]["added"] == ["i2v/Old favourite"]
    assert preview["models"]["download"][0]["model"] == "civitai:5@55"


def test_while_the_hub_is_unreachable_nothing_is_pinned_unresolved_and_a_reimport_changes_nothing(
        start, fakes, monkeypatch, tmp_path):
    """Over /config_import, as "Download its models" uses the same path: a model whose download cannot be
    queued is reported as such, is not counted as a change, and is not pinned without a revision and hashes
    (its export would read revision "" and sha256 ""). A fully pinned entry is kept as it came."""
    from gradio_client import Client, handle_file

    from diffbox.ui.app import build_app

    lora = wan_lora(0.05)
    fakes.hf.add_repo("studio/wan-orbit-lora", {"orbit.safetensors": lora}, tags=["lora"])
    sha = fakes.hf.repos["studio/wan-orbit-lora"]["sha"]
    loose = {"source": "hf", "id": "studio/wan-orbit-lora", "revision": "", "files": [{"name": "orbit.safetensors"}]}
    fixed = {"source": "civitai", "id": "5", "revision": "55",
             "files": [{"name": "glow.safetensors", "size": 10, "sha256": "ab" * 32}]}
    config = tmp_path / "pins.json"
    config.write_text(json.dumps({"version": 1, "models": [loose, fixed]}))

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("DIFFBOX_CIVITAI_URL", "http://127.0.0.1:9")
    offline = start("offline")
    app = build_app(offline)
    _, url, _ = app.launch(prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        report = client.predict(handle_file(str(config)), api_name="/config_import")
        assert report["download_ids"] == [] and client.predict(api_name="/downloads") == []
        assert sorted(report["models"]["not_queued"]) == ["civitai:5@55", "hf:studio/wan-orbit-lora"]
        assert report["models"]["not_pinned"] == ["hf:studio/wan-orbit-lora"] and report["models"]["download"] == []
        assert report["changes"] == 1  # the fixed pin
        assert all("could not be queued" in error for error in report["errors"]) and len(report["errors"]) == 2
        text = portable.summary(report)
        assert "not queued" in text and "not pinned" in text and "**download**" not in text
        exported = json.loads(Path(client.predict(False, api_name="/config_export")).read_text())
        assert [(m["id"], m["revision"]) for m in exported["models"]] == [("5", "55")]
        assert exported["models"][0]["files"][0]["sha256"] == "ab" * 32

        again = client.predict(handle_file(str(config)), api_name="/config_import")
        assert again["changes"] == 0 and portable.summary(again).startswith("Applied: no changes.")
    finally:
        app.close()
    stop(offline)

    monkeypatch.setenv("HF_ENDPOINT", fakes.hf.url)  # the hub answers again: the download resolves the pin
    online = start("offline")
    report = portable.import_bytes(online, config.read_text())
    assert len(report["download_ids"]) == 1 and report["models"]["pin"] == ["hf:studio/wan-orbit-lora"]
    pin = next(m for m in portable.export_document(online)["models"] if m["source"] == "hf")
    assert pin["revision"] == sha and pin["files"] == [
        {"name": "orbit.safetensors", "size": len(lora), "sha256": __import__("hashlib").sha256(lora).hexdigest()}]
