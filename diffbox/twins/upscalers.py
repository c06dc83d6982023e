"""Upscaler twins: Real-ESRGAN's RRDBNet state dict (basicsr names, float32 safetensors), shrunk to 8
features and one block, that spandrel loads as the ESRGAN architecture at the original's scale.

RealESRGAN_x4plus is RRDBNet(num_feat=64, num_block=23, num_grow_ch=32), 16.7 M float32 parameters
(the 66.9 MB file). The twin keeps num_grow_ch=32 (spandrel's RRDB fixes it) and the layer names:
``conv_first``, ``body.N.rdb{1,2,3}.conv{1..5}``, ``conv_body``, ``conv_up1``, ``conv_up2``,
``conv_hr``, ``conv_last``. The x2plus variant pixel-unshuffles by 2 first, so its ``conv_first`` takes
12 channels; spandrel reads that as scale 2.

The weights are not pure noise: each layer's centre tap passes the three colour channels through, so the
twin upscales a picture into a (slightly noisy) nearest-neighbour copy of itself and tests can check
pixels, not just shapes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffbox.twins.files import save_tensors, seeded
from diffbox.twins.registry import Original, Twin

NUM_FEAT, NUM_BLOCK, GROW = 8, 1, 32
NOISE = 0.01
from diffbox.engine.published import UPSCALER_REPO  # noqa: E402


def _conv(out_ch: int, in_ch: int, passthrough: dict[int, int] | None = None) -> dict[str, torch.Tensor]:
    weight = torch.randn(out_ch, in_ch, 3, 3) * NOISE
    for out_index, in_index in (passthrough or {}).items():
        weight[out_index, in_index, 1, 1] += 1.0
    return {"weight": weight, "bias": torch.zeros(out_ch)}


def esrgan_state_dict(scale: int, seed: int, num_feat: int = NUM_FEAT, num_block: int = NUM_BLOCK) -> dict:
    """The tensors of a RealESRGAN_x{scale}plus-style RRDBNet (scale 4, or 2 with pixel-unshuffle)."""
    unshuffle = {4: 1, 2: 2}[scale]
    colours = {c: c * unshuffle * unshuffle for c in range(3)}  # pixel_unshuffle puts (c, 0, 0) at c·r²
    same = {c: c for c in range(3)}
    with seeded(seed, f"esrgan-x{scale}"):
        layers = {"conv_first": _conv(num_feat, 3 * unshuffle * unshuffle, colours)}
        for block in range(num_block):
            for rdb in (1, 2, 3):
                for k in range(1, 6):
                    out_ch = num_feat if k == 5 else GROW
                    layers[f"body.{block}.rdb{rdb}.conv{k}"] = _conv(out_ch, num_feat + (k - 1) * GROW)
        layers["conv_body"] = _conv(num_feat, num_feat)
        for name in ("conv_up1", "conv_up2", "conv_hr"):
            layers[name] = _conv(num_feat, num_feat, same)
        layers["conv_last"] = _conv(3, num_feat, same)
    return {f"{layer}.{part}": tensor for layer, parts in layers.items() for part, tensor in parts.items()}


def to_esrgan_names(state: dict, num_block: int = NUM_BLOCK) -> dict:
    """The same tensors under the original ESRGAN names (``model.N``, ``model.1.sub.N.RDBr.convk.0``), which
    4x-UltraSharp, 4x_NMKD-Siax and most community upscalers keep: conv_first is model.0, the trunk model.1,
    then conv_up1 / conv_up2 / conv_hr / conv_last at model.3 / 6 / 8 / 10 (the upsample and activation
    layers between them have no weights)."""
    renamed = {}
    for key, tensor in state.items():
        layer, part = key.rsplit(".", 1)
        if layer.startswith("body."):
            _, block, rdb, conv = layer.split(".")
            layer = f"model.1.sub.{block}.RDB{rdb[3:]}.{conv}.0"
        else:
            layer = {"conv_first": "model.0", "conv_body": f"model.1.sub.{num_block}", "conv_up1": "model.3",
                     "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}[layer]
        renamed[f"{layer}.{part}"] = tensor
    return renamed


def build_esrgan(dest: Path, seed: int, scale: int = 4, esrgan_names: bool = False) -> None:
    """One float32 safetensors file, as the Comfy-Org repackage stores it (or under the ESRGAN names)."""
    state = esrgan_state_dict(scale, seed)
    save_tensors(Path(dest), to_esrgan_names(state) if esrgan_names else state)


def build_tiny_upscaler(dest: Path, seed: int) -> None:
    """The demo's upscaler: the x4plus twin."""
    build_esrgan(dest, seed, scale=4)


UPSCALERS = [
    Twin("realesrgan-x4plus", "upscaler", Original(UPSCALER_REPO, "RealESRGAN_x4plus.safetensors"),
         "an ESRGAN-family upscaler loads through spandrel at its own scale (×4) and upscales in tiles",
         {"dtype": "F32", "keys": "basicsr RRDBNet: `conv_first`, `body.N.rdbM.convK`, `conv_body`, "
                                  "`conv_up1/2`, `conv_hr`, `conv_last` (.weight/.bias)"},
         build_tiny_upscaler, library=("upscaler", "unknown"),
         unconfirmed=("key names: the 66,857,836-byte size fixes RRDBNet 64 features, 23 blocks, float32, not "
                      "whether the repackage kept basicsr's names or ESRGAN's (the variant below)",)),
    Twin("realesrgan-x4plus-esrgan-names", "upscaler", Original(UPSCALER_REPO, "RealESRGAN_x4plus.safetensors"),
         "the original ESRGAN names (`model.N`, as 4x-UltraSharp keeps them) load as the same model",
         {"dtype": "F32", "keys": "`model.0`, `model.1.sub.N.RDBr.convk.0`, `model.1.sub.<blocks>`, `model.3/6/8/10` "
                                  "(.weight/.bias)"},
         lambda dest, seed: build_esrgan(dest, seed, scale=4, esrgan_names=True), library=("upscaler", "unknown"),
         unconfirmed=("which of the two layouts the repackage uses",)),
]
