"""LoRA twins: the published Wan 2.2 / Qwen-Image-Edit-2509 LoRAs' key formats, dtypes and alpha/rank
ratios, over the pipeline twins' layer shapes.

Ranks shrink with the model (SVI 128, Lightning 64 -> 8) but alpha/rank is the original's: Lightning's
alpha 8 over rank 64 becomes alpha 1 over rank 8, the same 0.125 scale.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from diffbox.twins.files import save_tensors, seeded
from diffbox.twins.qwen import TRANSFORMER_CONFIG as QWEN
from diffbox.twins.wan import TRANSFORMER_CONFIG as WAN

RANK = 8


def wan_modules(config: dict = WAN) -> Iterator[tuple[str, int, int]]:
    """(native module name, out features, in features) of every Linear a Wan 2.2 LoRA targets, for a
    transformer config (the twin's by default; the real one for the real-size checks)."""
    width, ffn = config["num_attention_heads"] * config["attention_head_dim"], config["ffn_dim"]
    for block in range(config["num_layers"]):
        for attention in ("self_attn", "cross_attn"):
            for projection in "qkvo":
                yield f"blocks.{block}.{attention}.{projection}", width, width
        yield f"blocks.{block}.ffn.0", ffn, width
        yield f"blocks.{block}.ffn.2", width, ffn


def qwen_modules(config: dict = QWEN) -> Iterator[tuple[str, int, int]]:
    """The 12 Linears per block Qwen-Image-Lightning trains (no modulation layers)."""
    width = config["num_attention_heads"] * config["attention_head_dim"]
    for block in range(config["num_layers"]):
        for projection in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"):
            yield f"transformer_blocks.{block}.attn.{projection}", width, width
        for stream in ("img_mlp", "txt_mlp"):
            yield f"transformer_blocks.{block}.{stream}.net.0.proj", 4 * width, width
            yield f"transformer_blocks.{block}.{stream}.net.2", width, 4 * width


def _pair(out_features: int, in_features: int, rank: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(down, up) with a product about as large as the layer's own weights, so a tiny 2-step job shows it."""
    down = torch.randn(rank, in_features, device=device) / in_features**0.5
    up = torch.randn(out_features, rank, device=device) * 0.5
    return down, up


def lora_tensors(modules, style: str, *, seed: int, name: str, rank: int = RANK, alpha: float | None = None,
                 prefix: str = "", device: str = "cpu") -> dict[str, torch.Tensor]:
    """One LoRA in a key style: "diffsynth" (``.lora_A.default.weight``), "peft" (``.lora_A.weight``),
    "kohya" (``.lora_down.weight``, ``.alpha`` when given) or "musubi" (``lora_unet_`` flat names).
    ``device="meta"`` gives shapes only (alphas stay real: converters read their value)."""
    tensors = {}
    with seeded(seed, name):
        for module, out_features, in_features in modules:
            down, up = _pair(out_features, in_features, rank, device)
            if style == "musubi":
                module = "lora_unet_" + module.replace(".", "_")
            key = prefix + module
            if style == "diffsynth":
                tensors[f"{key}.lora_A.default.weight"], tensors[f"{key}.lora_B.default.weight"] = down, up
            elif style == "peft":
                tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"] = down, up
            else:
                tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"] = down, up
            if alpha is not None:
                tensors[f"{key}.alpha"] = torch.tensor(float(alpha))
    return tensors


# The published Wan 2.2 A14B expert's dimensions (the twin's config shrinks exactly these).
REAL_WAN = dict(WAN, attention_head_dim=128, ffn_dim=13824, num_attention_heads=40, num_layers=40, text_dim=4096)
X2V_WHOLE_BELOW = 1_000_000  # lightx2v's extractor keeps tensors this small (and every 1-D one) as full deltas


def native_wan_shapes(config: dict = WAN) -> dict[str, torch.Size]:
    """Every tensor of a Wan 2.2 A14B expert under its original name, on the meta device (no memory)."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    from diffbox.twins.wan import to_native_wan_keys

    with init_empty_weights():
        model = WanTransformer3DModel.from_config(config)
    return {key: value.shape for key, value in to_native_wan_keys(model.state_dict()).items()}


def _delta_key(key: str) -> str:
    """The extractor's name for a whole delta: weight -> diff, bias -> diff_b, modulation -> diff_m."""
    for old, new in ((".weight", ".diff"), (".bias", ".diff_b"), (".modulation", ".diff_m")):
        if key.endswith(old):
            return key.removesuffix(old) + new
    raise ValueError(f"the extractor skips {key}")


def x2v_distill_tensors(which: str, *, seed: int, name: str, config: dict = WAN, rank: int = RANK,
                        device: str = "cpu") -> dict[str, torch.Tensor]:
    """A lightx2v distill LoRA as its extractor (LightX2V ``tools/extract/lora_extractor.py``) writes one
    from the distilled and the base expert: every tensor that changed, under ``diffusion_model.``, alpha
    folded in (no ``.alpha``). A tensor the real model holds as 1-D or with under a million values is
    stored whole as ``.diff`` (weight), ``.diff_b`` (bias) or ``.diff_m`` (modulation); a larger 2-D
    weight as a rank-64 ``lora_down``/``lora_up`` pair. Which is which is decided on the real shapes,
    so the twin has the original's key set: pairs for attention, ffn, text/time embeddings and
    time_projection; ``head.head.diff`` (64 x 5120 = 327,680 values) and the 5-D
    ``patch_embedding.diff``; norm ``.diff``/``.diff_b``; ``diff_m`` for every block and the head. The
    low-noise file alone adds ``cross_attn.k_img``/``v_img`` pairs (Wan 2.1's image branch): it is
    104.8 MB larger, the size of 80 such pairs at rank 64 in bf16."""
    real = native_wan_shapes(REAL_WAN)
    prefix, tensors = "diffusion_model.", {}
    with seeded(seed, name):
        for key, shape in native_wan_shapes(config).items():
            if len(real[key]) == 1 or real[key].numel() < X2V_WHOLE_BELOW:
                tensors[prefix + _delta_key(key)] = torch.randn(shape, device=device) * 0.01
            elif len(real[key]) == 2 and key.endswith(".weight"):  # the SVD pair (it gives up on other shapes)
                module = key.removesuffix(".weight")
                down, up = _pair(shape[0], shape[1], rank, device)
                tensors[f"{prefix}{module}.lora_down.weight"], tensors[f"{prefix}{module}.lora_up.weight"] = down, up
        if which == "low":
            width = config["num_attention_heads"] * config["attention_head_dim"]
            for block in range(config["num_layers"]):
                for projection in ("k_img", "v_img"):
                    down, up = _pair(width, width, rank, device)
                    tensors[f"{prefix}blocks.{block}.cross_attn.{projection}.lora_down.weight"] = down
                    tensors[f"{prefix}blocks.{block}.cross_attn.{projection}.lora_up.weight"] = up
    return tensors


def build_lora(dest: Path, seed: int, *, tensors, dtype: torch.dtype, metadata: dict | None = None) -> None:
    """``tensors(seed)`` -> the state dict, stored in ``dtype`` (alphas too, as the originals do)."""
    save_tensors(dest, {k: v.to(dtype) for k, v in tensors(seed).items()}, metadata=metadata or {})
