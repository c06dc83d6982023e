"""Hugging Face search and downloads through huggingface_hub against a local fake Hub (HF_ENDPOINT)."""

import hashlib
import json
import time

import pytest
from huggingface_hub import constants

from diffbox.hub import HubError
from fake_hubs import Behaviour, fakes, hub, hub_settings, start_hub, wan_lora  # noqa: F401 (fixtures)

WAN_TAG = "base_model:adapter:Wan-AI/Wan2.2-I2V-A14B"
INDEX = json.dumps({"_class_name": "WanImageToVideoPipeline", "boundary_ratio": 0.9,
                    "transformer": ["diffusers", "WanTransformer3DModel"],
                    "transformer_2": ["diffusers", "WanTransformer3DModel"]}).encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_search_maps_fields_and_uses_model_tree_tags(hub, fakes):
    fakes.hf.add_repo("studio/wan-orbit-lora", {"orbit.safetensors": wan_lora(0.01)}, tags=["lora", WAN_TAG],
                      downloads=900, likes=42)
    fakes.hf.add_repo("studio/wan-nsfw-lora", {"x.safetensors": wan_lora(0.01, 1)},
                      tags=["lora", WAN_TAG, "not-for-all-audiences"], downloads=5)
    fakes.hf.add_repo("Wan-AI/Wan2.2-I2V-A14B-Diffusers", {"model_index.json": INDEX}, tags=["diffusers"],
                      library_name="diffusers", pipeline_tag="image-to-video")
    [result] = hub.search("", "hf", "lora", "wan2.2-i2v").results
    request = fakes.hf.requests("/api/models")[-1]
    assert request.query["filter"] == [WAN_TAG] and request.query["sort"] == ["downloads"]
    assert {"downloads", "likes", "tags", "usedStorage"} <= set(request.query["expand"])
    assert result["id"] == "studio/wan-orbit-lora" and result["name"] == "wan-orbit-lora"
    assert (result["author"], result["downloads"], result["rating"]) == ("studio", 900, 42)
    assert result["kind"] == "lora" and result["base_model"] == "wan2.2-i2v" and result["size"] == len(wan_lora(0.01))
    assert result["url"] == f"{fakes.hf.url}/studio/wan-orbit-lora" and result["nsfw"] is False
    assert len(hub.search("", "hf", "lora", "wan2.2-i2v", nsfw=True).results) == 2
    [pipeline] = hub.search("wan2.2", "hf", "diffusers", sort="newest").results
    assert pipeline["kind"] == "diffusers" and pipeline["base_model"] == "wan2.2-i2v"
    assert fakes.hf.requests("/api/models")[-1].query["sort"] == ["createdAt"]


def test_a_single_file_downloads_verified_into_loras(hub, fakes, hub_settings):
    lora = wan_lora(1)
    repo = fakes.hf.add_repo("studio/wan-orbit-lora", {"orbit.safetensors": lora, "README.md": b"# hi"},
                             tags=["lora", WAN_TAG])
    state = hub.downloads.wait(hub.downloads.request("hf", "studio/wan-orbit-lora", "orbit.safetensors"), 30)
    assert state["state"] == "done" and state["name"] == "loras/orbit.safetensors", state
    model = hub.library.get("loras/orbit.safetensors")
    assert (model.source, model.model_id, model.revision) == ("hf", "studio/wan-orbit-lora", repo["sha"])
    assert model.sha256 == sha(lora) and model.verified and model.kind == "lora"
    assert not (hub_settings.models_dir / "loras" / ".cache").exists()
    # A repo with one weights file needs no file name.
    again = hub.downloads.get(hub.downloads.request("hf", "studio/wan-orbit-lora"))
    assert again["state"] == "done" and again["name"] == "loras/orbit.safetensors"


def test_a_diffusers_repo_becomes_a_pipeline_folder_in_the_library(hub, fakes, hub_settings):
    weights = wan_lora(0.5)  # any valid safetensors will do for the library
    config = json.dumps({"_class_name": "WanTransformer3DModel", "in_channels": 36}).encode()
    fakes.hf.add_repo("Wan-AI/Wan2.2-I2V-A14B-Diffusers", {
        "model_index.json": INDEX, "transformer/config.json": config,
        "transformer/diffusion_pytorch_model.safetensors": weights, "README.md": b"# card", "assets/x.png": b"png",
    }, tags=["diffusers"], library_name="diffusers")
    state = hub.downloads.wait(hub.downloads.request("hf", "Wan-AI/Wan2.2-I2V-A14B-Diffusers"), 30)
    assert state["state"] == "done" and state["files_total"] == 3, state
    folder = hub_settings.models_dir / "diffusers" / "Wan-AI--Wan2.2-I2V-A14B-Diffusers"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "model_index.json", "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors"]
    model = hub.library.get(state["name"])
    assert (model.kind, model.base_model, model.pipeline_class) == ("diffusers", "wan2.2-i2v",
                                                                     "WanImageToVideoPipeline")
    assert model.verified and all(f.sha256 for f in model.files)  # small files checked by git blob id


def test_a_dropped_connection_resumes_within_one_chunk(hub, fakes):
    size = constants.DOWNLOAD_CHUNK_SIZE + 2 * 1024 * 1024  # huggingface_hub writes in 10 MiB chunks
    lora = wan_lora(size / 1024 / 1024)
    fakes.hf.add_repo("studio/big", {"big.safetensors": lora}, tags=["lora"])
    fakes.hf.behaviour["big.safetensors"] = Behaviour(drops=[len(lora) - 1_000_000])
    state = hub.downloads.wait(hub.downloads.request("hf", "studio/big", "big.safetensors"), 60)
    assert state["state"] == "done", state
    gets = [r for r in fakes.hf.requests("/resolve/") if r.method == "GET"]
    assert len(gets) == 2 and gets[1].headers["range"] == f"bytes={constants.DOWNLOAD_CHUNK_SIZE}-"
    assert fakes.hf.body_bytes("big.safetensors") - len(lora) < constants.DOWNLOAD_CHUNK_SIZE


def test_server_errors_are_retried_and_corrupt_files_discarded(hub, fakes, hub_settings):
    fakes.hf.add_repo("studio/flaky", {"a.safetensors": wan_lora(0.1)}, tags=["lora"])
    fakes.hf.behaviour["a.safetensors"] = Behaviour(statuses=[503])
    assert hub.downloads.wait(hub.downloads.request("hf", "studio/flaky", "a.safetensors"), 30)["state"] == "done"
    fakes.hf.add_repo("studio/bad", {"b.safetensors": wan_lora(0.1, 1)}, tags=["lora"])
    fakes.hf.behaviour["b.safetensors"] = Behaviour(corrupt=True)
    state = hub.downloads.wait(hub.downloads.request("hf", "studio/bad", "b.safetensors"), 30)
    assert state["state"] == "failed" and "do not match the source's SHA256" in state["error"]
    assert not (hub_settings.models_dir / "loras" / "b.safetensors").exists()


def test_unusable_requests_are_refused_with_a_sentence(hub, fakes):
    fakes.hf.add_repo("old/sd", {"model.ckpt": b"\x80" * 2000, "x.safetensors": wan_lora(0.01)})
    fakes.hf.add_repo("old/pickled-pipeline", {"model_index.json": INDEX, "unet/config.json": b"{}",
                                               "unet/diffusion_pytorch_model.bin": b"\x80" * 2000})
    fakes.hf.add_repo("evil/repo", {"../../evil.safetensors": wan_lora(0.01)})
    cases = [
        (("old/sd", "model.ckpt"), r"refused model\.ckpt: \.ckpt files are pickles"),
        (("old/pickled-pipeline", ""), r"only pickle weights .* in unet"),
        (("old/sd", "missing.safetensors"), r"old/sd has no file 'missing\.safetensors'"),
        (("nobody/nothing", ""), r"Hugging Face has no model nobody/nothing"),
        (("not-a-repo-id", ""), r"not a Hugging Face model id"),
        (("evil/repo", "../../evil.safetensors"), r"could leave the model folder"),
    ]
    for (model_id, file), message in cases:
        with pytest.raises(HubError, match=message):
            hub.downloads.request("hf", model_id, file)
    assert hub.downloads.list() == []


def test_retry_after_a_discarded_repo_download_fetches_everything_again(hub, fakes, hub_settings):
    files = {"model_index.json": INDEX, "transformer/config.json": b'{"_class_name": "WanTransformer3DModel"}',
             "transformer/diffusion_pytorch_model.safetensors": wan_lora(0.2)}
    fakes.hf.add_repo("Wan-AI/Wan2.2-I2V-A14B-Diffusers", files, tags=["diffusers"])
    broken = Behaviour(corrupt=True)
    fakes.hf.behaviour["transformer/diffusion_pytorch_model.safetensors"] = broken
    failed = hub.downloads.wait(hub.downloads.request("hf", "Wan-AI/Wan2.2-I2V-A14B-Diffusers"), 30)
    assert failed["state"] == "failed" and "discarded" in failed["error"]
    broken.corrupt = False
    state = hub.downloads.wait(hub.downloads.retry(failed["id"])["id"], 30)
    assert state["state"] == "done" and state["files_done"] == 3, state
    assert len(hub.library.get(state["name"]).files) == 3


def test_an_unreachable_hub_makes_a_search_give_up_at_its_deadline_not_after_the_retries():
    """list_models would retry five times with backoff (~23 s with nothing listening); a search asks once."""
    import socket
    import threading

    from diffbox.hub import TransientError
    from diffbox.hub.huggingface import SEARCH_DEADLINE_S, HuggingFace

    assert SEARCH_DEADLINE_S <= 10
    offline = HuggingFace("http://127.0.0.1:9", lambda: None, search_deadline_s=0.5)  # nothing listens there
    started = time.monotonic()
    with pytest.raises(TransientError, match="cannot reach Hugging Face"):
        offline.search("orbit", "lora", "any", "downloads", False)
    assert time.monotonic() - started < 2
    silent = socket.socket()  # accepts the connection and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    held = []
    threading.Thread(target=lambda: held.append(silent.accept()), daemon=True).start()
    mute = HuggingFace(f"http://127.0.0.1:{silent.getsockname()[1]}", lambda: None, search_deadline_s=0.5)
    started = time.monotonic()
    with pytest.raises(TransientError, match="did not answer within 0.5 s"):
        mute.search("orbit", "lora", "any", "downloads", False)
    assert time.monotonic() - started < 2
    silent.close()