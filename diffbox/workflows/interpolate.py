"""Interpolate: a video in, the same video at ×2 or ×4 the frame rate out. Wan renders 16 fps; 32–64 fps
is what people post. n frames become (n−1)·k + 1: every original frame stays, k−1 new ones go between
each pair, and the duration is unchanged.

The frames are made by ffmpeg (diffbox/engine/interpolate.py, which also says why RIFE is not offered),
so no model is needed or downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np

from diffbox import __version__
from diffbox.engine import interpolate as interpolation
from diffbox.engine.runner import JobContext, JobResult
from diffbox.params import InvalidParams, Param, ParamSpec
from diffbox.workflows.images import file_path
from diffbox.workflows.outputs import read_metadata, write_metadata, write_video
from diffbox.workflows.workflow import Input, Output, Resolved, Workflow

# The whole result is held in memory before it is written and checked: ~2,900 frames of 1280×720.
MAX_OUTPUT_BYTES = 8 * 2**30
MAX_OUTPUT_FPS = 240

SPEC = ParamSpec("interpolate", (
    Param("factor", "int", 2, "Frames per original frame: 2 doubles the frame rate (16 → 32 fps), 4 quadruples it. "
          "n frames become (n−1)·factor + 1; the duration stays the same.", label="Factor", choices=(2, 4)),
    Param("method", "choice", "minterpolate", "minterpolate: ffmpeg's motion-compensated interpolation, moving "
          "things are drawn in between (can warp on fast or complex motion). blend: ffmpeg's framerate filter, "
          "a cross-fade between neighbours (never warps, ghosts on fast motion; much faster).",
          label="Method", choices=interpolation.METHODS),
))


@dataclass(frozen=True)
class InterpolateInput:
    params: dict[str, Any]
    frames: np.ndarray          # (n, H, W, 3) uint8, n >= 2
    fps: float
    source_name: str
    source_recipe: dict | None  # the diffbox metadata the uploaded video carries, if it is one of ours


def prepare(values: dict | None, *, spec: ParamSpec = SPEC, video: Any = None) -> InterpolateInput:
    """Validates the parameters and decodes the video before anything is queued; raises InvalidParams
    naming the field (`video` when it is missing, unreadable, a single frame or too large)."""
    params = spec.validate(values)
    path = file_path(video)
    if path is None:
        raise InvalidParams({"video": "a video is required"})
    frames, fps = load_video(path, params["factor"])
    if fps * params["factor"] > MAX_OUTPUT_FPS:
        raise InvalidParams({"video": f"plays at {fps:g} fps; ×{params['factor']} would be "
                                      f"{fps * params['factor']:g} fps, above {MAX_OUTPUT_FPS}"})
    return InterpolateInput(params, frames, fps, Path(path).name, read_metadata(path))


def load_video(path: str, factor: int) -> tuple[np.ndarray, float]:
    """All frames of `path` as (n, H, W, 3) uint8 and its frame rate; InvalidParams({"video": …}) otherwise."""
    name = Path(path).name
    try:
        reader = imageio.get_reader(path, format="FFMPEG")
    except Exception as exc:  # imageio raises OSError, RuntimeError or its own errors for a non-video
        raise InvalidParams({"video": f"is not a readable video ({name}: {_first_line(exc)})"}) from None
    try:
        fps = float(reader.get_meta_data().get("fps") or 0)
        frames: list[np.ndarray] = []
        for frame in reader:
            if frames and frame.shape != frames[0].shape:
                raise InvalidParams({"video": f"changes size mid-stream ({name}); re-encode it first"})
            frames.append(frame[..., :3])
            if frame.nbytes * interpolation.interpolated_count(len(frames), factor) > MAX_OUTPUT_BYTES:
                raise InvalidParams({"video": f"is too long for ×{factor} at {frame.shape[1]}×{frame.shape[0]} "
                                              f"(more than {MAX_OUTPUT_BYTES // 2**30} GB of frames); "
                                              "cut it or interpolate a smaller copy"})
    except InvalidParams:
        raise
    except Exception as exc:
        raise InvalidParams({"video": f"is not a readable video ({name}: {_first_line(exc)})"}) from None
    finally:
        reader.close()
    if not fps > 0:
        raise InvalidParams({"video": f"has no frame rate ({name}); is it a still image?"})
    if len(frames) < 2:
        raise InvalidParams({"video": f"has {len(frames)} frame{'' if len(frames) == 1 else 's'} ({name}); "
                                      "interpolation needs at least 2"})
    return np.stack(frames), fps


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def resolve(services, workflow: Workflow, job: InterpolateInput) -> Resolved:
    """ffmpeg needs no model from the library."""
    return Resolved(model_name="")


def run(ctx: JobContext, pipe, job: InterpolateInput, model_name: str = "", loras=(), *,
        extra_metadata: dict | None = None) -> JobResult:
    p = job.params
    factor, count = p["factor"], len(job.frames)

    def on_pair(done: int, total: int) -> None:
        ctx.progress("interpolating", done, total)
        ctx.check_cancelled()

    ctx.progress("interpolating", 0, count - 1)
    frames = interpolation.interpolate(job.frames, factor, p["method"], on_pair)
    ctx.check_cancelled()
    ctx.progress("writing video")
    fps = job.fps * factor
    height, width = frames.shape[1:3]
    metadata = {
        "workflow": "interpolate", "diffbox_version": __version__, "job_id": ctx.job_id,
        # Only this spec's own fields (a job's params may carry the runner's "model"): the recipe must revalidate.
        "params": {k: v for k, v in p.items() if k in SPEC},
        "source": {"name": job.source_name, "frames": count, "fps": job.fps, "recipe": job.source_recipe},
        "frames": int(len(frames)), "width": int(width), "height": int(height), "fps": fps,
        **(extra_metadata or {}),
    }
    video = write_video(frames, ctx.outdir / "video.mp4", fps, metadata, macro_block_size=2)
    write_metadata(ctx.outdir, metadata)
    return JobResult(outputs=[str(video)], metadata=metadata)


WORKFLOW = Workflow(
    name="interpolate", title="Interpolate", spec=SPEC,
    inputs=(Input("video", "video", "Video"),),
    outputs=(Output("interpolated", "video", "Interpolated video"),),  # not "video": that names the input
    prepare=prepare, run=run, resolve=resolve, first_run=False,
    description="More frames per second: ×2 or ×4 with ffmpeg's motion interpolation or a blend; "
                "n frames become (n−1)·factor + 1.",
)
