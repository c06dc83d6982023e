"""Free disk is checked for the whole download queue: when a download is asked for, before its first byte,
and while it runs. The disk is a simulated volume (a capacity less the real bytes under models/ and
outputs/), so the numbers in the sentences are exact; the downloads are real, from the fake hubs."""

import re
import time

import pytest

from diffbox.engine.memory import format_bytes
from diffbox.hub import HubError
from diffbox.hub.downloads import ROOM_CHECK_S
from diffbox.hub.transfer import CHUNK
from fake_hubs import Behaviour, fakes, hub_settings, start_hub, wan_lora  # noqa: F401 (fixtures)

PAUSE = 2 * CHUNK  # the file host stalls each first GET here: whole chunks, so the .part holds exactly this


class Volume:
    """A disk of `capacity` bytes holding what the app wrote under models/ and outputs/ and nothing else."""

    def __init__(self, settings, capacity: int):
        self.folders = (settings.models_dir, settings.home / "outputs")
        self.capacity = capacity

    def used(self) -> int:
        return sum(f.lstat().st_size for folder in self.folders for f in folder.rglob("*") if f.is_file())

    def free(self, _path=None) -> int:
        return self.capacity - self.used()


def civitai_file(fakes, model_id: int, name: str, data: bytes, behaviour: Behaviour | None = None) -> None:
    fakes.civitai.add_model(model_id, model_id * 10, name, {f"{name.lower()}.safetensors": data},
                            behaviour=behaviour)


def wait_for(condition, timeout=30.0, what=""):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_the_whole_queue_must_fit_and_a_download_the_disk_no_longer_holds_stops_with_the_numbers(
        fakes, start_hub, hub_settings):
    data = {n: wan_lora(8, seed=n) for n in (1, 2, 3)}
    size = len(data[1])
    stalls = {n: Behaviour(pause_at=PAUSE) for n in (1, 2)}
    for n, name in ((1, "Alpha"), (2, "Beta"), (3, "Gamma")):
        civitai_file(fakes, n, name, data[n], stalls.get(n))
    hub = start_hub(hub_settings, workers=2)
    volume = Volume(hub_settings, capacity=size * 5 // 2)  # each file fits alone, two fit together, not three
    hub.downloads._free_space = volume.free
    hub.downloads.reserve = 0  # the queue's arithmetic alone (the reserve has its own test)
    alpha, beta = hub.downloads.request("civitai", "1"), hub.downloads.request("civitai", "2")
    wait_for(lambda: all(hub.downloads.get(d)["bytes_done"] == PAUSE for d in (alpha, beta)), what="both stalled")

    # Gamma alone would fit the free disk; with what Alpha and Beta still have to fetch it does not.
    assert size < volume.free() == size * 5 // 2 - 2 * PAUSE
    with pytest.raises(HubError) as refused:
        hub.downloads.request("civitai", "3")
    assert str(refused.value) == (
        f"not enough disk space for Gamma · v1: it needs {format_bytes(size)}, and the 2 downloads already queued "
        f"need {format_bytes(2 * (size - PAUSE))} more, {format_bytes(volume.free())} are free in the models folder")
    assert len(hub.downloads.list()) == 2 and fakes.files.body_bytes("30-0") == 0

    # Something else fills the disk while both are stalled: Alpha (first in the queue) still fits, Beta no longer.
    (hub_settings.home / "outputs" / "render.mp4").write_bytes(b"\0" * (size * 3 // 4))
    time.sleep(ROOM_CHECK_S + 0.1)  # past the throttle: the next chunk each one takes is checked
    for stall in stalls.values():
        stall.resume.set()
    done, stopped = hub.downloads.wait(alpha, 30), hub.downloads.wait(beta, 30)
    assert done["state"] == "done", done
    assert (hub_settings.models_dir / done["name"]).read_bytes() == data[1]
    assert stopped["state"] == "failed", stopped
    # Alpha may be a few bytes from its end when Beta checks: what it still needs can be in any unit.
    match = re.fullmatch(r"not enough disk space to go on with Beta · v1: it still needs (\S+ MB)"
                         r"(?:, and the download ahead of it needs \S+ (?:B|KB|MB) more)?, (\S+ MB) are free in the "
                         r"models folder\. Free some space and press Retry\.", stopped["error"])
    assert match, stopped["error"]
    assert match.group(1) == format_bytes(size - PAUSE)  # stopped at its first chunk after the stall
    assert volume.free() >= 0  # never past the (simulated) end of the disk
    part = next((hub_settings.models_dir / ".downloads" / beta).glob("*.part"))
    assert part.stat().st_size >= PAUSE  # what it had is kept for the retry

    # Space freed: Retry resumes from the partial file and lands the exact bytes.
    (hub_settings.home / "outputs" / "render.mp4").unlink()
    again = hub.downloads.wait(hub.downloads.retry(beta)["id"], 30)
    assert again["state"] == "done", again
    assert (hub_settings.models_dir / again["name"]).read_bytes() == data[2]
    last = fakes.files.requests("/files/20-0")[-1]
    assert last.headers["range"].startswith("bytes=") and last.headers["range"] != "bytes=0-"


def test_a_queued_download_the_disk_no_longer_holds_fails_before_its_first_byte(fakes, start_hub, hub_settings):
    first = wan_lora(4, seed=1)
    stall = Behaviour(pause_at=PAUSE)
    civitai_file(fakes, 1, "Alpha", first, stall)
    lora = wan_lora(2, seed=2)
    fakes.hf.add_repo("studio/beta-lora", {"beta.safetensors": lora}, tags=["lora"])
    hub = start_hub(hub_settings, workers=1)  # one worker: the Hugging Face download waits its turn
    volume = Volume(hub_settings, capacity=len(first) + len(lora) + CHUNK)
    hub.downloads._free_space = volume.free
    hub.downloads.reserve = 0
    alpha = hub.downloads.request("civitai", "1")
    wait_for(lambda: hub.downloads.get(alpha)["bytes_done"] == PAUSE, what="alpha stalled")
    beta = hub.downloads.request("hf", "studio/beta-lora", "beta.safetensors")
    assert hub.downloads.get(beta)["state"] == "queued"

    (hub_settings.home / "outputs" / "upscaled.png").write_bytes(b"\0" * (2 * CHUNK))
    stall.resume.set()
    assert hub.downloads.wait(alpha, 30)["state"] == "done"
    failed = hub.downloads.wait(beta, 30)
    assert failed["state"] == "failed"
    assert failed["error"] == (f"not enough disk space to go on with studio/beta-lora/beta.safetensors: it still "
                               f"needs {format_bytes(len(lora))}, {format_bytes(volume.free())} are free in the "
                               "models folder. Free some space and press Retry.")
    assert volume.free() < len(lora)
    assert fakes.hf.body_bytes("beta.safetensors") == 0  # refused before a byte was fetched


def test_downloads_leave_the_reserve_free_for_outputs_and_the_history(fakes, start_hub, hub_settings):
    from diffbox.hub.downloads import DISK_RESERVE

    data = wan_lora(1, seed=5)
    civitai_file(fakes, 1, "Alpha", data)
    hub = start_hub(hub_settings)
    assert hub.downloads.reserve == DISK_RESERVE == 2 * 1024 ** 3
    hub.downloads.reserve = 1024 ** 2
    hub.downloads._free_space = lambda path: len(data) + 1024 ** 2 - 1  # fits the disk, not the disk less 1 MB
    with pytest.raises(HubError) as refused:
        hub.downloads.request("civitai", "1")
    assert str(refused.value).endswith("are free in the models folder, of which downloads leave 1.0 MB for outputs "
                                       "and the job history"), str(refused.value)
    hub.downloads._free_space = lambda path: len(data) + 1024 ** 2
    assert hub.downloads.wait(hub.downloads.request("civitai", "1"), 30)["state"] == "done"
