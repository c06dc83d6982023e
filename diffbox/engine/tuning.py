"""Per-job settings applied to a cached pipeline: scheduler, expert switch, step cache, attention,
VAE tiling, torch.compile. Each call sets the state fully, so one job's choice never leaks into
the next job on the same pipeline.

Schedulers, and why there are these:
- Wan "unipc": diffusers' UniPC with flow sigmas, what the -Diffusers repo ships.
- Wan "euler": flow-match Euler on Wan's own sigma grid, sigmas = linspace(1, 0, N+1)[:-1] shifted by
  σ' = sσ / (1 + (s−1)σ). It is the grid of Wan's reference sampler (get_sampling_sigmas), of
  DiffSynth's Wan scheduler (what the official SVI 2.0 Pro inference runs), and the one the
  4-step distill LoRAs were trained on: denoising_step_list 1000/750/500/250 at shift 5 gives
  t = [1000, 937.5, 833.3, 625]. diffusers' own Euler grid ends near σ=0 instead
  (linspace(1, 1/1000, N) → [1000, 910, 717, 24] at 4 steps), which the distill LoRAs never saw.
  WanImageToVideoPipeline takes no sigmas=, so the grid lives in a scheduler subclass.
- Qwen "model": the model's own scheduler config. Qwen "lightning": the config the
  Qwen-Image-Lightning LoRAs were distilled and published with (ModelTC/Qwen-Image-Lightning,
  generate_with_diffusers.py: base_shift = max_shift = log 3, "we use shift=3 in distillation",
  no shift_terminal), i.e. a fixed shift of 3 at every resolution.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from diffusers.hooks import FirstBlockCacheConfig

log = logging.getLogger(__name__)

SCHEDULERS = ("unipc", "euler")
QWEN_SCHEDULERS = ("model", "lightning")
QWEN_LIGHTNING_SCHEDULER = {
    "base_image_seq_len": 256, "base_shift": math.log(3), "invert_sigmas": False, "max_image_seq_len": 8192,
    "max_shift": math.log(3), "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": None,
    "stochastic_sampling": False, "time_shift_type": "exponential", "use_beta_sigmas": False,
    "use_dynamic_shifting": True, "use_exponential_sigmas": False, "use_karras_sigmas": False,
}
STEP_CACHES = ("off", "first_block")
ATTENTION_BACKENDS = ("native", "flash", "_flash_3", "sage", "flex", "_native_cudnn", "xformers")
EXPERT_NAMES = ("transformer", "transformer_2")

_ORIGINAL = "_diffbox_original"  # the model's own scheduler config and boundary, kept on the pipe


def experts(pipe) -> list[torch.nn.Module]:
    return [m for m in (getattr(pipe, n, None) for n in EXPERT_NAMES) if m is not None]


class WanEulerScheduler(FlowMatchEulerDiscreteScheduler):
    """Flow-match Euler that, asked for N steps, uses Wan's trained grid linspace(1, 0, N+1)[:-1]
    (then the usual shift) instead of diffusers' linspace(1, 1/1000, N). See the module docstring."""

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None):
        if sigmas is None and timesteps is None and num_inference_steps:
            sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
        super().set_timesteps(num_inference_steps, device=device, sigmas=sigmas, mu=mu, timesteps=timesteps)


def _original(pipe) -> dict:
    if not hasattr(pipe, _ORIGINAL):
        setattr(pipe, _ORIGINAL, {"scheduler": dict(pipe.scheduler.config), "scheduler_class": type(pipe.scheduler),
                                  "boundary_ratio": getattr(pipe.config, "boundary_ratio", None)})
    return getattr(pipe, _ORIGINAL)


def share_originals(source, view) -> None:
    """A pipeline built over `source`'s modules (from_pipe) keeps `source`'s idea of the model's own
    scheduler and expert switch, not the settings the last job left on `source`."""
    setattr(view, _ORIGINAL, _original(source))


def model_defaults(pipe) -> dict:
    """What "model default" means for the nullable expert params, for metadata and the UI."""
    original = _original(pipe)
    config = original["scheduler"]
    shift = config.get("flow_shift") or config.get("shift")
    return {"flow_shift": shift, "boundary_ratio": original["boundary_ratio"]}


def set_scheduler(pipe, kind: str, flow_shift: float | None) -> None:
    config = dict(_original(pipe)["scheduler"])
    shift = flow_shift if flow_shift is not None else (config.get("flow_shift") or config.get("shift") or 1.0)
    if kind == "unipc":
        config.update(flow_shift=shift, use_flow_sigmas=True, prediction_type="flow_prediction")
        pipe.scheduler = UniPCMultistepScheduler.from_config(config)
    elif kind == "euler":
        # Only the keys Euler knows: the model's UniPC config would otherwise warn about the rest.
        known = inspect.signature(FlowMatchEulerDiscreteScheduler.__init__).parameters
        pipe.scheduler = WanEulerScheduler.from_config({k: v for k, v in config.items() if k in known}, shift=shift)
    else:
        raise ValueError(f"scheduler: unknown {kind!r}")


def set_qwen_scheduler(pipe, kind: str) -> None:
    """The model's own scheduler, or the one the Lightning LoRAs were distilled with (module docstring)."""
    original = _original(pipe)  # remembered before the first change, so "model" can always go back
    if kind == "model":
        pipe.scheduler = original["scheduler_class"].from_config(original["scheduler"])
    elif kind == "lightning":
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(QWEN_LIGHTNING_SCHEDULER)
    else:
        raise ValueError(f"scheduler: unknown {kind!r}")


def planned_timesteps(pipe, steps: int) -> list[float]:
    """The timesteps the pipeline's scheduler will run for `steps` steps (Wan: no resolution-dependent shift)."""
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(steps, device="cpu")
    return [float(t) for t in scheduler.timesteps]


def describe_timesteps(timesteps: list[float], boundary_ratio: float | None = None) -> str:
    """One sentence for the job log: the timesteps, and with two experts where the switch falls."""
    shown = ", ".join(f"{t:.1f}".removesuffix(".0") for t in timesteps)
    if boundary_ratio is None:
        return f"timesteps: {shown}"
    high = sum(1 for t in timesteps if t >= boundary_ratio * 1000)
    return (f"timesteps: {shown} (high-noise expert {high} step{'s' if high != 1 else ''}, low-noise expert "
            f"{len(timesteps) - high}; switch at t = {boundary_ratio * 1000:g})")


def set_boundary_ratio(pipe, ratio: float | None) -> None:
    original = _original(pipe)["boundary_ratio"]
    if original is None:
        if ratio is not None:
            raise ValueError("boundary_ratio: this model has one expert, so there is no expert switch to move")
        return
    pipe.register_to_config(boundary_ratio=original if ratio is None else ratio)


def set_step_cache(pipe, kind: str, threshold: float) -> None:
    for model in experts(pipe):
        if model.is_cache_enabled:
            model.disable_cache()
        if kind == "first_block":
            model.enable_cache(FirstBlockCacheConfig(threshold=threshold))
        elif kind != "off":
            raise ValueError(f"step_cache: unknown {kind!r}")


def set_attention_backend(pipe, backend: str) -> None:
    for model in experts(pipe):
        try:
            model.set_attention_backend(backend)
        except (RuntimeError, ValueError, ImportError) as exc:
            model.set_attention_backend("native")
            raise ValueError(f"attention_backend: {backend!r} is not usable here ({exc})") from None


def set_vae_tiling(pipe, enabled: bool, tile: int, stride: int) -> None:
    if enabled:
        pipe.vae.enable_tiling(tile_sample_min_height=tile, tile_sample_min_width=tile,
                               tile_sample_stride_height=stride, tile_sample_stride_width=stride)
    else:
        pipe.vae.disable_tiling()


def compile_experts(pipe) -> bool:
    """Compiles the repeated transformer blocks once (regional compile: fast to warm up).

    Returns True when this call compiled them. Compilation cannot be undone on a loaded model;
    a later job without compile keeps the compiled blocks, which is harmless.
    """
    if getattr(pipe, "_diffbox_compiled", False):
        return False
    for model in experts(pipe):
        model.compile_repeated_blocks(fullgraph=True)
    pipe._diffbox_compiled = True
    return True
