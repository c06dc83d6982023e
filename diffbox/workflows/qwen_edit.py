"""Qwen-Image-Edit: generate from text, edit with 1..N reference images, or inpaint a masked area.

One loaded model serves every mode (engine/qwen_pipes.py builds the other pipeline classes over
the same components). The route follows the loaded model's own class, i.e. how it was trained:
- generate: QwenImagePipeline (QwenImageControlNetPipeline with a ControlNet);
- edit: a Plus model (2509, 2511: model_index class QwenImageEditPlusPipeline) edits through
  QwenImageEditPlusPipeline with one reference or several; the original Qwen-Image-Edit through
  QwenImageEditPipeline with one, Plus with several (order matters: the prompt can say "picture 2");
- inpaint: over the first image, white mask = repaint; QwenImageEditPlusInpaintPipeline for a Plus
  model, QwenImageEditInpaintPipeline for the original. The original pixels are composited back
  outside the (feathered) mask, so untouched areas stay pixel-exact. The mask as given (before invert,
  feather and crop, which the params redo) is saved as mask.png beside the images and named in their
  recipe, so the first image + mask.png + the params replay the job.

The edit pipelines condition at a fixed ~1 MP whatever the input (hard-coded in diffusers), and
inpaint ignores height/width; outputs are resized to the asked size afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from diffbox import __version__, base_models
from diffbox.engine import qwen_pipes, tuning
from diffbox.engine.loras import LoraRequest, apply_loras, file_sha256
from diffbox.engine.runner import JobContext, JobResult
from diffbox.params import InvalidParams, Param, ParamSpec
from diffbox.workflows.common import MEMORY_PARAMS, STEP_CACHE_PARAMS, lora_entry, vae_dtype_param
from diffbox.workflows.images import file_path, load_image
from diffbox.workflows.masks import resolve_mask
from diffbox.workflows.masks import composite as composite_original
from diffbox.workflows.outputs import check_frames, write_metadata, write_png
from diffbox.workflows.workflow import Input, Output, Resolved, Workflow

EDIT_CLASSES = ("QwenImageEditPipeline", "QwenImageEditPlusPipeline", "QwenImageEditInpaintPipeline")
TEXT_TO_IMAGE_CLASSES = ("QwenImagePipeline",)
PIPELINE_CLASSES = EDIT_CLASSES
BASE_MODEL = base_models.QWEN_EDIT
MODES = ("generate", "edit", "inpaint")
MAX_REFERENCES = 6
# Qwen works at ~1 MP; bigger inputs only cost time and memory, so they are scaled down (with a note).
MAX_SIDE = 2048
MASK_FILE = "mask.png"  # an inpaint job's mask, saved beside its images

# ~1 MP sizes (multiples of 16) for the common aspect ratios, as width × height.
RESOLUTION_PRESETS: dict[str, tuple[int, int]] = {
    "1024×1024 square": (1024, 1024),
    "1152×864 landscape 4:3": (1152, 864),
    "864×1152 portrait 3:4": (864, 1152),
    "1248×832 landscape 3:2": (1248, 832),
    "832×1248 portrait 2:3": (832, 1248),
    "1344×768 landscape 16:9": (1344, 768),
    "768×1344 portrait 9:16": (768, 1344),
}

def _steps_for_scheduler(values: dict) -> dict:
    # Qwen's own scheduler stretches its sigmas to a terminal shift by dividing by the last step's
    # distance from 1, which is zero when there is one step: every pixel would come out NaN.
    if values["scheduler"] == "model" and values["num_inference_steps"] < 2:
        return {"num_inference_steps": "must be at least 2 with the model's scheduler (1 step only with the "
                                       "lightning scheduler and a Lightning LoRA)"}
    return {}


def _guidance_window(values: dict) -> dict:
    if values["control_guidance_start"] >= values["control_guidance_end"]:
        return {"control_guidance_end": "must be greater than control_guidance_start"}
    return {}


SPEC = ParamSpec("qwen_edit", (
    Param("prompt", "text", "", "What to make, or how to change the reference images.", label="Prompt"),
    Param("mode", "choice", "edit", "generate: text to image · edit: change or combine the reference images · "
          "inpaint: repaint only the masked area of the first image.", choices=MODES),
    Param("seed", "seed", -1, "-1 picks a random seed; the seed actually used is saved with the images."),
    Param("width", "int", 1024, "Output width in pixels (multiple of 16).", minimum=16, maximum=MAX_SIDE,
          step=16, multiple_of=16),
    Param("height", "int", 1024, "Output height in pixels (multiple of 16).", minimum=16, maximum=MAX_SIDE,
          step=16, multiple_of=16),
    Param("match_input_size", "bool", False, "Output at the first reference image's size instead of "
          "width × height."),
    Param("model", "str", "", "Qwen-Image-Edit model from the local library; empty = the first one found. "
          "Generate mode prefers a Qwen-Image text-to-image model when the library has one."),
    Param("loras", "list", [], "LoRAs from the library, each with a weight.", item=lora_entry(("weight",)),
          max_items=8),
    Param("num_inference_steps", "int", 30, "Denoising steps.", tier="advanced", minimum=1, maximum=200),
    Param("true_cfg_scale", "float", 4.0, "Prompt strength (classifier-free guidance; needs a negative "
          "prompt, so an empty one is sent as a single space, as the model card does).", tier="advanced",
          minimum=1.0, maximum=20.0, step=0.1),
    Param("negative_prompt", "text", "", "What to steer away from.", tier="advanced"),
    Param("strength", "float", 0.8, "Inpaint: how much of the masked area is redrawn (1 = from scratch).",
          tier="advanced", minimum=0.01, maximum=1.0, step=0.01),
    Param("num_images", "int", 1, "Images per run (same prompt, different noise).", tier="advanced",
          minimum=1, maximum=4),
    Param("mask_invert", "bool", False, "Inpaint: repaint everything except the painted area.",
          tier="advanced"),
    Param("mask_feather", "int", 0, "Inpaint: soften the mask edge by this many pixels.", tier="advanced",
          minimum=0, maximum=64),
    Param("keep_unmasked", "bool", True, "Inpaint: paste the original pixels back outside the mask, so "
          "untouched areas stay exact instead of passing through the VAE.", tier="advanced"),
    Param("controlnet", "str", "", "Generate mode: a Qwen-Image ControlNet from the library (empty = none); "
          "needs a control image.", tier="advanced"),
    Param("controlnet_conditioning_scale", "float", 1.0, "How strongly the control image steers.",
          tier="advanced", minimum=0.0, maximum=2.0, step=0.05),
    Param("control_guidance_start", "float", 0.0, "Fraction of the steps after which the ControlNet starts.",
          tier="advanced", minimum=0.0, maximum=1.0, step=0.01),
    Param("control_guidance_end", "float", 1.0, "Fraction of the steps after which the ControlNet stops.",
          tier="advanced", minimum=0.0, maximum=1.0, step=0.01),
    Param("scheduler", "choice", "model", "model: the model's own scheduler. lightning: the one the "
          "Qwen-Image-Lightning LoRAs were distilled with (a fixed shift of 3); use it with those LoRAs.",
          tier="expert", choices=tuning.QWEN_SCHEDULERS),
    Param("vae_tiling", "bool", False, "Decode in tiles: less VRAM for large images, slightly slower.",
          tier="expert"),
    *STEP_CACHE_PARAMS,
    *MEMORY_PARAMS,
    vae_dtype_param("auto", "Qwen-Image ships its VAE in bf16 and runs it in the model's dtype."),
), checks=(_guidance_window, _steps_for_scheduler))


@dataclass(frozen=True)
class QwenEditInput:
    params: dict[str, Any]
    images: list[Image.Image]              # references, in order (inpaint: the one image, at out_size)
    mask: Image.Image | None               # inpaint: hard mask (255 = repaint) at out_size
    soft_mask: Image.Image | None          # the same, feathered: what the composite uses
    control_image: Image.Image | None
    out_size: tuple[int, int]              # (width, height) of the saved images
    notes: list[str] = field(default_factory=list)
    given_mask: Image.Image | None = None  # inpaint: the mask as given, at the image's size; saved for replay

    @property
    def gen_size(self) -> tuple[int, int]:
        return latent_grid(self.out_size)


def latent_grid(size: tuple[int, int]) -> tuple[int, int]:
    """What the pipeline is asked for: a size rounded down to 16 (8× VAE, 2× patches)."""
    return max(16, size[0] - size[0] % 16), max(16, size[1] - size[1] % 16)


def load_reference(value: Any, field_name: str, notes: list[str]) -> Image.Image:
    """An RGB image; CMYK / 16-bit / alpha are converted and oversized ones scaled down, with a note."""
    mode = value.mode if isinstance(value, Image.Image) else _peek_mode(value)
    image = load_image(value, field_name)
    if mode and mode not in ("RGB", "RGBA", "L", "P"):
        notes.append(f"{field_name}: converted from {mode} to 8-bit RGB")
    if max(image.size) > MAX_SIDE:
        before = image.size
        image = ImageOps.contain(image, (MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        notes.append(f"{field_name}: {before[0]}×{before[1]} scaled down to {image.width}×{image.height} "
                     f"(Qwen works at ~1 MP; larger only costs time)")
    return image


def _peek_mode(value: Any) -> str | None:
    path = file_path(value)
    if path is None:
        return None
    try:
        with Image.open(path) as image:
            return image.mode
    except Exception:
        return None  # load_image reports it with the field name


def _as_list(images: Any) -> list:
    if images is None or images == "":
        return []
    if isinstance(images, (list, tuple)):
        return [i for i in images if i is not None and i != ""]
    return [images]


def prepare(values: dict | None, images: Any = None, mask: Any = None, control_image: Any = None,
            spec: ParamSpec = SPEC) -> QwenEditInput:
    """Validates everything before any GPU work; raises InvalidParams naming each bad field."""
    params = spec.validate(values)
    mode, notes = params["mode"], []
    raw = _as_list(images)
    if len(raw) > MAX_REFERENCES:
        raise InvalidParams({"images": f"at most {MAX_REFERENCES} reference images, got {len(raw)}"})
    refs = [load_reference(value, f"images[{index}]", notes) for index, value in enumerate(raw)]
    has_mask = mask is not None and mask != "" and mask != {}
    if has_mask and not refs:
        raise InvalidParams({"mask": "a mask needs an image to paint on: add the image under images"})
    if mode == "edit" and not refs:
        raise InvalidParams({"images": "edit mode needs at least one reference image"})
    if mode == "inpaint":
        if len(refs) != 1:
            raise InvalidParams({"images": f"inpaint mode repaints exactly one image, got {len(refs)}"})
        if not has_mask:
            raise InvalidParams({"mask": "inpaint mode needs a mask: paint the area to repaint (white)"})
    if mode == "generate" and refs:
        notes.append(f"generate mode ignores the {len(refs)} reference image(s)")
    if has_mask and mode != "inpaint":
        notes.append(f"the mask is only used in inpaint mode; ignored in {mode} mode")
    if params["controlnet"] and mode != "generate":
        raise InvalidParams({"controlnet": "only generate mode can use a ControlNet (diffusers has no Qwen "
                                           "edit pipeline with ControlNet)"})
    if params["controlnet"] and control_image in (None, ""):
        raise InvalidParams({"control_image": "a ControlNet needs a control image (pose, depth, edges…)"})
    control = load_reference(control_image, "control_image", notes) if params["controlnet"] else None
    if control_image not in (None, "") and not params["controlnet"]:
        notes.append("control image ignored: no controlnet chosen")

    out_size = (params["width"], params["height"])
    if params["match_input_size"]:
        if refs and mode != "generate":
            out_size = refs[0].size
        elif control is not None:
            out_size = control.size
        else:
            notes.append("match_input_size: no input image to match; used width × height")

    hard = soft = given = None
    if mode == "inpaint":
        source = refs[0]
        given, hard, soft = resolve_mask(mask, source.size, out_size, params["mask_invert"], params["mask_feather"])
        if hard is None:
            raise InvalidParams({"mask": "is empty (all black): paint the area to repaint in white"
                                         + (" (after invert, nothing is left)" if params["mask_invert"] else "")})
        if source.size != out_size:
            source = ImageOps.fit(source, out_size, Image.Resampling.LANCZOS)
        refs = [source]
    if control is not None:
        control = ImageOps.fit(control, latent_grid(out_size), Image.Resampling.LANCZOS)
    return QwenEditInput(params, refs, hard, soft, control, out_size, notes, given)


def pipeline_class(mode: str, references: int, with_controlnet: bool, model_class: str) -> str:
    """The pipeline class a job runs through, chosen by the loaded model's own class (module docstring)."""
    plus = model_class in qwen_pipes.PLUS_CLASSES
    if mode == "generate":
        return "QwenImageControlNetPipeline" if with_controlnet else "QwenImagePipeline"
    if mode == "inpaint":
        return "QwenImageEditPlusInpaintPipeline" if plus else "QwenImageEditInpaintPipeline"
    return "QwenImageEditPlusPipeline" if plus or references > 1 else "QwenImageEditPipeline"


def configure(pipe, params: dict) -> None:
    """Puts this job's expert settings on the (cached, shared) pipeline."""
    tuning.set_step_cache(pipe, params["step_cache"], params["step_cache_threshold"])
    tuning.set_attention_backend(pipe, params["attention_backend"])
    if params["vae_tiling"]:
        pipe.vae.enable_tiling()
    else:
        pipe.vae.disable_tiling()


def run(ctx: JobContext, pipe, job: QwenEditInput, model_name: str, loras: list[LoraRequest] = (),
        controlnet_path: Path | None = None, extra_metadata: dict | None = None) -> JobResult:
    p, mode = job.params, job.params["mode"]
    for note in job.notes:
        ctx.note(note)
    configure(pipe, p)
    if loras:
        ctx.progress("applying LoRAs")
    apply_loras(pipe, list(loras), log=ctx.note)  # on the shared transformer: every view below sees them
    controlnet = None
    if controlnet_path is not None:
        ctx.progress("loading ControlNet")
        controlnet = qwen_pipes.controlnet_for(pipe, controlnet_path)
    class_name = pipeline_class(mode, len(job.images), controlnet is not None, type(pipe).__name__)
    runner = qwen_pipes.view(pipe, class_name, controlnet)
    tuning.set_qwen_scheduler(runner, p["scheduler"])
    width, height = job.gen_size
    timesteps: list[float] = []
    report_step = ctx.step_callback(p["num_inference_steps"])

    def on_step_end(pipeline, index, timestep, tensors):
        timesteps.append(float(timestep))
        return report_step(pipeline, index, timestep, tensors)

    kwargs: dict[str, Any] = dict(
        # CFG runs only with a negative prompt, so an empty one is sent as " " (as the model card does).
        prompt=p["prompt"], negative_prompt=(p["negative_prompt"] or " ") if p["true_cfg_scale"] > 1 else None,
        true_cfg_scale=p["true_cfg_scale"],
        height=height, width=width, num_inference_steps=p["num_inference_steps"],
        num_images_per_prompt=p["num_images"], generator=torch.Generator("cpu").manual_seed(p["seed"]),
        callback_on_step_end=on_step_end, output_type="np",
    )
    if mode == "edit":
        kwargs["image"] = job.images if len(job.images) > 1 else job.images[0]
    elif mode == "inpaint":
        kwargs.update(image=job.images[0], mask_image=job.mask, strength=p["strength"])
    elif controlnet is not None:
        kwargs.update(control_image=job.control_image,
                      controlnet_conditioning_scale=p["controlnet_conditioning_scale"],
                      control_guidance_start=p["control_guidance_start"],
                      control_guidance_end=p["control_guidance_end"])
    try:
        arrays = runner(**kwargs).images
    finally:
        qwen_pipes.release_offload(pipe, runner)
    ctx.note(f"{class_name}, {p['scheduler']} scheduler, {tuning.describe_timesteps(timesteps)}")
    ctx.check_cancelled()
    check_frames(arrays, "image")
    ctx.progress("writing images")
    results = []
    for array in arrays:
        image = Image.fromarray((np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8), "RGB")
        if image.size != job.out_size:  # inpaint ignores height/width; other sizes were rounded to 16
            image = image.resize(job.out_size, Image.Resampling.LANCZOS)
        if mode == "inpaint" and p["keep_unmasked"]:
            image = composite_original(job.images[0], image, job.soft_mask)
        results.append(image)
    metadata = {
        "workflow": "qwen_edit", "diffbox_version": __version__, "job_id": ctx.job_id, "model": model_name,
        "pipeline": class_name, "params": p, "references": len(job.images),
        "loras": [{"name": l.name, "sha256": file_sha256(l.path), "weight": l.weight_high} for l in loras],
        "width": job.out_size[0], "height": job.out_size[1], "images": len(results), "notes": list(job.notes),
        **(extra_metadata or {}),
    }
    if job.given_mask is not None:
        metadata["mask"] = write_png(job.given_mask, ctx.outdir / MASK_FILE).name
    paths = [str(write_png(image, ctx.outdir / f"image-{index + 1}.png", {**metadata, "index": index}))
             for index, image in enumerate(results)]
    write_metadata(ctx.outdir, metadata)
    return JobResult(outputs=paths, metadata=metadata)


def resolve(services, workflow: Workflow, job: QwenEditInput) -> Resolved:
    """Generate mode prefers a Qwen-Image text-to-image model (the one named, else the first) over the edit
    model, which `model` usually names; every mode can fall back to the edit model. A ControlNet is a
    library name too; its path goes to run()."""
    params = job.params
    model = None
    if params["mode"] == "generate":
        text_to_image = [m for m in services.library_models() if m.pipeline_class in TEXT_TO_IMAGE_CLASSES]
        if text_to_image:
            model = next((m for m in text_to_image if m.name == params["model"]), text_to_image[0])
    model = model or services.resolve_model(workflow.name, params["model"])
    loras = services.resolve_loras(BASE_MODEL, [{"name": e["name"], "weight_high": e["weight"], "weight_low": 0.0}
                                                for e in params["loras"]])
    controlnet_path = None
    if params["controlnet"]:
        available = {m.name: m for m in services.qwen_controlnets()}
        if params["controlnet"] not in available:
            raise InvalidParams({"controlnet": f"{params['controlnet']!r} is not in the library; "
                                               f"available: {', '.join(sorted(available)) or 'none'}"})
        controlnet_path = Path(available[params["controlnet"]].path)
    return Resolved(model.name, services.load_source(model), tuple(loras), extra={"controlnet_path": controlnet_path})


WORKFLOW = Workflow(
    name="qwen_edit", title="Qwen Image Edit", spec=SPEC,
    inputs=(Input("images", "images", "Reference images", optional=True),
            Input("mask", "mask", "Mask (white = repaint)", optional=True),
            Input("control_image", "image", "Control image", optional=True)),
    outputs=(Output("results", "images", "Results"),),
    prepare=prepare, run=run, resolve=resolve, base_model=BASE_MODEL, pipeline_classes=PIPELINE_CLASSES,
    demo_defaults={"width": 64, "height": 64, "num_inference_steps": 4, "model": "demo/qwen-image-edit"},
    size_presets=RESOLUTION_PRESETS, lora_weights=("weight",),
    description="Qwen-Image-Edit: generate, edit with up to six references, or inpaint under a mask.",
)
