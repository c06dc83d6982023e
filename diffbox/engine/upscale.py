"""Upscalers: ESRGAN-family (and any other super-resolution) models loaded through spandrel, run in tiles.

spandrel reads the architecture, scale and channel counts from the state dict itself, so any model it
knows (RealESRGAN_x4plus / x2plus, 4x-UltraSharp, 4x_NMKD-Siax, SwinIR, …) works without a config.

Tiles keep memory bounded: only one `tile`×`tile` input patch (and its upscaled patch) is on the device
at a time; neighbouring tiles overlap and are cross-faded in the overlap so no seam shows. The result
is gathered on the CPU in float32.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import math
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F

from diffbox.engine.compat import torchvision_usable

UPSCALER_SUFFIX = ".safetensors"
# spandrel imports these two names at import time (for LaMa and RestoreFormer, never for upscalers).
_STAND_IN_MODULES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")


class NotAnUpscaler(ValueError):
    """The file is not a super-resolution model spandrel can load; the message says why in one sentence."""


def _needs_torchvision(*_args, **_kwargs):
    raise RuntimeError("this spandrel architecture needs a working torchvision")


@contextmanager
def _torchvision_stand_in() -> Iterator[None]:
    """While spandrel is imported, a stand-in for the torchvision names it imports (torchvision's CPU-less
    wheel cannot load next to a CPU torch); removed again afterwards so nothing else ever sees it."""
    saved = {name: sys.modules.get(name) for name in _STAND_IN_MODULES}
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = enum.Enum("InterpolationMode", "NEAREST BILINEAR BICUBIC")
    functional.rotate = functional.normalize = _needs_torchvision
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    root = types.ModuleType("torchvision")
    root.transforms = transforms
    sys.modules.update(dict(zip(_STAND_IN_MODULES, (root, transforms, functional))))
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


SPANDREL_MISSING = ("Upscaling needs the spandrel package: pip install --no-deps spandrel==0.4.2 einops "
                    "(--no-deps: its torchvision requirement would replace a CPU torch)")


class SpandrelMissing(RuntimeError):
    """spandrel is not installed; the message says how to install it."""


def import_spandrel():
    """spandrel, with the torchvision stand-in only when the real torchvision cannot be imported."""
    if importlib.util.find_spec("spandrel") is None:
        raise SpandrelMissing(SPANDREL_MISSING)
    if "spandrel" in sys.modules or torchvision_usable():
        return importlib.import_module("spandrel")
    with _torchvision_stand_in():
        return importlib.import_module("spandrel")


@dataclass
class Upscaler:
    """A loaded model: `scale` is its own factor (a job may run it more than once to reach ×4)."""
    descriptor: object  # spandrel.ImageModelDescriptor
    scale: int
    architecture: str
    dtype: torch.dtype
    device: torch.device

    @property
    def summary(self) -> dict:
        return {"architecture": self.architecture, "model_scale": self.scale,
                "dtype": str(self.dtype).removeprefix("torch."), "device": str(self.device)}


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_upscaler(path: str | Path, dtype: str | torch.dtype = "auto",
                  device: str | torch.device | None = None) -> Upscaler:
    """Loads a .safetensors super-resolution model; NotAnUpscaler when it is anything else."""
    # Imported here: loaders pulls in diffusers (seconds), which the library's architecture_of() must not pay.
    from diffbox.engine.loaders import resolve_dtype

    path = Path(path)
    if path.suffix.lower() != UPSCALER_SUFFIX:
        raise NotAnUpscaler(f"{path.name} is not a {UPSCALER_SUFFIX} file (a .pth is a pickle, which diffbox "
                            "does not load; most upscalers are published as safetensors too)")
    spandrel = import_spandrel()
    device = torch.device(device) if device is not None else default_device()
    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise NotAnUpscaler(f"{path.name} is not an upscale model spandrel recognises (its tensor names "
                            "match no known architecture)") from None
    except Exception as exc:  # a truncated or foreign file: safetensors / spandrel raise many kinds
        raise NotAnUpscaler(f"{path.name} could not be read as an upscale model ({exc})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.scale < 2:
        raise NotAnUpscaler(f"{path.name} is a {descriptor.architecture.name} {descriptor.purpose} model "
                            f"(×{descriptor.scale}), not an upscaler")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise NotAnUpscaler(f"{path.name} works on {descriptor.input_channels}-channel images, not RGB")
    wanted = torch.float32 if dtype == "auto" and device.type == "cpu" else resolve_dtype(dtype)
    supported = {torch.float32: True, torch.bfloat16: descriptor.supports_bfloat16,
                 torch.float16: descriptor.supports_half}
    if not supported[wanted]:
        wanted = torch.float32  # the architecture would produce garbage in that precision
    descriptor.to(device).to(wanted).eval()
    return Upscaler(descriptor, descriptor.scale, descriptor.architecture.name, wanted, device)


def architecture_of(header: dict) -> str | None:
    """The spandrel architecture whose tensor layout a safetensors header ({name: {"dtype", "shape"}}) has,
    or None (also when spandrel is not installed). Reads no weights (detectors see shape-only meta
    tensors); the scale is checked at load."""
    try:
        spandrel = import_spandrel()
    except SpandrelMissing:
        return None
    state = {name: torch.empty(entry["shape"], device="meta") for name, entry in header.items()
             if isinstance(entry, dict) and "shape" in entry}
    for support in spandrel.MAIN_REGISTRY.architectures("detection"):
        try:
            if support.detect(state):
                return support.architecture.name
        except Exception:  # a detector that wants real values: not one of the upscalers we serve
            continue
    return None


def passes_for(model_scale: int, target_scale: int) -> int:
    """How many times the model runs to reach at least `target_scale` (a ×2 model runs twice for ×4)."""
    return max(1, math.ceil(math.log(target_scale) / math.log(model_scale) - 1e-9))


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering [0, length); the last one is aligned to the end."""
    if tile <= 0 or length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _ramp(size: int, fade_in: int, fade_out: int) -> torch.Tensor:
    """1-D weights: rise over `fade_in` samples, flat, fall over `fade_out`; never zero."""
    weights = torch.ones(size)
    if fade_in:
        weights[:fade_in] = (torch.arange(fade_in) + 0.5) / fade_in
    if fade_out:
        weights[size - fade_out:] = torch.minimum(weights[size - fade_out:],
                                                  (torch.arange(fade_out, 0, -1) - 0.5) / fade_out)
    return weights


def upscale_once(upscaler: Upscaler, image: torch.Tensor, tile: int, overlap: int,
                 between_tiles: Callable[[], None] = lambda: None) -> torch.Tensor:
    """One model pass over a (3, H, W) float image in [0, 1]; returns (3, H·s, W·s) float32 on the CPU.

    tile=0 runs the whole frame at once. Overlapping tiles are cross-faded linearly over the overlap
    (scaled to the output), and every output pixel is divided by the weights it received.
    """
    _, height, width = image.shape
    s = upscaler.scale
    out = torch.zeros(3, height * s, width * s)
    total = torch.zeros(1, height * s, width * s)
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    for y in ys:
        for x in xs:
            between_tiles()
            th, tw = (min(tile, height), min(tile, width)) if tile > 0 else (height, width)
            patch = image[:, y:y + th, x:x + tw].unsqueeze(0).to(upscaler.device, upscaler.dtype)
            result = upscaler.descriptor(patch)[0].float().cpu()
            fade = overlap * s
            wy = _ramp(th * s, fade if y > 0 else 0, fade if y + th < height else 0)
            wx = _ramp(tw * s, fade if x > 0 else 0, fade if x + tw < width else 0)
            weight = wy[:, None] * wx[None, :]
            out[:, y * s:(y + th) * s, x * s:(x + tw) * s] += result * weight
            total[:, y * s:(y + th) * s, x * s:(x + tw) * s] += weight
    return out / total


def upscale_image(upscaler: Upscaler, image: torch.Tensor, scale: int, tile: int, overlap: int,
                  between_tiles: Callable[[], None] = lambda: None) -> torch.Tensor:
    """(3, H, W) in [0, 1] → (3, H·scale, W·scale): as many model passes as needed, then an area
    resize down when the model overshoots (a ×4 model asked for ×2)."""
    _, height, width = image.shape
    result = image.float()
    for _ in range(passes_for(upscaler.scale, scale)):
        result = upscale_once(upscaler, result, tile, overlap, between_tiles)
    target = (height * scale, width * scale)
    if tuple(result.shape[1:]) != target:
        result = F.interpolate(result.unsqueeze(0), size=target, mode="area")[0]
    return result.clamp_(0, 1)


def upscale_frames(upscaler: Upscaler, frames: Iterable, scale: int, tile: int, overlap: int,
                   on_frame: Callable[[int], None] = lambda i: None,
                   between_tiles: Callable[[], None] = lambda: None) -> Iterator:
    """uint8 (H, W, 3) frames in, uint8 (H·scale, W·scale, 3) frames out, one at a time;
    `on_frame(i)` after each finished frame (progress), `between_tiles()` before every tile (Stop)."""
    for index, frame in enumerate(frames, start=1):
        tensor = torch.tensor(frame).permute(2, 0, 1).float() / 255.0  # a copy: decoded frames are read-only
        result = upscale_image(upscaler, tensor, scale, tile, overlap, between_tiles)
        yield (result * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
        on_frame(index)
