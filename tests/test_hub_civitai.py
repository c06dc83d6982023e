"""Civitai search and downloads against a local fake Civitai and a Range-capable file host."""

import errno
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffbox.hub import HubError
from diffbox.hub.transfer import CHUNK
from fake_hubs import Behaviour, fakes, hub, hub_settings, start_hub, wan_lora  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "civitai-test-token-123"
BIG = wan_lora(4)  # ~4 MiB: several chunks


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_search_maps_fields_filters_and_hides_nsfw(hub, fakes):
    fakes.civitai.add_model(1, 11, "Wan camera orbit", {"orbit.safetensors": wan_lora(0.1)}, downloads=1234, likes=56)
    fakes.civitai.add_model(2, 22, "Wan spicy", {"spicy.safetensors": wan_lora(0.1, 1)}, nsfw=True)
    fakes.civitai.add_model(3, 33, "Qwen realism", {"real.safetensors": wan_lora(0.1, 2)}, base_model="Qwen",
                            type="Checkpoint")
    page = hub.search("wan", "civitai", "lora", "wan2.2-i2v")
    [result] = page.results
    assert result["name"] == "Wan camera orbit" and result["id"] == "1" and result["version_id"] == "11"
    assert (result["author"], result["downloads"], result["rating"]) == ("maker", 1234, 56)
    assert result["base_model"] == "wan2.2-i2v" and result["base_model_label"] == "Wan Video 2.2 I2V-A14B"
    assert result["kind"] == "lora" and abs(result["size"] - len(wan_lora(0.1))) < 2
    assert result["thumbnail"].endswith("/img/11.jpg")  # the nsfwLevel 8 image is skipped
    assert result["files"][0]["sha256"] == sha(wan_lora(0.1)) and result["cached"] is False
    request = fakes.civitai.requests("/api/v1/models")[-1]
    assert request.query["types"] == ["LORA", "LoCon", "DoRA"]
    assert request.query["baseModels"] == ["Wan Video 2.2 I2V-A14B"] and request.query["nsfw"] == ["false"]
    assert [r["name"] for r in hub.search("", "civitai", "checkpoint", "qwen-image").results] == ["Qwen realism"]
    assert {r["name"] for r in hub.search("wan", "civitai", nsfw=True).results} == {"Wan camera orbit", "Wan spicy"}


def test_search_pages_with_the_cursor(hub, fakes):
    for n in range(3):
        fakes.civitai.add_model(10 + n, 100 + n, f"Wan style {n}", {f"s{n}.safetensors": wan_lora(0.01, n)})
    first = hub.search("style", "civitai", limit=2)
    assert [r["name"] for r in first.results] == ["Wan style 0", "Wan style 1"] and first.cursors["civitai"] == "2"
    more = hub.search("style", "civitai", cursors=first.cursors, limit=2)
    assert [r["name"] for r in more.results] == ["Wan style 2"] and not more.cursors["civitai"]
    last = fakes.civitai.requests("/api/v1/models")[-1]
    assert last.query["cursor"] == ["2"] and "page" not in last.query  # query + page is a 400 on Civitai


def test_search_falls_back_to_what_was_seen_when_civitai_is_unreachable(hub, fakes):
    fakes.civitai.add_model(1, 11, "Wan camera orbit", {"orbit.safetensors": wan_lora(0.1)})
    fakes.civitai.add_model(2, 22, "Wan dolly zoom", {"dolly.safetensors": wan_lora(0.1, 1)})
    assert len(hub.search("wan", "civitai").results) == 2
    fakes.civitai.close()
    again = hub.search("wan", "civitai")
    assert [r["name"] for r in again.results] == ["Wan camera orbit", "Wan dolly zoom"]
    assert all(r["cached"] for r in again.results) and "unreachable" in again.notes[0]
    other = hub.search("dolly", "civitai")  # never searched: filtered from everything seen
    assert [r["name"] for r in other.results] == ["Wan dolly zoom"]
    with pytest.raises(HubError, match="unreachable"):
        hub.search("nothing like this", "civitai")


def test_download_is_verified_and_the_token_never_reaches_the_file_host(hub, fakes, hub_settings):
    fakes.civitai.add_model(1, 11, "Wan camera orbit", {"orbit.safetensors": BIG}, needs_token=True)
    hub.tokens.set("civitai", TOKEN)
    assert stat.S_IMODE((hub_settings.home / "tokens.json").stat().st_mode) == 0o600
    state = hub.downloads.wait(hub.downloads.request("civitai", "1"), 30)
    assert state["state"] == "done" and state["name"] == "loras/orbit.safetensors", state
    assert state["bytes_done"] == state["bytes_total"] == len(BIG)
    stored = hub_settings.models_dir / "loras" / "orbit.safetensors"
    assert sha(stored.read_bytes()) == sha(BIG)
    model = hub.library.get("loras/orbit.safetensors")
    assert (model.source, model.model_id, model.revision, model.sha256) == ("civitai", "1", "11", sha(BIG))
    assert model.kind == "lora" and model.base_model == "wan2.2-i2v" and model.verified
    assert fakes.civitai.requests("/api/download/")[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert fakes.files.log and all("authorization" not in r.headers for r in fakes.files.log)
    assert not any((hub_settings.models_dir / ".downloads").iterdir())  # staging cleaned up


def test_a_dropped_connection_resumes_from_the_partial_bytes(hub, fakes):
    fakes.civitai.add_model(1, 11, "Orbit", {"orbit.safetensors": BIG}, behaviour=Behaviour(drops=[2_500_000]))
    state = hub.downloads.wait(hub.downloads.request("civitai", "1"), 30)
    assert state["state"] == "done", state
    first, second = fakes.files.requests("/files/")
    assert first.body_bytes == 2_500_000 and second.headers["range"].startswith("bytes=")
    resumed_from = int(second.headers["range"][6:-1])
    assert 0 < resumed_from <= 2_500_000
    refetched = first.body_bytes + second.body_bytes - len(BIG)
    assert refetched < CHUNK


def test_an_expired_signed_url_is_resolved_again(hub, fakes):
    fakes.civitai.add_model(1, 11, "Orbit", {"orbit.safetensors": BIG}, behaviour=Behaviour(drops=[1_500_000]))
    fakes.files.expire_after_first_request = True  # the retry on the same signed URL gets 403
    state = hub.downloads.wait(hub.downloads.request("civitai", "1"), 30)
    assert state["state"] == "done", state
    assert len(fakes.civitai.requests("/api/download/")) == 2  # a fresh signed URL was asked for
    assert [r.status for r in fakes.files.requests("/files/")] == [200, 403, 206]
    assert fakes.files.body_bytes("11-0") - len(BIG) < CHUNK


def test_429_and_5xx_are_retried_with_backoff(hub, fakes):
    fakes.civitai.add_model(1, 11, "Orbit", {"orbit.safetensors": BIG}, behaviour=Behaviour(statuses=[429, 503]))
    state = hub.downloads.wait(hub.downloads.request("civitai", "1"), 30)
    assert state["state"] == "done" and [r.status for r in fakes.files.requests("/files/")] == [429, 503, 200]


def test_corrupted_bytes_fail_the_hash_check_and_are_discarded(hub, fakes, hub_settings):
    fakes.civitai.add_model(1, 11, "Orbit", {"orbit.safetensors": BIG}, behaviour=Behaviour(corrupt=True))
    state = hub.downloads.wait(hub.downloads.request("civitai", "1"), 30)
    assert state["state"] == "failed"
    assert "do not match the source's SHA256" in state["error"] and "discarded" in state["error"]
    assert not (hub_settings.models_dir / "loras").exists()
    assert not any((hub_settings.models_dir / ".downloads").iterdir())
    assert all(m.source != "civitai" for m in hub.library.models())


def test_401_says_a_civitai_token_is_needed(hub, fakes):
    fakes.civitai.add_model(1, 11, "Locked", {"locked.safetensors": wan_lora(0.1)}, needs_token=True)
    state = hub.downloads.wait(hub.downloads.request("civitai", "1"), 30)
    assert state["state"] == "failed" and "needs a Civitai token" in state["error"]
    hub.tokens.set("civitai", "a-wrong-token-42")
    retried = hub.downloads.wait(hub.downloads.retry(state["id"])["id"], 30)
    assert retried["state"] == "failed" and "refused your token" in retried["error"]
    hub.tokens.set("civitai", TOKEN)
    assert hub.downloads.wait(hub.downloads.retry(state["id"])["id"], 30)["state"] == "done"


def test_a_traversal_filename_is_stored_inside_models(hub, fakes, hub_settings, tmp_path):
    fakes.civitai.add_model(1, 11, "Sneaky", {"../../x.safetensors": wan_lora(0.1)})
    state = hub.downloads.wait(hub.downloads.request("civitai", "1"), 30)
    assert state["state"] == "done" and state["name"] == "loras/x.safetensors"
    assert (hub_settings.models_dir / "loras" / "x.safetensors").is_file()
    assert not list(tmp_path.rglob("x.safetensors"))[1:]  # exactly one copy, the one inside models/
    # No name from the API: the Content-Disposition of the download is used, sanitised the same way.
    fakes.civitai.add_model(2, 22, "Nameless", {"": wan_lora(0.1, 1)},
                            disposition="attachment; filename*=UTF-8''..%2F..%2Fy%C3%BC.safetensors")
    state = hub.downloads.wait(hub.downloads.request("civitai", "2"), 30)
    assert state["state"] == "done" and state["name"] == "loras/yü.safetensors"


def test_pickles_are_refused_by_name_format_and_content(hub, fakes, hub_settings):
    fakes.civitai.add_model(1, 11, "Old", {"model.ckpt": b"\x80\x04pickle"}, fmt="PickleTensor")
    with pytest.raises(HubError, match=r"refused model\.ckpt: \.ckpt files are pickles"):
        hub.downloads.request("civitai", "1")
    disguised = b"\x80\x04\x95" + b"\x00" * 4000  # a pickle renamed .safetensors, with a matching hash
    fakes.civitai.add_model(2, 22, "Disguised", {"nice.safetensors": disguised})
    state = hub.downloads.wait(hub.downloads.request("civitai", "2"), 30)
    assert state["state"] == "failed" and "pickle" in state["error"]
    assert not (hub_settings.models_dir / "loras").exists()


def stalled_download(hub, fakes):
    """A download whose server stalls after 2 MB, once its first chunk is on disk: (id, the stall)."""
    behaviour = Behaviour(pause_at=2_000_000)
    fakes.civitai.add_model(1, 11, "Orbit", {"orbit.safetensors": BIG}, behaviour=behaviour)
    download_id = hub.downloads.request("civitai", "1")
    deadline = time.monotonic() + 20
    while hub.downloads.get(download_id)["bytes_done"] < CHUNK:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return download_id, behaviour


def test_cancel_deletes_the_partial_file_and_retry_starts_again(hub, fakes, hub_settings):
    download_id, behaviour = stalled_download(hub, fakes)
    assert hub.downloads.cancel(download_id)["id"] == download_id
    behaviour.resume.set()  # the server finishes its stalled response; the worker notices the cancel
    assert hub.downloads.wait(download_id, 30)["state"] == "cancelled"
    assert not (hub_settings.models_dir / ".downloads" / download_id).exists()
    assert hub.downloads.wait(hub.downloads.retry(download_id)["id"], 30)["state"] == "done"


def test_the_same_file_is_not_downloaded_twice(hub, fakes):
    fakes.civitai.add_model(1, 11, "Orbit", {"orbit.safetensors": wan_lora(0.1)})
    first = hub.downloads.wait(hub.downloads.request("civitai", "1"), 30)
    second = hub.downloads.get(hub.downloads.request("civitai", "1@11"))
    assert second["state"] == "done" and second["name"] == first["name"]
    assert len(fakes.files.requests("/files/")) == 1


CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from diffbox.hub.hub import ModelHub
from diffbox.settings import Settings
hub = ModelHub.start(Settings(home=__import__("pathlib").Path({home!r})),
                     env={{"HF_ENDPOINT": {hf!r}, "DIFFBOX_CIVITAI_URL": {civitai!r}}})
print(hub.downloads.request("civitai", "1"), flush=True)
time.sleep(120)
"""


def test_an_app_killed_mid_download_resumes_after_restart(start_hub, fakes, hub_settings):
    fakes.civitai.add_model(1, 11, "Orbit", {"orbit.safetensors": BIG}, behaviour=Behaviour(pause_at=2_000_000))
    script = CHILD.format(tests=str(ROOT / "tests"), home=str(hub_settings.home), hf=fakes.hf.url,
                          civitai=fakes.civitai.url)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        download_id = child.stdout.readline().strip()
        part = hub_settings.models_dir / ".downloads" / download_id / "orbit.safetensors.part"
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size >= CHUNK):
            assert child.poll() is None and time.monotonic() < deadline, "the child never got going"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)  # no shutdown code runs: exactly like a pod being torn down
        child.wait(10)
    kept = part.stat().st_size
    hub = start_hub(hub_settings)  # the app starting again
    state = hub.downloads.wait(download_id, 30)
    assert state["state"] == "done" and sha(hub.library.get(state["name"]).path.read_bytes()) == sha(BIG)
    first, second = fakes.files.requests("/files/")
    assert second.headers["range"] == f"bytes={kept}-"
    assert first.body_bytes + second.body_bytes - len(BIG) < CHUNK  # bytes fetched twice


@pytest.fixture
def full_disk(monkeypatch):
    """A switch that makes every write to the .part file and to the databases fail with ENOSPC."""
    from diffbox import store
    from diffbox.hub import downloads, transfer

    full = {"on": False}

    def refuse(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    real_append, real_write = transfer.ResumableFile.append, store.atomic_write_bytes

    def append(self, chunks, check):
        if full["on"]:
            refuse(self.path)
        return real_append(self, chunks, check)

    def write(path, data, mode=0o666):
        if full["on"]:
            refuse(path)
        return real_write(path, data, mode)

    monkeypatch.setattr(transfer.ResumableFile, "append", append)
    monkeypatch.setattr(store, "atomic_write_bytes", write)
    monkeypatch.setattr(downloads, "RETRY_S", 0.05)
    return full


def saved_state(hub_settings, download_id) -> str:
    records = json.loads((hub_settings.db_dir / "downloads.json").read_text())["downloads"].values()
    return next(r["state"] for r in records if r["id"] == download_id)


def test_a_disk_that_fills_mid_download_fails_it_with_a_sentence_and_retry_resumes(hub, fakes, hub_settings,
                                                                                    full_disk):
    download_id, behaviour = stalled_download(hub, fakes)
    full_disk["on"] = True
    behaviour.resume.set()
    state = hub.downloads.wait(download_id, 30)
    assert state["state"] == "failed" and state["error"] == "could not write the file: the disk is full"
    assert hub.downloads.list()[0]["state"] == "failed"
    assert saved_state(hub_settings, download_id) == "downloading"  # the disk refused it: kept in memory
    full_disk["on"] = False
    deadline = time.monotonic() + 10
    while saved_state(hub_settings, download_id) != "failed":  # written once there is room again
        assert time.monotonic() < deadline, "the failed state never reached the disk"
        time.sleep(0.05)
    state = hub.downloads.wait(hub.downloads.retry(download_id)["id"], 30)
    assert state["state"] == "done" and sha(hub.library.get(state["name"]).path.read_bytes()) == sha(BIG)


def test_cancel_and_retry_act_on_a_download_whose_worker_is_gone(hub, fakes, hub_settings):
    fakes.civitai.add_model(1, 11, "Orbit", {"orbit.safetensors": wan_lora(0.1)},
                            behaviour=Behaviour(statuses=[404] * 20))
    download_id = hub.downloads.request("civitai", "1")
    assert hub.downloads.wait(download_id, 30)["state"] == "failed"
    from tinydb import Query
    hub.downloads._table.update({"state": "downloading"}, Query().id == download_id)  # as a crashed worker left it
    assert hub.downloads.cancel(download_id)["state"] == "cancelled"
    hub.downloads._table.update({"state": "verifying"}, Query().id == download_id)
    fakes.files.behaviour["11-0"].statuses.clear()
    assert hub.downloads.wait(hub.downloads.retry(download_id)["id"], 30)["state"] == "done"


FILE_SIZE_LIMITED_CHILD = """
import json, resource, signal, sys
sys.path.insert(0, {tests!r})
from diffbox.hub.hub import ModelHub
from diffbox.settings import Settings
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG instead of killing us
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))  # no file may grow past 1 MiB
hub = ModelHub.start(Settings(home=__import__("pathlib").Path({home!r})),
                     env={{"HF_ENDPOINT": {hf!r}, "DIFFBOX_CIVITAI_URL": {civitai!r}}})
download_id = hub.downloads.request("civitai", "1")
print(json.dumps(hub.downloads.wait(download_id, 60)), flush=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
print(json.dumps(hub.downloads.wait(hub.downloads.retry(download_id)["id"], 60)), flush=True)
hub.close()
"""


def test_a_real_file_size_limit_fails_the_download_and_retry_finishes_it_byte_exact(fakes, hub_settings):
    fakes.civitai.add_model(1, 11, "Orbit", {"orbit.safetensors": BIG})
    script = FILE_SIZE_LIMITED_CHILD.format(tests=str(ROOT / "tests"), home=str(hub_settings.home),
                                            hf=fakes.hf.url, civitai=fakes.civitai.url)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    failed, done = [json.loads(line) for line in result.stdout.splitlines()]
    assert failed["state"] == "failed", result.stderr
    assert failed["error"] == "could not write the file: the file grew past this system's file-size limit"
    assert done["state"] == "done"
    assert sha((hub_settings.models_dir / done["name"]).read_bytes()) == sha(BIG)
    first, second = fakes.files.requests("/files/")
    assert second.headers["range"] == f"bytes={1 << 20}-"  # resumed from the partial file, not started over


def test_the_disk_space_check_gives_small_sizes_in_a_unit_that_shows_them(hub, fakes):
    lora = wan_lora(0.1)
    fakes.civitai.add_model(1, 11, "Orbit", {"orbit.safetensors": lora})
    hub.downloads._free_space = lambda path: 20 * 1024
    hub.downloads.reserve = 0
    with pytest.raises(HubError) as caught:
        hub.downloads.request("civitai", "1")
    assert str(caught.value) == (f"not enough disk space for Orbit · v1: it needs {len(lora) / 1024:.0f} KB, "
                                 "20 KB are free in the models folder")
