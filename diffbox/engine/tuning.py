"""Per-job settings applied to a cached pipeline: scheduler, expert switch, step cache, attention,
VAE tiling, torch.compile. Each call sets the state fully, so one job's choice never leaks into
the next job on the same pipeline.
"""

from __future__ import annotations

import logging

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from diffusers.hooks import FirstBlockCacheConfig

log = logging.getLogger(__name__)

SCHEDULERS = ("unipc", "euler")
STEP_CACHES = ("off", "first_block")
ATTENTION_BACKENDS = ("native", "flash", "_flash_3", "sage", "flex", "_native_cudnn", "xformers")
EXPERT_NAMES = ("transformer", "transformer_2")

_ORIGINAL = "_diffbox_original"  # the model's own scheduler config and boundary, kept on the pipe


def experts(pipe) -> list[torch.nn.Module]:
    return [m for m in (getattr(pipe, n, None) for n in EXPERT_NAMES) if m is not None]


def _original(pipe) -> dict:
    if not hasattr(pipe, _ORIGINAL):
        setattr(pipe, _ORIGINAL, {"scheduler": dict(pipe.scheduler.config),
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
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config, shift=shift)
    else:
        raise ValueError(f"scheduler: unknown {kind!r}")


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
