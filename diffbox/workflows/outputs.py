"""Output files with their recipe inside: mp4 whose comment holds the job metadata, meta.json beside it.

Anyone can drop an output back into the app and get the same settings, even after the history
is gone. Every file is written under a temp name and renamed: never half a file.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np

from diffbox.store import atomic_write_text

META_KEY = "diffbox"  # the JSON travels as {"diffbox": metadata} so other tools' comments are not mistaken


def to_uint8(frames) -> np.ndarray:
    array = np.asarray(frames)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return array


def check_frames(frames) -> None:
    """A NaN or all-black result is a failure (fp16 overflow, a broken LoRA), never an output."""
    array = np.asarray(frames, dtype=np.float32)
    if np.isnan(array).any():
        raise ValueError("the model produced NaN values (often fp16 overflow or a broken LoRA); "
                         "try dtype bfloat16, another LoRA, or fewer LoRAs")
    if array.max() <= 1.0 / 255.0:
        raise ValueError("the model produced an all-black video (often fp16 overflow or a broken LoRA); "
                         "try dtype bfloat16 or without LoRAs")


def write_video(frames, path: Path, fps: int, metadata: dict | None = None) -> Path:
    """H.264/yuv420p mp4 (plays everywhere, streams with faststart) with the metadata as its comment."""
    path = Path(path)
    partial = path.with_name(f".partial-{path.name}")
    params = ["-movflags", "+faststart"]
    if metadata is not None:
        params += ["-metadata", "comment=" + json.dumps({META_KEY: metadata}, separators=(",", ":"),
                                                       ensure_ascii=True, default=str)]
    writer = imageio.get_writer(str(partial), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                quality=8, pixelformat="yuv420p", macro_block_size=16, output_params=params,
                                ffmpeg_log_level="error")
    try:
        for frame in to_uint8(frames):
            writer.append_data(frame)
    finally:
        writer.close()
    partial.replace(path)
    return path


def write_metadata(outdir: Path, metadata: dict) -> Path:
    path = Path(outdir) / "meta.json"
    atomic_write_text(path, json.dumps(metadata, indent=2, ensure_ascii=False, default=str))
    return path


def write_png(image, path: Path, metadata: dict | None = None) -> Path:
    """Lossless PNG (never webp: it would smear masks and edits) with the metadata JSON as a
    `diffbox` text chunk; written under a temp name and renamed."""
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    partial = path.with_name(f".partial-{path.name}")
    info = PngInfo()
    if metadata is not None:
        info.add_text(META_KEY, json.dumps(metadata, separators=(",", ":"), ensure_ascii=True, default=str))
    image.save(partial, format="PNG", pnginfo=info)
    partial.replace(path)
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
