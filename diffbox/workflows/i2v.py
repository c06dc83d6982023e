"""Wan 2.2 image-to-video: one image (optionally a last frame) and a prompt in, an H.264 mp4 out.

Wan 2.2 A14B has two experts: `transformer` denoises the high-noise steps (t >= boundary_ratio·1000)
with guidance_scale, `transformer_2` the low-noise rest with guidance_scale_2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import export_to_video
from PIL import Image

from diffbox import __version__
from diffbox.engine.runner import JobContext, JobResult
from diffbox.params import Param, ParamSpec
from diffbox.store import atomic_write_text
from diffbox.workflows.images import cover, load_image

PIPELINE_CLASSES = ("WanImageToVideoPipeline",)

# Wan's own default negative prompt (Wan2.2 shared_config.py); the model was tuned with it.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
    "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
    "三条腿，背景人很多，倒着走"
)

SPEC = ParamSpec("i2v", (
    Param("prompt", "text", "", "What should happen in the video.", label="Prompt"),
    Param("seed", "seed", -1, "-1 picks a random seed; the seed actually used is saved with the video."),
    Param("width", "int", 832, "Output width in pixels (multiple of 16).", minimum=16, maximum=2048,
          step=16, multiple_of=16),
    Param("height", "int", 480, "Output height in pixels (multiple of 16).", minimum=16, maximum=2048,
          step=16, multiple_of=16),
    Param("model", "str", "", "Wan 2.2 I2V model from the local library; empty = the first one found."),
    Param("negative_prompt", "text", WAN_NEGATIVE_PROMPT, "What to steer away from.", tier="advanced"),
    Param("num_inference_steps", "int", 40, "Denoising steps, shared by both experts.", tier="advanced",
          minimum=1, maximum=200),
    Param("guidance_scale", "float", 3.5, "Prompt strength for the high-noise expert (layout, motion).",
          tier="advanced", minimum=0.0, maximum=20.0, step=0.1),
    Param("guidance_scale_2", "float", 3.5, "Prompt strength for the low-noise expert (detail).",
          tier="advanced", minimum=0.0, maximum=20.0, step=0.1),
    Param("num_frames", "int", 81, "Frames to generate; 4n+1 because the VAE packs 4 frames per latent.",
          tier="advanced", minimum=5, maximum=481, step=4, congruent=(4, 1)),
    Param("fps", "int", 16, "Frames per second of the mp4 (Wan 2.2 A14B is trained at 16).",
          tier="advanced", minimum=1, maximum=60),
))


@dataclass(frozen=True)
class I2VInput:
    params: dict[str, Any]
    image: Image.Image
    end_image: Image.Image | None


def prepare(values: dict | None, image: Any, end_image: Any = None, spec: ParamSpec = SPEC) -> I2VInput:
    """Validates everything before any GPU work; raises InvalidParams naming each bad field."""
    params = spec.validate(values)
    first = load_image(image, "image")
    last = load_image(end_image, "end_image") if end_image not in (None, "") else None
    size = (params["width"], params["height"])
    return I2VInput(params, cover(first, *size), cover(last, *size) if last else None)


def run(ctx: JobContext, pipe, job: I2VInput, model_name: str) -> JobResult:
    p = job.params
    two_experts = getattr(pipe, "transformer_2", None) is not None and pipe.config.boundary_ratio is not None
    output = pipe(
        image=job.image,
        last_image=job.end_image,
        prompt=p["prompt"],
        negative_prompt=p["negative_prompt"] or None,
        height=p["height"],
        width=p["width"],
        num_frames=p["num_frames"],
        num_inference_steps=p["num_inference_steps"],
        guidance_scale=p["guidance_scale"],
        guidance_scale_2=p["guidance_scale_2"] if two_experts else None,
        generator=torch.Generator("cpu").manual_seed(p["seed"]),
        callback_on_step_end=ctx.step_callback(p["num_inference_steps"]),
        output_type="np",
    )
    frames = output.frames[0]
    ctx.check_cancelled()
    ctx.progress("writing video")
    metadata = {
        "workflow": "i2v", "diffbox_version": __version__, "job_id": ctx.job_id, "model": model_name,
        "params": p, "frames": int(len(frames)), "width": p["width"], "height": p["height"], "fps": p["fps"],
    }
    video = write_video(frames, ctx.outdir / "video.mp4", p["fps"])
    write_metadata(ctx.outdir, metadata)
    return JobResult(outputs=[str(video)], metadata=metadata)


def write_video(frames, path: Path, fps: int) -> Path:
    """H.264 mp4, written under a temp name and renamed, so a half-written file never appears."""
    partial = path.with_name(f".partial-{path.name}")
    export_to_video(list(frames), str(partial), fps=fps)
    partial.replace(path)
    return path


def write_metadata(outdir: Path, metadata: dict) -> Path:
    path = outdir / "meta.json"
    atomic_write_text(path, json.dumps(metadata, indent=2, ensure_ascii=False, default=str))
    return path
