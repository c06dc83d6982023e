"""Real-scale Wan 2.2 A14B denoising step time on a CUDA GPU, random weights (no download).

    python bench/gpu_wan22.py            # 480×832×81, the A14B transformer config, on cuda
    python bench/gpu_wan22.py --tiny     # the same code on the tiny demo config, runs on a CPU

One A14B expert (40 layers, dim 5120, 40 heads) at 480×832×81 frames = 21×60×104 latents,
32,760 tokens. A denoising step with CFG is two transformer forwards; that is what is timed.
Settings compared in one run: diffusers' default (bf16, SDPA), First-Block Cache as diffbox's
step_cache option applies it, and regional torch.compile as diffbox's compile option applies it.
Prints s/step per setting and the speed-up ratio against the default.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from diffusers import WanTransformer3DModel
from diffusers.hooks import FirstBlockCacheConfig

A14B = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
            text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, rope_max_seq_len=1024)
TINY = dict(A14B, num_attention_heads=2, attention_head_dim=12, text_dim=32, ffn_dim=32, num_layers=2, rope_max_seq_len=32)


def build(config: dict, device: str, dtype: torch.dtype) -> WanTransformer3DModel:
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built straight in bf16: 14 B fp32 parameters would not fit in 80 GB
    try:
        with torch.device(device):
            model = WanTransformer3DModel(**config)
    finally:
        torch.set_default_dtype(previous)
    for parameter in model.parameters():  # keep activations finite with random weights
        parameter.data.normal_(0, 0.02)
    return model.eval().requires_grad_(False)


def inputs(config: dict, device: str, dtype: torch.dtype, frames: int, height: int, width: int):
    latent = (1, 36, (frames - 1) // 4 + 1, height // 8, width // 8)
    text = torch.randn(1, 512, config["text_dim"], device=device, dtype=dtype)
    return torch.randn(latent, device=device, dtype=dtype), text


def step_time(model, latents, text, steps: int) -> float:
    """Median seconds per CFG step (cond + uncond forward) over `steps` steps after two warm-ups.

    The latents drift a little every step, as in sampling; identical inputs would let the step
    cache skip every step and overstate its gain.
    """
    samples = []
    for index in range(steps + 2):
        latents = latents + 0.05 * torch.randn_like(latents)
        timestep = torch.tensor([999 - index * 20], device=latents.device)
        if latents.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with model.cache_context("cond"):
            model(hidden_states=latents, timestep=timestep, encoder_hidden_states=text, return_dict=False)
        with model.cache_context("uncond"):
            model(hidden_states=latents, timestep=timestep, encoder_hidden_states=text, return_dict=False)
        if latents.is_cuda:
            torch.cuda.synchronize()
        if index >= 2:
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU (checks the script itself)")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    if not args.tiny and not torch.cuda.is_available():
        print("needs a CUDA GPU (or --tiny)", file=sys.stderr)
        return 2
    device, dtype = ("cpu", torch.float32) if args.tiny else ("cuda", torch.bfloat16)
    config = TINY if args.tiny else A14B
    frames, height, width = (9, 32, 32) if args.tiny else (81, 480, 832)
    model = build(config, device, dtype)
    latents, text = inputs(config, device, dtype, frames, height, width)
    print(f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, {frames}×{height}×{width}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters")

    results = {"default (bf16, SDPA)": step_time(model, latents, text, args.steps)}
    model.enable_cache(FirstBlockCacheConfig(threshold=0.05))
    results["+ first-block cache 0.05"] = step_time(model, latents, text, args.steps)
    model.disable_cache()
    model.compile_repeated_blocks(fullgraph=True)
    results["+ torch.compile (regional)"] = step_time(model, latents, text, args.steps)

    base = results["default (bf16, SDPA)"]
    print(f"{'setting':<30}{'s/step':>10}{'speed-up':>10}")
    for name, seconds in results.items():
        print(f"{name:<30}{seconds:>10.3f}{base / seconds:>10.2f}")
    if device == "cuda":
        print(f"peak VRAM {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
