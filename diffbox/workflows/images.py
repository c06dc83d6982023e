"""Turning whatever the user dropped in into a clean RGB image, with a message naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from diffbox.params import InvalidParams

# Far above any model's working size; larger uploads are refused before they are decoded.
MAX_INPUT_PIXELS = 8192 * 8192


def file_path(value: Any) -> str | None:
    """Gradio hands files over as a path, a FileData dict or an object with .path."""
    if value is None or value == "":
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict):
        return value.get("path") or None
    return getattr(value, "path", None)


def load_image(value: Any, field: str) -> Image.Image:
    """An RGB PIL image (EXIF rotation applied; CMYK, 16-bit, palette and alpha flattened)."""
    if isinstance(value, Image.Image):
        image = value
    else:
        path = file_path(value)
        if path is None:
            raise InvalidParams({field: "an image is required"})
        try:
            image = Image.open(path)
            if image.width * image.height > MAX_INPUT_PIXELS:
                raise InvalidParams({field: f"is {image.width}×{image.height}; at most "
                                            f"{MAX_INPUT_PIXELS // 1_000_000} megapixels are accepted"})
            image.load()
        except InvalidParams:
            raise
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise InvalidParams({field: f"is not a readable image ({Path(path).name}: {exc})"}) from None
    image = ImageOps.exif_transpose(image)
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit greyscale: scale to 8 bits
        image = image.point(lambda v: v / 256).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scales to fill width×height keeping the aspect ratio, then crops the centre."""
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
