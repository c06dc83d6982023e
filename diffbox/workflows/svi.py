"""SVI 2.0 Pro: endless video from Wan 2.2 I2V A14B as a chain of clips, one finished clip at a time.

SVI 2.0 Pro is only a pair of LoRAs (high-noise, low-noise) plus this clip loop, as in the official
inference (vita-epfl/Stable-Video-Infinity, branch svi_wan22, diffsynth/pipelines/wan_video_svi_pro.py):
- every clip is conditioned on y = [anchor latent, last M *denoised* latents of the previous clip
  (none for clip 0), zeros…] in normalized latent space, with the mask set on the anchor latent
  only. The anchor is the user's image encoded alone; decoded frames are never re-encoded.
- every clip gets its own seed (seed + index·SEED_STRIDE) and its own prompt (prompts[index], the
  last one repeating); one negative prompt for all.
- clip 0 is kept whole; every later clip drops its first 1 + 4·M frames (the anchor frame and the
  frames decoded from the motion latents). No blending.

The last clip's latents and the anchor latent are saved after every clip (svi_state.safetensors),
so Stop, an error or a finished run can be extended later with new prompts, seamlessly.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from diffbox import __version__
from diffbox.engine import tuning
from diffbox.engine.loras import LoraRequest, file_sha256
from diffbox.engine.preview import video_latents_to_strip
from diffbox.engine.runner import Cancelled, JobContext, JobResult
from diffbox.engine.svi_pipeline import decode, encode_anchor, svi_view
from diffbox.params import InvalidParams, Param, SEED_MAX
from diffbox.store import WriteFailed, likely_cause
from diffbox.workflows import i2v
from diffbox.workflows.images import cover, load_image
from diffbox.workflows.outputs import (META_KEY, check_frames, checked_write, expect_frames, readable_frames, to_uint8,
                                       write_metadata, write_png, write_video)
from diffbox.workflows.workflow import Input, Output, Resolved, Workflow

log = logging.getLogger(__name__)

PIPELINE_CLASSES = i2v.PIPELINE_CLASSES
BASE_MODEL = i2v.BASE_MODEL
SEED_STRIDE = 1_000_003  # a large prime: seed 7's clip 1 never reuses seed 8's clip 0 noise
STATE_FILE = "svi_state.safetensors"
ANCHOR_FILE = "anchor.png"
STITCHED_FILE = "video.mp4"

# What the "distill preset" sets: LightX2V / Lightning LoRAs are trained for few Euler steps (on Wan's
# grid, tuning.WanEulerScheduler) at CFG 1. 6 steps split 3 + 3 at the 0.875 switch, as SVI's ComfyUI workflow.
DISTILL_PRESET = {"num_inference_steps": 6, "guidance_scale": 1.0, "guidance_scale_2": 1.0,
                  "scheduler": "euler", "flow_shift": 5.0}

# The official SVI 2.0 Pro recipe (vita-epfl/Stable-Video-Infinity, branch svi_wan22: inference_svi_2.0_pro.py,
# DiffSynth's WanVideoSviProPipeline, and the README command): DiffSynth's Wan Euler sampler (= "euler" here,
# the same sigma grid) at shift 5, 50 steps, expert switch at t = 875, one CFG of 4.0 for both experts,
# 81 frames per clip, 1 motion latent, videos saved at 15 fps, both LoRAs at weight 1. SVI's own defaults
# are this recipe: the LoRAs were trained and evaluated with it, and I2V's defaults (UniPC, 40 steps,
# CFG 3.5, switch 0.9) are Wan's plain image-to-video settings, not SVI's.
OFFICIAL_RECIPE = {"scheduler": "euler", "flow_shift": 5.0, "num_inference_steps": 50, "boundary_ratio": 0.875,
                   "guidance_scale": 4.0, "guidance_scale_2": 4.0, "num_frames": 81, "num_motion_latents": 1,
                   "fps": 15, "svi_weight_high": 1.0, "svi_weight_low": 1.0}


def clean_prompt(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {type(value).__name__}")
    if len(value) > 4000 or "\x00" in value:
        raise ValueError("must be at most 4000 characters of text")
    return value.strip()


def _motion_fits(values: dict) -> dict:
    latents = (values["num_frames"] - 1) // 4 + 1
    if values["num_motion_latents"] > latents - 2:
        return {"num_motion_latents": f"must be at most {max(latents - 2, 0)} for {values['num_frames']} frames "
                                      "per clip (the anchor and at least one new latent need room)"}
    return {}


SPEC = i2v.SPEC.extend(
    Param("prompts", "list", [""], "The prompt timeline: clip k uses prompts[k]; the last prompt repeats when "
          "there are more clips than prompts.", label="Prompts (one per clip)", item=clean_prompt, max_items=1000),
    replace(i2v.SPEC["num_frames"], help="Frames per clip, 4n+1 (SVI was trained on 81). Every clip after the "
            "first adds num_frames − 1 − 4·num_motion_latents new frames.", label="Frames per clip"),
    Param("num_clips", "int", 10, "How many clips to chain (ignored in infinite mode).", minimum=1, maximum=1000),
    Param("infinite", "bool", False, "Keep generating clips until Stop; everything finished is kept and "
          "stitched.", label="Infinite mode (run until Stop)"),
    Param("svi_lora_high", "str", "", "SVI 2.0 Pro LoRA for the high-noise expert, from the library: "
          "SVI_Wan2.2-I2V-A14B_high_noise_lora_v2.0_pro.safetensors (vita-video-gen/svi-model, version-2.0/) "
          "or Kijai's SVI_v2_PRO_Wan2.2-I2V-A14B_HIGH_lora_rank_128_fp16.safetensors. Empty = none.",
          label="SVI LoRA (high noise)"),
    Param("svi_lora_low", "str", "", "SVI 2.0 Pro LoRA for the low-noise expert: "
          "SVI_Wan2.2-I2V-A14B_low_noise_lora_v2.0_pro.safetensors or Kijai's "
          "SVI_v2_PRO_Wan2.2-I2V-A14B_LOW_lora_rank_128_fp16.safetensors. Empty = none.",
          label="SVI LoRA (low noise)"),
    Param("svi_weight_high", "float", 1.0, "Weight of the high-noise SVI LoRA (official: 1).", tier="advanced",
          minimum=0.0, maximum=2.0, step=0.05),
    Param("svi_weight_low", "float", 1.0, "Weight of the low-noise SVI LoRA (official: 1).", tier="advanced",
          minimum=0.0, maximum=2.0, step=0.05),
    Param("distill_lora", "str", "", "Optional LightX2V / Wan2.2-Lightning distill LoRA from the library: "
          "far fewer steps at CFG ~1 (the 'Distill preset' button sets steps 6, CFG 1, Euler). Empty = off.",
          tier="advanced"),
    Param("distill_weight_high", "float", 0.5, "Distill LoRA weight on the high-noise expert; 0.5–0.6 keeps "
          "more motion (SVI tips).", tier="advanced", minimum=0.0, maximum=2.0, step=0.05),
    Param("distill_weight_low", "float", 1.0, "Distill LoRA weight on the low-noise expert.", tier="advanced",
          minimum=0.0, maximum=2.0, step=0.05),
    Param("num_motion_latents", "int", 1, "Latents of the previous clip carried into the next (M). SVI 2.0 Pro "
          "was trained with 1; every later clip drops its first 1 + 4·M frames.", tier="advanced",
          minimum=1, maximum=16),
    Param("color_match", "bool", False, "Match each clip's colours to the anchor image (against the slow "
          "colour drift some users see); off by default.", tier="advanced"),
    workflow="svi", drop=("prompt", "num_frames"), checks=(_motion_fits,),
).first("prompts")  # the prompt timeline takes the place of I2V's prompt at the top of the form
_SVI_HELP = {
    "fps": "Frames per second of the mp4 (the official SVI 2.0 Pro videos are saved at 15).",
    "boundary_ratio": "Where the high-noise expert hands over (t/1000); 0.875 is the official SVI 2.0 Pro "
                      "setting; empty = the model's (0.9 for A14B I2V).",
    "num_inference_steps": "Denoising steps per clip, shared by both experts (official: 50).",
}
SPEC = replace(SPEC, params=tuple(replace(p, help=_SVI_HELP[p.name]) if p.name in _SVI_HELP else p
                                  for p in SPEC.params)).with_defaults(OFFICIAL_RECIPE)


@dataclass(frozen=True)
class Resume:
    """Where an earlier SVI job stopped: what Extend continues from."""
    job_id: str
    anchor: torch.Tensor        # [1, 16, 1, h, w], normalized
    last: torch.Tensor          # the last clip's denoised latents [1, 16, T, h, w], normalized
    clips_done: int             # clip indices already used (seeds and prompts continue from here)
    stitched: Path | None       # the earlier stitched video, which the extension continues


@dataclass(frozen=True)
class SVIInput:
    params: dict[str, Any]
    image: Image.Image
    resume: Resume | None = None


def prepare(values: dict | None, image: Any, spec=SPEC) -> SVIInput:
    """Validates everything before any GPU work; raises InvalidParams naming each bad field."""
    params = spec.validate(values)
    return SVIInput(params, cover(load_image(image, "image"), params["width"], params["height"]))


def prepare_extend(values: dict | None, outdir: Path, job_id: str, old_params: dict, spec=SPEC) -> SVIInput:
    """A new run that continues job `job_id` (its saved latents) with new prompts; the old job's
    settings are the starting point, `values` override them. The size is the saved video's."""
    state_path = Path(outdir) / STATE_FILE
    if not state_path.is_file():
        raise InvalidParams({"job_id": f"job {job_id} saved no SVI latents to continue from"})
    state, info = load_state(state_path)
    values = dict(values or {})
    for name in ("width", "height"):
        if name in values and values[name] != info[name]:
            raise InvalidParams({name: f"must stay {info[name]} to continue job {job_id} (its video's size)"})
    base = {k: v for k, v in (old_params or {}).items() if k in spec}
    params = spec.validate({**base, **values, "width": info["width"], "height": info["height"]})
    if params["num_motion_latents"] > state["last"].shape[2] - 1:
        raise InvalidParams({"num_motion_latents": f"job {job_id} saved {state['last'].shape[2]} latents; "
                                                   f"at most {state['last'].shape[2] - 1} can carry over"})
    stitched = Path(outdir) / STITCHED_FILE
    resume = Resume(job_id, state["anchor"], state["last"], int(info["clips_done"]),
                    stitched if stitched.is_file() else None)
    image = load_image(str(Path(outdir) / ANCHOR_FILE), "job_id")
    return SVIInput(params, cover(image, params["width"], params["height"]), resume)


# ---------------------------------------------------------------------------------------------
# The conditioning (the part that is easy to get subtly wrong)
# ---------------------------------------------------------------------------------------------


def match_colors(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-channel mean/std of the clip moved onto the anchor's (a Reinhard transfer in RGB)."""
    mean, std = frames.mean(axis=(0, 1, 2)), frames.std(axis=(0, 1, 2)) + 1e-6
    ref_mean, ref_std = reference.mean(axis=(0, 1)), reference.std(axis=(0, 1)) + 1e-6
    return np.clip((frames - mean) / std * ref_std + ref_mean, 0.0, 1.0).astype(np.float32)


def clip_seed(seed: int, index: int) -> int:
    return (seed + index * SEED_STRIDE) % (SEED_MAX + 1)


def clip_prompt(prompts: list[str], index: int) -> str:
    return prompts[min(index, len(prompts) - 1)] if prompts else ""


# ---------------------------------------------------------------------------------------------
# Files: the resumable state, the stitched video
# ---------------------------------------------------------------------------------------------


def save_state(outdir: Path, anchor: torch.Tensor, last: torch.Tensor, info: dict) -> Path:
    path = Path(outdir) / STATE_FILE
    tensors = {"anchor": anchor.detach().float().cpu().contiguous(), "last": last.detach().float().cpu().contiguous()}
    with checked_write(path) as partial:
        try:
            save_file(tensors, str(partial), metadata={"diffbox_svi": json.dumps(info)})
        except SafetensorError as exc:  # its I/O errors are no OSErrors; their text ends in "(os error N)"
            code = re.search(r"os error (\d+)", str(exc))
            raise OSError(int(code.group(1)) if code else None, str(exc)) from None
        with safe_open(str(partial), framework="pt") as written:  # reads back the header: every tensor is there
            if {k: list(written.get_slice(k).get_shape()) for k in written.keys()} != \
                    {k: list(t.shape) for k, t in tensors.items()}:
                raise WriteFailed(f"could not write {path.name}: it does not read back whole")
    return path


def load_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), framework="pt") as handle:
        info = json.loads(handle.metadata()["diffbox_svi"])
    return load_file(str(path)), info


def stitch(parts: list[Path], path: Path, metadata: dict) -> Path:
    """Joins the clip files (same codec and size) without re-encoding; the metadata goes in the comment.
    The joined file takes its name only once it holds every frame of its parts."""
    path = Path(path)
    comment = json.dumps({META_KEY: metadata}, separators=(",", ":"), ensure_ascii=True, default=str)
    with checked_write(path) as partial:
        listing = partial.with_name(partial.name + ".txt")
        try:
            listing.write_text("".join("file '" + str(Path(part).resolve()).replace("'", "'\\''") + "'\n"
                                       for part in parts))
            result = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "concat",
                                     "-safe", "0", "-i", str(listing), "-c", "copy", "-movflags", "+faststart",
                                     "-metadata", f"comment={comment}", "-f", "mp4", str(partial)],
                                    capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise WriteFailed(f"could not stitch the clips into {path.name}: ffmpeg took over 10 minutes") from None
        finally:
            listing.unlink(missing_ok=True)
        if result.returncode != 0:  # killed by a signal (SIGXFSZ), ffmpeg says nothing
            said = (result.stderr.strip().splitlines() or [""])[-1].replace(str(path.parent) + "/", "")
            reason = f"ffmpeg said {said[-200:]!r}" if said else likely_cause(path.parent, "ffmpeg was stopped")
            raise WriteFailed(f"could not stitch the clips into {path.name}: {reason}")
        expect_frames(partial, sum(readable_frames(Path(p), decode=False) for p in parts), path.name, decode=False)
    return path


# ---------------------------------------------------------------------------------------------
# The clip loop
# ---------------------------------------------------------------------------------------------


def run(ctx: JobContext, pipe, job: SVIInput, model_name: str, loras: list[LoraRequest] = (),
        extra_metadata: dict | None = None) -> JobResult:
    p = job.params
    view = svi_view(pipe)
    two_experts = i2v.apply_job_settings(ctx, pipe, p, loras, runs_on=view)

    ctx.progress("encoding the anchor image")
    anchor_pixels = np.asarray(job.image, dtype=np.float32) / 255.0
    if job.resume:
        anchor, previous, first_index = job.resume.anchor, job.resume.last, job.resume.clips_done
    else:
        anchor, previous, first_index = encode_anchor(view, job.image, p["height"], p["width"]), None, 0
    _save_image(job.image, ctx.outdir / ANCHOR_FILE)

    steps, motion_count = p["num_inference_steps"], p["num_motion_latents"]
    drop = 1 + 4 * motion_count
    total = None if p["infinite"] else p["num_clips"]
    clips: list[Path] = []
    seeds: list[int] = []
    frames_added = 0
    base = {"workflow": "svi", "diffbox_version": __version__, "job_id": ctx.job_id, "model": model_name,
            "params": p, "model_defaults": tuning.model_defaults(pipe), "seed_stride": SEED_STRIDE,
            "loras": [{"name": l.name, "sha256": file_sha256(l.path), "weight_high": l.weight_high,
                       "weight_low": l.weight_low} for l in loras],
            "width": p["width"], "height": p["height"], "fps": p["fps"],
            "resumed_from": job.resume.job_id if job.resume else None, **(extra_metadata or {})}

    def finish(stopped: str | None) -> JobResult:
        # The view's own call cannot put model-offloaded weights back: those hooks belong to the cached pipe.
        pipe.maybe_free_model_hooks()
        state = ctx.outdir / STATE_FILE
        metadata = {**base, "clips": len(clips), "clip_seeds": seeds, "stopped": stopped,
                    "frames_added": frames_added, "state_file": str(state) if state.exists() else None}
        parts = ([job.resume.stitched] if job.resume and job.resume.stitched else []) + clips
        if not parts:
            write_metadata(ctx.outdir, metadata)
            return JobResult(outputs=[], metadata=metadata)
        ctx.progress("stitching the clips")
        video = stitch(parts, ctx.outdir / STITCHED_FILE, metadata)
        write_metadata(ctx.outdir, metadata)
        return JobResult(outputs=[str(video), *map(str, clips), *([str(state)] if state.exists() else [])],
                         metadata=metadata)

    def preview(step: int, tensors: dict) -> None:
        if p["preview_every"] and step % p["preview_every"] == 0 and "latents" in tensors:
            ctx.output("preview", data=video_latents_to_strip(tensors["latents"]))

    k = 0
    try:
        while total is None or k < total:
            index = first_index + k
            seed, prompt = clip_seed(p["seed"], index), clip_prompt(p["prompts"], k)
            view.svi_anchor = anchor
            view.svi_motion = previous[:, :, -motion_count:] if previous is not None else None
            stage = f"clip {k + 1}/{total or '∞'}"
            latents = view(
                image=job.image, prompt=prompt, negative_prompt=p["negative_prompt"] or None,
                height=p["height"], width=p["width"], num_frames=p["num_frames"], num_inference_steps=steps,
                guidance_scale=p["guidance_scale"], guidance_scale_2=p["guidance_scale_2"] if two_experts else None,
                generator=torch.Generator("cpu").manual_seed(seed),
                callback_on_step_end=ctx.step_callback(steps, stage=stage, on_step=preview), output_type="latent",
            ).frames.float().cpu()
            ctx.progress(f"{stage}, decoding")
            frames = decode(view, latents)
            check_frames(frames)
            if p["color_match"]:
                frames = match_colors(frames, anchor_pixels)
            kept = frames if index == 0 else frames[drop:]
            clip_meta = {**base, "clip": index, "seed": seed, "prompt": prompt, "frames": int(len(kept)),
                         "dropped_frames": 0 if index == 0 else drop}
            path = write_video(to_uint8(kept), ctx.outdir / f"clip_{index:04d}.mp4", p["fps"], clip_meta)
            previous = latents
            save_state(ctx.outdir, anchor, latents, {"clips_done": index + 1, "width": p["width"],
                                                     "height": p["height"], "model": model_name})
            clips.append(path)
            seeds.append(seed)
            frames_added += len(kept)
            ctx.output("clip", path, data=clip_meta)
            k += 1
            ctx.check_cancelled()
    except Cancelled:
        raise Cancelled(_finish_quietly(finish, "stopped by the user", ctx)) from None
    except Exception:
        result = _finish_quietly(finish, "failed", ctx)
        if result is not None:
            ctx.job.partial_outputs[:] = result.outputs
        raise
    return finish(None)


def _finish_quietly(finish, reason: str, ctx: JobContext) -> JobResult | None:
    """On Stop or an error the finished clips are still stitched; a failure here must not hide the first."""
    try:
        return finish(reason)
    except Exception:
        ctx.log.exception("could not stitch the finished clips after the run was %s", reason)
        return None


def _save_image(image: Image.Image, path: Path) -> None:
    write_png(image, path)


def resolve(services, workflow: Workflow, job: SVIInput) -> Resolved:
    """The model, then the LoRAs: the SVI pair (each on its own expert), the distill LoRA, then the user's.
    One message names every field whose LoRA is missing (a preset's usually lacks both of the pair)."""
    params = job.params
    model = services.resolve_model(workflow.name, params["model"])
    named = [("svi_lora_high", {"weight_high": params["svi_weight_high"], "weight_low": 0.0}),
             ("svi_lora_low", {"weight_high": 0.0, "weight_low": params["svi_weight_low"]}),
             ("distill_lora", {"weight_high": params["distill_weight_high"],
                               "weight_low": params["distill_weight_low"]})]
    wanted = [(name, [{"name": params[name], **weights}]) for name, weights in named if params[name]]
    loras, errors = [], {}
    for field_name, entries in [*wanted, ("loras", params["loras"])]:
        try:
            loras += services.resolve_loras(BASE_MODEL, entries)
        except InvalidParams as exc:
            errors[field_name] = exc.errors["loras"]
    if errors:
        raise InvalidParams(errors)
    return Resolved(model.name, services.load_source(model), tuple(loras),
                    record={"extends": job.resume.job_id} if job.resume else {})


WORKFLOW = Workflow(
    name="svi", title="SVI 2.0 Pro", spec=SPEC,
    inputs=(Input("image", "image", "Anchor image"),),
    outputs=(Output("video", "video", "Video"),),
    prepare=prepare, run=run, resolve=resolve, base_model=BASE_MODEL, pipeline_classes=PIPELINE_CLASSES,
    # Any Wan LoRA pair stands in for the SVI 2.0 Pro pair (no real SVI files offline).
    demo_defaults={"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 4, "num_clips": 3,
                   "model": "demo/wan22-i2v", "svi_lora_high": "demo/loras/wan-lora-high.safetensors",
                   "svi_lora_low": "demo/loras/wan-lora-low.safetensors"},
    size_presets=i2v.RESOLUTION_PRESETS, lora_weights=("weight_high", "weight_low"), live_preview=True,
    description="SVI 2.0 Pro endless video: a chain of Wan 2.2 clips, streamed as each one finishes.",
)
