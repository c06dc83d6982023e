"""Upscale: an image or a video, ×2 or ×4, with any super-resolution model in the library (ESRGAN family
and the rest spandrel knows), tiled so memory stays bounded whatever the frame size.

An image comes back as a PNG, a video as an mp4 with the same frame count and fps (no audio). A model's
own scale need not match: a ×4 model asked for ×2 is resized down after it runs, a ×2 model asked for ×4
runs twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
from PIL import Image, UnidentifiedImageError

from diffbox import __version__
from diffbox.engine.host_memory import host_ram_status
from diffbox.engine.loaders import DTYPES
from diffbox.engine.runner import JobContext, JobResult
from diffbox.engine.upscale import NotAnUpscaler, load_upscaler, upscale_frames
from diffbox.params import InvalidParams, Param, ParamSpec
from diffbox.workflows.images import file_path, load_image
from diffbox.workflows.outputs import write_metadata, write_png, write_video
from diffbox.workflows.workflow import Input, Output, Workflow

MAX_OUTPUT_SIDE = 8192  # H.264's largest level (6.2) stops at 8192 pixels a side; pictures share the cap
MAX_FRAMES = 2000


def _overlap_fits(values: dict) -> dict:
    if values["tile"] and values["tile_overlap"] * 2 > values["tile"]:
        return {"tile_overlap": f"must be at most half the tile ({values['tile'] // 2})"}
    return {}


SPEC = ParamSpec("upscale", (
    Param("scale", "int", 2, "Upscale factor: 2 or 4.", choices=(2, 4)),
    Param("model", "str", "", "Upscale model from the library (ESRGAN family: RealESRGAN, 4x-UltraSharp, …); "
          "empty = the first one found."),
    Param("tile", "int", 512, "Tile size in input pixels: memory grows with its square; 0 = the whole frame "
          "at once.", tier="advanced", minimum=0, maximum=4096, multiple_of=8),
    Param("tile_overlap", "int", 32, "Pixels neighbouring tiles share; they are cross-faded so no seam shows.",
          tier="advanced", minimum=0, maximum=512),
    Param("dtype", "choice", "auto", "Compute dtype; auto = bfloat16 on GPU (when the model supports it), "
          "float32 on CPU.", tier="expert", choices=("auto", *DTYPES)),
), checks=(_overlap_fits,))


@dataclass(frozen=True)
class UpscaleInput:
    params: dict[str, Any]
    image: Image.Image | None  # an image input, decoded
    video: str | None          # a video input: its path, decoded frame by frame in the worker
    fps: float
    size: tuple[int, int]      # input width, height


def _probe_video(path: str) -> tuple[float, tuple[int, int]]:
    try:
        reader = imageio.get_reader(path, format="FFMPEG")
        try:
            meta = reader.get_meta_data()
        finally:
            reader.close()
        fps, size = float(meta["fps"]), tuple(int(v) for v in meta["size"])
    except Exception:
        raise InvalidParams({"file": f"is neither a readable image nor a readable video ({Path(path).name})"}) \
            from None
    return fps, size


def _is_picture(path: str) -> bool:
    try:
        with Image.open(path):
            return True
    except Image.DecompressionBombError:
        return True  # a picture, refused by load_image with its size
    except (UnidentifiedImageError, OSError):
        return False


def prepare(values: dict | None, *, spec: ParamSpec = SPEC, file: Any = None) -> UpscaleInput:
    """Validates the parameters and the file before any GPU work; InvalidParams names each bad field."""
    params = spec.validate(values)
    path = None if isinstance(file, Image.Image) else file_path(file)
    if path is None and not isinstance(file, Image.Image):
        raise InvalidParams({"file": "an image or a video is required"})
    image, video, fps = None, None, 0.0
    if path is None or _is_picture(path):
        image = load_image(file, "file")
        size = image.size
    else:
        video = path
        fps, size = _probe_video(path)
    scale = params["scale"]
    if max(size) * scale > MAX_OUTPUT_SIDE:
        raise InvalidParams({"scale": f"×{scale} would make {size[0] * scale}×{size[1] * scale}; at most "
                                      f"{MAX_OUTPUT_SIDE} pixels a side"})
    return UpscaleInput(params, image, video, fps, size)


def _video_frames(path: str):
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        for index, frame in enumerate(reader):
            if index >= MAX_FRAMES:
                raise InvalidParams({"file": f"has more than {MAX_FRAMES} frames"})
            yield np.asarray(frame)[..., :3]
    finally:
        reader.close()


def _check_room(frames: list, scale: int) -> None:
    """The upscaled frames are held in RAM until the mp4 is written and checked (twice, briefly, while the
    writer stacks them): refuse a video whose result would not fit in ¾ of the free RAM."""
    if not frames:
        raise InvalidParams({"file": "holds no video frames"})
    height, width = frames[0].shape[:2]
    needed = 2 * len(frames) * height * width * 3 * scale * scale
    free = host_ram_status().free_bytes
    if needed > free * 0.75:
        raise InvalidParams({"file": f"{len(frames)} frames ×{scale} need {needed / 2**30:.1f} GB of RAM to hold the "
                                     f"result and {free / 2**30:.1f} GB is free; trim the video or use ×2"})


def run(ctx: JobContext, pipe, job: UpscaleInput, model_name: str, loras=(), *, model_path: Path,
        extra_metadata: dict | None = None) -> JobResult:
    """Loads the model, upscales every frame (progress per frame, Stop between tiles), writes the file."""
    p = job.params
    ctx.progress("loading the upscaler")
    try:
        upscaler = load_upscaler(model_path, p["dtype"])
    except NotAnUpscaler as refusal:
        raise InvalidParams({"model": str(refusal)}) from None
    frames = [np.asarray(job.image)] if job.image is not None else list(_video_frames(job.video))
    total = len(frames)
    _check_room(frames, p["scale"])
    ctx.progress("upscaling", 0, total)
    results = list(upscale_frames(upscaler, frames, p["scale"], p["tile"], p["tile_overlap"],
                                  on_frame=lambda i: ctx.progress("upscaling", i, total),
                                  between_tiles=ctx.check_cancelled))
    ctx.check_cancelled()
    height, width = results[0].shape[:2]
    metadata = {
        "workflow": "upscale", "diffbox_version": __version__, "job_id": ctx.job_id, "model": model_name,
        "params": p, "upscaler": upscaler.summary, "frames": total, "width": width, "height": height,
        "source": {"kind": "image" if job.image is not None else "video", "width": job.size[0],
                   "height": job.size[1], **({"fps": job.fps} if job.video else {})},
        **(extra_metadata or {}),
    }
    ctx.progress("writing the result")
    if job.image is not None:
        output = write_png(Image.fromarray(results[0]), ctx.outdir / "upscaled.png", metadata)
    else:
        metadata["fps"] = job.fps
        output = write_video(results, ctx.outdir / "upscaled.mp4", job.fps, metadata,
                             macro_block_size=2)  # exactly ×scale: every side is even
    write_metadata(ctx.outdir, metadata)
    return JobResult(outputs=[str(output)], metadata=metadata)


WORKFLOW = Workflow(
    name="upscale",
    title="Upscale",
    spec=SPEC,
    inputs=(Input("file", "file", "Image or video"),),
    outputs=(Output("upscaled", "file", "Upscaled"),),
    prepare=prepare,
    run=run,
    model_kind="upscaler",
    demo_defaults={"scale": 2, "tile": 64, "tile_overlap": 8},
    demo_models={"realesrgan-x4plus": ("upscalers/RealESRGAN_x4plus.safetensors",
                                       "diffbox.twins.upscalers:build_tiny_upscaler")},
    first_run=False,
    description="Image or video ×2 / ×4 with an ESRGAN-family model, in tiles.",
)
