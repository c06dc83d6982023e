"""Output files with their recipe inside: mp4 whose comment holds the job metadata, meta.json beside it.

Anyone can drop an output back into the app and get the same settings, even after the history
is gone. Every file is written under a temp name, read back (an mp4 must decode to the frames we
gave it, a PNG must reopen at its size) and only then renamed: ffmpeg does not report a full disk
or a file-size limit to its caller, so the file itself is the only proof. A failed file raises
WriteFailed with one sentence and leaves nothing under either name.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np

from diffbox.store import WriteFailed, atomic_write_text, describe_storage_error, likely_cause

META_KEY = "diffbox"  # the JSON travels as {"diffbox": metadata} so other tools' comments are not mistaken
ENCODER_STOPPED = "ffmpeg stopped before the end of the file"
# Gradio's streaming video (the SVI tab's live clips) calls the system's ffmpeg and ffprobe; the bundled
# imageio-ffmpeg binary that writes and checks our files does not count for it.
STREAMING_NEEDS_FFMPEG = ("Streaming SVI clips to the browser as they finish needs the system ffmpeg and ffprobe "
                          "on PATH (apt-get install ffmpeg); without them the live player stays empty and the clips "
                          "show only in the gallery.")


def streaming_tools_missing() -> list[str]:
    """The programs Gradio's video streaming needs that are not on PATH."""
    return [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]


def to_uint8(frames) -> np.ndarray:
    array = np.asarray(frames)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return array


def check_frames(frames, what: str = "video") -> None:
    """A NaN or all-black result is a failure (fp16 overflow, a broken LoRA), never an output."""
    array = np.asarray(frames, dtype=np.float32)
    if np.isnan(array).any():
        raise ValueError("the model produced NaN values (often fp16 overflow or a broken LoRA); "
                         "try dtype bfloat16, another LoRA, or fewer LoRAs")
    if array.max() <= 1.0 / 255.0:
        raise ValueError(f"the model produced an all-black {what} (often fp16 overflow or a broken LoRA); "
                         "try dtype bfloat16 or without LoRAs")


def write_video(frames, path: Path, fps: float, metadata: dict | None = None, macro_block_size: int = 16) -> Path:
    """H.264/yuv420p mp4 (plays everywhere, streams with faststart) with the metadata as its comment;
    takes its name only once ffmpeg decodes every frame back from it. Frames whose sides are not multiples
    of `macro_block_size` are scaled up to the next one (2 keeps an uploaded video's size: yuv420p needs even sides)."""
    path = Path(path)
    frames = to_uint8(frames)
    params = ["-movflags", "+faststart"]
    if metadata is not None:
        params += ["-metadata", "comment=" + json.dumps({META_KEY: metadata}, separators=(",", ":"),
                                                       ensure_ascii=True, default=str)]
    with checked_write(path) as partial:
        writer = imageio.get_writer(str(partial), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    quality=8, pixelformat="yuv420p", macro_block_size=macro_block_size,
                                    output_params=params, ffmpeg_log_level="error")
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()
        expect_frames(partial, len(frames), path.name)
    return path


def readable_frames(path: Path, decode: bool = True) -> int:
    """How many video frames ffmpeg reads back from `path` (0 if it cannot open it or hits an error).

    decode=False counts the packets without decoding them: enough for a file joined by stream copy
    from parts that were each decoded when written.
    """
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-nostats", "-progress", "pipe:1",
               "-xerror", "-i", str(path), "-map", "0:v:0", *([] if decode else ["-c", "copy"]), "-f", "null", "-"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return 0
    counts = [line[len("frame="):] for line in result.stdout.splitlines() if line.startswith("frame=")]
    if result.returncode != 0 or not counts or not counts[-1].strip().isdigit():
        return 0
    return int(counts[-1])


def expect_frames(path: Path, expected: int, name: str, decode: bool = True) -> None:
    """Raises WriteFailed unless `path` reads back with exactly `expected` frames."""
    found = readable_frames(path, decode)
    if found != expected:
        raise WriteFailed(f"could not write {name}: only {found} of its {expected} frames could be read back "
                          f"({likely_cause(path.parent, ENCODER_STOPPED)}), so it was not saved")


@contextmanager
def checked_write(path: Path) -> Iterator[Path]:
    """Yields a temp name beside `path`; when the block (which writes and checks it) ends, renames it to
    `path`. On any failure neither name is left; a disk error becomes one WriteFailed sentence."""
    path = Path(path)
    partial = path.with_name(f".partial-{path.name}")
    try:
        yield partial
        partial.replace(path)
    except WriteFailed:
        partial.unlink(missing_ok=True)
        raise
    except OSError as exc:  # the disk, or a writer whose pipe broke (imageio raises a bare IOError then)
        partial.unlink(missing_ok=True)
        reason = describe_storage_error(exc, path.parent) if exc.errno else likely_cause(path.parent, ENCODER_STOPPED)
        raise WriteFailed(f"could not write {path.name}: {reason}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_metadata(outdir: Path, metadata: dict) -> Path:
    path = Path(outdir) / "meta.json"
    atomic_write_text(path, json.dumps(metadata, indent=2, ensure_ascii=False, default=str))
    return path


def write_png(image, path: Path, metadata: dict | None = None) -> Path:
    """Lossless PNG (never webp: it would smear masks and edits) with the metadata JSON as a
    `diffbox` text chunk; written under a temp name, reopened at its size, then renamed."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    info = PngInfo()
    if metadata is not None:
        info.add_text(META_KEY, json.dumps(metadata, separators=(",", ":"), ensure_ascii=True, default=str))
    with checked_write(path) as partial:
        image.save(partial, format="PNG", pnginfo=info)
        with Image.open(partial) as reopened:
            reopened.load()
            if reopened.size != image.size:
                raise WriteFailed(f"could not write {path.name}: it reads back as {reopened.size[0]}×"
                                  f"{reopened.size[1]}, not {image.size[0]}×{image.size[1]}")
    return path


def _png_text(path: Path) -> str | None:
    from PIL import Image

    with Image.open(path) as image:
        return image.text.get(META_KEY) if hasattr(image, "text") else None


def _ffmetadata_comment(path: Path) -> str | None:
    result = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                            capture_output=True, text=True, timeout=30)
    for line in result.stdout.splitlines():
        if line.startswith("comment="):
            # ffmetadata escapes '=', ';', '#', '\' and newlines with a backslash.
            value, out, escaped = line[len("comment="):], [], False
            for char in value:
                if escaped or char != "\\":
                    out.append(char)
                    escaped = False
                else:
                    escaped = True
            return "".join(out)
    return None


def read_metadata(path: str | Path) -> dict | None:
    """The metadata diffbox saved in an output (mp4 comment or meta.json); None if it holds none."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) and "params" in data else None
        if path.suffix.lower() == ".png":
            text = _png_text(path)
            data = json.loads(text) if text else None
            return data if isinstance(data, dict) and "params" in data else None
        if path.suffix.lower() in (".mp4", ".mov", ".m4v"):
            comment = _ffmetadata_comment(path)
            data = json.loads(comment) if comment else None
            return data.get(META_KEY) if isinstance(data, dict) else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return None
