"""Inpaint masks: white = repaint. From a sketch (Gradio ImageEditor value) or an uploaded file.

Pure PIL/numpy, no Gradio: the editor value arrives as a plain dict
``{"background": ..., "layers": [...], "composite": ...}`` whose entries are PIL images, numpy
arrays or file paths. Each layer is RGBA and transparent except where the brush went, and the
eraser makes pixels transparent again, so the mask is ``alpha > 0`` OR-ed over every layer.
Masks are resized with NEAREST so they stay hard-edged; softening is an explicit choice (feather).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from diffbox.params import InvalidParams
from diffbox.workflows.images import file_path


def _as_image(value: Any, field: str) -> Image.Image | None:
    if value is None or value == "":
        return None
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray):
        return Image.fromarray(value)
    path = file_path(value)
    if path is None:
        raise InvalidParams({field: f"cannot read a {type(value).__name__} as an image"})
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidParams({field: f"is not a readable image ({exc})"}) from None


def editor_to_mask(value: dict | None, size: tuple[int, int] | None = None) -> Image.Image | None:
    """The painted area of an ImageEditor value as an "L" mask (255 = repaint), or None if nothing
    was painted. ``size`` (width, height) defaults to the background's; layers of another size are
    stretched to it with NEAREST."""
    if not value:
        return None
    layers = [_as_image(layer, "mask") for layer in value.get("layers") or []]
    layers = [layer for layer in layers if layer is not None]
    if not layers:
        return None
    background = _as_image(value.get("background"), "mask")
    size = size or (background.size if background is not None else layers[0].size)
    painted = np.zeros((size[1], size[0]), dtype=bool)
    for layer in layers:
        alpha = layer.convert("RGBA").getchannel("A")
        if alpha.size != size:
            alpha = alpha.resize(size, Image.Resampling.NEAREST)
        painted |= np.asarray(alpha) > 0
    if not painted.any():
        return None
    return Image.fromarray(painted.astype(np.uint8) * 255, "L")


def load_mask(value: Any, size: tuple[int, int]) -> Image.Image | None:
    """An uploaded mask file (white = repaint): greyscale, thresholded at half, resized NEAREST.

    A mask with transparency (an exported brush layer) counts its opaque pixels as painted.
    """
    image = _as_image(value, "mask")
    if image is None:
        return None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA").getchannel("A"))
        if alpha.min() < 255:  # really transparent somewhere: the alpha is the mask
            image = Image.fromarray(alpha)
    grey = image.convert("L")
    if grey.size != size:
        grey = grey.resize(size, Image.Resampling.NEAREST)
    return Image.fromarray((np.asarray(grey) >= 128).astype(np.uint8) * 255, "L")


def finish_mask(mask: Image.Image, invert: bool = False, feather: int = 0) -> Image.Image:
    """Inverts and/or feathers (Gaussian blur of the edge, `feather` px) a hard mask."""
    if invert:
        mask = Image.fromarray(255 - np.asarray(mask.convert("L")), "L")
    if feather > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(radius=feather / 2))
    return mask


def resolve_mask(value: Any, source_size: tuple[int, int], out_size: tuple[int, int], invert: bool = False,
                 feather: int = 0) -> tuple[Image.Image | None, Image.Image | None, Image.Image | None]:
    """The mask an inpaint job uses, and what the form previews: (given, hard, soft).

    `value` is an ImageEditor value (a dict with layers) or a mask file; `given` is it at the source image's
    size, as painted or uploaded (None when nothing is); `hard` is `given` inverted if asked, then cropped
    and scaled to `out_size` exactly as the source image is (ImageOps.fit), None when nothing is left to
    repaint; `soft` is `hard` feathered, what the composite blends with."""
    from_editor = isinstance(value, dict) and "layers" in value
    given = editor_to_mask(value, source_size) if from_editor else load_mask(value, source_size)
    hard = finish_mask(given, invert=True) if given is not None and invert else given
    if hard is None or not np.asarray(hard).any():
        return given, None, None
    if hard.size != tuple(out_size):
        hard = ImageOps.fit(hard, tuple(out_size), Image.Resampling.NEAREST)
    return given, hard, finish_mask(hard, feather=feather)


def composite(original: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """Original pixels where the mask is 0, generated where 255, blended in between (feathered edge).

    Untouched areas come back pixel-exact instead of through a VAE round trip, as A1111/ComfyUI
    users expect. All three must have the same size.
    """
    weight = np.asarray(mask.convert("L"), dtype=np.float32)[..., None] / 255.0
    blended = (np.asarray(original.convert("RGB"), dtype=np.float32) * (1.0 - weight)
               + np.asarray(generated.convert("RGB"), dtype=np.float32) * weight)
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), "RGB")
