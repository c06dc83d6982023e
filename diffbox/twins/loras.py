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
from diffbox.twins.wan import WIDTH as WAN_WIDTH

RANK = 8
WAN_IMAGE_DIM = 16  # the Wan 2.1 image embedder's width in the twins (1280 in the real model)
WAN_HEAD_OUT = WAN["out_channels"] * 4  # head.head projects to out_channels x patch (1, 2, 2)


def wan_modules(config: dict = WAN, *, image_layers: bool = False) -> Iterator[tuple[str, int, int]]:
    """(native module name, out features, in features) of every Linear a Wan 2.2 LoRA targets, for a
    transformer config (the twin's by default; the real one for the real-size checks)."""
    width, ffn = config["num_attention_heads"] * config["attention_head_dim"], config["ffn_dim"]
    for block in range(config["num_layers"]):
        for attention in ("self_attn", "cross_attn"):
            for projection in "qkvo":
                yield f"blocks.{block}.{attention}.{projection}", width, width
        if image_layers:  # Wan 2.1 I2V's image cross-attention, absent from Wan 2.2 A14B
            yield f"blocks.{block}.cross_attn.k_img", width, width
            yield f"blocks.{block}.cross_attn.v_img", width, width
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


def x2v_distill_tensors(*, seed: int, name: str) -> dict[str, torch.Tensor]:
    """lightx2v's SVD-extracted distill LoRAs: alpha folded in (no ``.alpha``), full deltas beside the
    low-rank pairs — ``diff_b`` (bias), ``diff`` (norm weights, ``head.head``), ``diff_m`` (block
    modulation) — and Wan 2.1 image-branch keys (``k_img``, ``v_img``, ``norm_k_img``, ``img_emb``) that
    Wan 2.2 A14B has no layer for."""
    prefix = "diffusion_model."
    tensors = lora_tensors(wan_modules(image_layers=True), "kohya", seed=seed, name=name, prefix=prefix)
    with seeded(seed, name + ".diff"):
        for module, out_features, _ in wan_modules(image_layers=True):
            tensors[f"{prefix}{module}.diff_b"] = torch.randn(out_features) * 0.01
        for block in range(WAN["num_layers"]):
            for norm in ("self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q", "cross_attn.norm_k",
                         "cross_attn.norm_k_img", "norm3"):
                tensors[f"{prefix}blocks.{block}.{norm}.diff"] = torch.zeros(WAN_WIDTH)
            tensors[f"{prefix}blocks.{block}.norm3.diff_b"] = torch.zeros(WAN_WIDTH)
            tensors[f"{prefix}blocks.{block}.diff_m"] = torch.randn(1, 6, WAN_WIDTH) * 0.01
        tensors[f"{prefix}head.head.diff"] = torch.randn(WAN_HEAD_OUT, WAN_WIDTH) * 0.05
        tensors[f"{prefix}head.head.diff_b"] = torch.randn(WAN_HEAD_OUT) * 0.01
        for layer, out_features, in_features in (("proj.1", WAN_IMAGE_DIM, WAN_IMAGE_DIM),
                                                 ("proj.3", WAN_WIDTH, WAN_IMAGE_DIM)):
            down, up = _pair(out_features, in_features, RANK)
            tensors[f"{prefix}img_emb.{layer}.lora_down.weight"] = down
            tensors[f"{prefix}img_emb.{layer}.lora_up.weight"] = up
            tensors[f"{prefix}img_emb.{layer}.diff_b"] = torch.zeros(out_features)
        for layer, width in (("proj.0", WAN_IMAGE_DIM), ("proj.4", WAN_WIDTH)):
            tensors[f"{prefix}img_emb.{layer}.diff"] = torch.zeros(width)
            tensors[f"{prefix}img_emb.{layer}.diff_b"] = torch.zeros(width)
    return tensors


def build_lora(dest: Path, seed: int, *, tensors, dtype: torch.dtype, metadata: dict | None = None) -> None:
    """``tensors(seed)`` -> the state dict, stored in ``dtype`` (alphas too, as the originals do)."""
    save_tensors(dest, {k: v.to(dtype) for k, v in tensors(seed).items()}, metadata=metadata or {})
