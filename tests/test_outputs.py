"""Output files are checked before they take their name: real failures (a file-size limit in a child
process, as `ulimit -f` sets it) must end in one sentence and leave no file under either name."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import read_frames

from diffbox.store import WriteFailed
from diffbox.workflows import outputs
from diffbox.workflows.outputs import read_metadata, readable_frames, write_png, write_video
from diffbox.workflows.svi import load_state, save_state, stitch

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 20_000  # bytes: more than a small clip, less than the noisy one below


def noise(frames: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Random frames compress badly, so the file is large for its size."""
    return np.random.default_rng(seed).random((frames, size, size, 3)).astype(np.float32)


LIMITED_CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    import numpy as np
    from PIL import Image
    from diffbox.store import WriteFailed
    from diffbox.workflows.outputs import write_png, write_video

    what, folder = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as app.py does: our own writes fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
    frames = np.random.default_rng(0).random((33, 64, 64, 3)).astype(np.float32)
    try:
        if what == "video":
            write_video(frames, f"{{folder}}/video.mp4", 16, {{"params": {{"seed": 1}}}})
        elif what == "png":
            write_png(Image.fromarray((frames[0] * 255).astype(np.uint8)).resize((256, 256)), f"{{folder}}/image-1.png")
        elif what == "stitch":
            from diffbox.workflows.svi import stitch
            stitch(sys.argv[3:], f"{{folder}}/video.mp4", {{"params": {{}}}})
        elif what == "state":
            import torch
            from diffbox.workflows.svi import save_state
            save_state(folder, torch.randn(1, 16, 3, 64, 64), torch.randn(1, 16, 3, 64, 64), {{"clips_done": 1}})
        print(json.dumps({{"error": None}}))
    except WriteFailed as exc:
        print(json.dumps({{"error": str(exc)}}))
""").format(limit=LIMIT)


def run_limited(what: str, folder: Path, *extra: str) -> str | None:
    """Runs one writer in a child process whose files may not grow past LIMIT; returns its WriteFailed text."""
    folder.mkdir(exist_ok=True)
    result = subprocess.run([sys.executable, "-c", LIMITED_CHILD, what, str(folder), *extra], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])["error"]


def test_an_mp4_past_the_file_size_limit_is_refused_and_leaves_nothing(tmp_path):
    # The kernel kills ffmpeg with SIGXFSZ (subprocess restores its default action); nothing tells
    # the writer, which would close a 20,000-byte file with no index, unplayable.
    error = run_limited("video", tmp_path / "out")
    assert error == ("could not write video.mp4: only 0 of its 33 frames could be read back (this process's "
                     "file-size limit (ulimit -f) is 20,000 bytes), so it was not saved")
    assert list((tmp_path / "out").iterdir()) == []  # no video.mp4, no .partial-video.mp4


def test_a_png_past_the_file_size_limit_is_refused_and_leaves_nothing(tmp_path):
    error = run_limited("png", tmp_path / "out")
    assert error == "could not write image-1.png: the file grew past this system's file-size limit"
    assert list((tmp_path / "out").iterdir()) == []


def test_svi_state_past_the_file_size_limit_is_refused_and_leaves_nothing(tmp_path):
    error = run_limited("state", tmp_path / "out")
    assert error == "could not write svi_state.safetensors: the file grew past this system's file-size limit"
    assert list((tmp_path / "out").iterdir()) == []


def test_a_stitched_video_past_the_file_size_limit_is_refused_and_leaves_nothing(tmp_path):
    parts = [write_video(noise(17, seed=n), tmp_path / f"clip_{n}.mp4", 16) for n in range(3)]
    assert sum(p.stat().st_size for p in parts) > LIMIT
    error = run_limited("stitch", tmp_path / "out", *map(str, parts))
    assert error == ("could not stitch the clips into video.mp4: this process's file-size limit (ulimit -f) is "
                     "20,000 bytes")
    assert list((tmp_path / "out").iterdir()) == []


def test_written_files_read_back_whole_and_nothing_else_is_left(tmp_path):
    metadata = {"params": {"seed": 7, "prompt": "a fox"}, "workflow": "i2v"}
    video = write_video(noise(9), tmp_path / "video.mp4", 16, metadata)
    assert len(read_frames(video)) == 9 and readable_frames(video) == 9
    assert read_metadata(video) == metadata
    parts = [video, write_video(noise(8, seed=1), tmp_path / "clip.mp4", 16)]
    stitched = stitch(parts, tmp_path / "stitched.mp4", metadata)
    assert len(read_frames(stitched)) == 17 and read_metadata(stitched) == metadata
    image = Image.new("RGB", (40, 24), (10, 200, 30))
    png = write_png(image, tmp_path / "image-1.png", metadata)
    with Image.open(png) as reopened:
        assert reopened.size == (40, 24) and reopened.getpixel((3, 3)) == (10, 200, 30)
    state = save_state(tmp_path, torch.ones(1, 2, 3, 4, 5), torch.ones(1, 2, 1, 4, 5),
                       {"clips_done": 2})
    tensors, info = load_state(state)
    assert tuple(tensors["last"].shape) == (1, 2, 1, 4, 5) and info == {"clips_done": 2}
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["clip.mp4", "image-1.png", "stitched.mp4", "svi_state.safetensors", "video.mp4"]


def test_a_video_that_reads_back_short_never_takes_its_name(tmp_path, monkeypatch):
    real = outputs.readable_frames
    monkeypatch.setattr(outputs, "readable_frames", lambda path, decode=True: real(path, decode) - 1)
    with pytest.raises(WriteFailed, match=r"could not write video.mp4: only 8 of its 9 frames could be read back"):
        write_video(noise(9), tmp_path / "video.mp4", 16)
    assert list(tmp_path.iterdir()) == []
