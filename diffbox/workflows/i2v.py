"""Wan 2.2 image-to-video: one image (optionally a last frame) and a prompt in, an H.264 mp4 out.

Wan 2.2 A14B has two experts: `transformer` denoises the high-noise steps (t >= boundary_ratio·1000)
with guidance_scale, `transformer_2` the low-noise rest with guidance_scale_2. LoRAs carry a
weight per expert for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from diffbox import __version__, base_models
from diffbox.engine import tuning
from diffbox.engine.loras import LoraRequest, apply_loras, file_sha256
from diffbox.engine.preview import video_latents_to_strip
from diffbox.engine.runner import JobContext, JobResult
from diffbox.params import Param, ParamSpec
from diffbox.workflows.common import MEMORY_PARAMS, STEP_CACHE_PARAMS, lora_entry, vae_dtype_param
from diffbox.workflows.images import cover, load_image
from diffbox.workflows.outputs import check_frames, write_metadata, write_video
from diffbox.workflows.workflow import Input, Output, Workflow

PIPELINE_CLASSES = ("WanImageToVideoPipeline",)
BASE_MODEL = base_models.WAN22_I2V

# Wan's own default negative prompt (Wan2.2 shared_config.py); the model was tuned with it.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
    "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
    "三条腿，背景人很多，倒着走"
)

# The sizes Wan 2.2 A14B was trained at, as width × height. The form offers them as shortcuts
# that fill width and height; the parameters themselves stay width and height.
RESOLUTION_PRESETS: dict[str, tuple[int, int]] = {
    "832×480 landscape (480p)": (832, 480),
    "480×832 portrait (480p)": (480, 832),
    "1280×720 landscape (720p)": (1280, 720),
    "720×1280 portrait (720p)": (720, 1280),
    "624×624 square": (624, 624),
}

def _tiles_fit(values: dict) -> dict:
    if values["vae_tiling"] and values["vae_tile_stride"] > values["vae_tile_size"]:
        return {"vae_tile_stride": f"must not exceed vae_tile_size ({values['vae_tile_size']})"}
    return {}


SPEC = ParamSpec("i2v", (
    Param("prompt", "text", "", "What should happen in the video.", label="Prompt"),
    Param("negative_prompt", "text", WAN_NEGATIVE_PROMPT, "What to steer away from (Wan's own default)."),
    Param("seed", "seed", -1, "-1 picks a random seed; the seed actually used is saved with the video."),
    Param("width", "int", 832, "Output width in pixels (multiple of 16).", minimum=16, maximum=2048,
          step=16, multiple_of=16),
    Param("height", "int", 480, "Output height in pixels (multiple of 16).", minimum=16, maximum=2048,
          step=16, multiple_of=16),
    Param("loras", "list", [], "LoRAs from the library, each with a weight for the high-noise and the "
          "low-noise expert (0 leaves that expert alone).", item=lora_entry(("weight_high", "weight_low")), max_items=8),
    Param("model", "str", "", "Wan 2.2 I2V model from the local library; empty = the first one found."),
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
    Param("preview_every", "int", 4, "Show a latent preview every N steps (0 = off; costs ~nothing).",
          tier="advanced", minimum=0, maximum=50),
    Param("flow_shift", "float", 5.0, "Sigma shift of the flow schedule; higher spends more steps on layout. "
          "5.0 is Wan 2.2 A14B I2V's own setting (its reference config; the distill and SVI LoRAs use it too); "
          "empty = the model folder's scheduler config, which is 3.0 in the -Diffusers repo.", tier="expert",
          minimum=0.1, maximum=30.0, nullable=True),
    Param("boundary_ratio", "float", None, "Where the high-noise expert hands over (t/1000); empty = the "
          "model's (0.9 for A14B I2V).", tier="expert", minimum=0.0, maximum=1.0, nullable=True),
    Param("scheduler", "choice", "unipc", "UniPC (what the -Diffusers repo ships) or Euler flow-match on Wan's "
          "own sigma grid (Wan's and DiffSynth's sampler: what the distill LoRAs and SVI 2.0 Pro were trained "
          "with; 4 steps at shift 5 run t = 1000, 937.5, 833.3, 625).", tier="expert", choices=tuning.SCHEDULERS),
    Param("vae_tiling", "bool", False, "Decode the video in tiles: much less VRAM at 720p, slightly slower.",
          tier="expert"),
    Param("vae_tile_size", "int", 256, "Tile size in pixels.", tier="expert", minimum=64, maximum=1024,
          multiple_of=32),
    Param("vae_tile_stride", "int", 192, "Tile stride in pixels (< size leaves overlap to blend).",
          tier="expert", minimum=32, maximum=1024, multiple_of=32),
    *STEP_CACHE_PARAMS,
    Param("compile", "bool", False, "torch.compile the transformer blocks: slow first job, faster after.",
          tier="expert"),
    *MEMORY_PARAMS,
    vae_dtype_param("float32", "float32 is what diffusers recommends for Wan's VAE (a bf16 VAE leaves "
                    "artifacts on static backgrounds); it costs ~0.25 GB more than bf16."),
), checks=(_tiles_fit,))


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


def configure(pipe, params: dict) -> None:
    """Puts this job's expert settings on the (cached, shared) pipeline."""
    tuning.set_scheduler(pipe, params["scheduler"], params["flow_shift"])
    tuning.set_boundary_ratio(pipe, params["boundary_ratio"])
    tuning.set_step_cache(pipe, params["step_cache"], params["step_cache_threshold"])
    tuning.set_attention_backend(pipe, params["attention_backend"])
    tuning.set_vae_tiling(pipe, params["vae_tiling"], params["vae_tile_size"], params["vae_tile_stride"])


def apply_job_settings(ctx: JobContext, pipe, params: dict, loras, runs_on=None) -> bool:
    """Expert settings, compile and LoRAs for this job; returns whether both experts are in play.

    `runs_on` is the pipeline object that will be called when it is not `pipe` itself (SVI's view over
    the same modules); compiling is marked on the cached `pipe`, so it happens once per model.
    """
    target = runs_on if runs_on is not None else pipe
    configure(target, params)
    two_experts = getattr(target, "transformer_2", None) is not None and target.config.boundary_ratio is not None
    timesteps = tuning.planned_timesteps(target, params["num_inference_steps"])
    ctx.note(f"{params['scheduler']} scheduler, " + tuning.describe_timesteps(
        timesteps, target.config.boundary_ratio if two_experts else None))
    if params["compile"]:
        ctx.progress("compiling the transformers (first time only)")
        tuning.compile_experts(pipe)
    if loras:
        ctx.progress("applying LoRAs")
    apply_loras(target, list(loras), log=ctx.note)
    return two_experts


def run(ctx: JobContext, pipe, job: I2VInput, model_name: str, loras: list[LoraRequest] = (),
        extra_metadata: dict | None = None) -> JobResult:
    p = job.params
    two_experts = apply_job_settings(ctx, pipe, p, loras)

    def preview(step: int, tensors: dict) -> None:
        if p["preview_every"] and step % p["preview_every"] == 0 and "latents" in tensors:
            ctx.output("preview", data=video_latents_to_strip(tensors["latents"]))

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
        callback_on_step_end=ctx.step_callback(p["num_inference_steps"], on_step=preview),
        output_type="np",
    )
    frames = output.frames[0]
    ctx.check_cancelled()
    check_frames(frames)
    ctx.progress("writing video")
    metadata = {
        "workflow": "i2v", "diffbox_version": __version__, "job_id": ctx.job_id, "model": model_name,
        "params": p, "model_defaults": tuning.model_defaults(pipe),
        "loras": [{"name": l.name, "sha256": file_sha256(l.path), "weight_high": l.weight_high,
                   "weight_low": l.weight_low} for l in loras],
        "frames": int(len(frames)), "width": p["width"], "height": p["height"], "fps": p["fps"],
        **(extra_metadata or {}),
    }
    video = write_video(frames, ctx.outdir / "video.mp4", p["fps"], metadata)
    write_metadata(ctx.outdir, metadata)
    return JobResult(outputs=[str(video)], metadata=metadata)


WORKFLOW = Workflow(
    name="i2v", title="Image → Video", spec=SPEC,
    inputs=(Input("image", "image", "Start image"), Input("end_image", "image", "End image", optional=True)),
    outputs=(Output("video", "video", "Video"),),
    prepare=prepare, run=run, base_model=BASE_MODEL, pipeline_classes=PIPELINE_CLASSES,
    # Sizes a CPU renders in a couple of seconds with the demo twins.
    demo_defaults={"width": 128, "height": 128, "num_frames": 17, "num_inference_steps": 8, "model": "demo/wan22-i2v"},
    size_presets=RESOLUTION_PRESETS, lora_weights=("weight_high", "weight_low"), live_preview=True,
    description="Wan 2.2 image-to-video: a start image (and optionally a last frame) and a prompt in, an mp4 out.",
)
