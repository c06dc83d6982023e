"""Cheap live previews: latents projected to RGB with a fixed linear map, no VAE decode.

The 16×3 factors for the Wan 2.1/2.2-A14B VAE latent space are the ones ComfyUI ships for its
Wan21 latent format (comfy/latent_formats.py), fitted against real decodes; FramePack and Wan2GP
preview the same way. They apply to normalised latents, which is what diffusers' Wan pipelines
denoise.
"""

from __future__ import annotations

import numpy as np
import torch

WAN_LATENT_RGB = torch.tensor([
    [-0.1299, -0.1692, 0.2932], [0.0671, 0.0406, 0.0442], [0.3568, 0.2548, 0.1747], [0.0372, 0.2344, 0.1420],
    [0.0313, 0.0189, -0.0328], [0.0296, -0.0956, -0.0665], [-0.3477, -0.4059, -0.2925], [0.0166, 0.1902, 0.1975],
    [-0.0412, 0.0267, -0.1364], [-0.1293, 0.0740, 0.1636], [0.0680, 0.3019, 0.1128], [0.0032, 0.0581, 0.0639],
    [-0.1251, 0.0927, 0.1699], [0.0060, -0.0633, 0.0005], [0.3477, 0.2275, 0.2950], [0.1984, 0.0913, 0.1861],
])
WAN_LATENT_RGB_BIAS = torch.tensor([-0.1835, -0.0868, -0.3360])


def video_latents_to_strip(latents: torch.Tensor, frames: int = 4, scale: int = 8) -> np.ndarray:
    """(B, 16, T, H, W) latents → one uint8 RGB image: `frames` evenly spaced latent frames side by side."""
    video = latents[0].detach().float().cpu()  # (16, T, H, W)
    steps = video.shape[1]
    picks = sorted({round(i * (steps - 1) / max(frames - 1, 1)) for i in range(frames)})
    rgb = torch.einsum("cthw,cr->trhw", video[:, picks], WAN_LATENT_RGB) + WAN_LATENT_RGB_BIAS[None, :, None, None]
    rgb = ((rgb.clamp(-1, 1) + 1) * 127.5).to(torch.uint8)  # (t, 3, H, W)
    strip = torch.cat(list(rgb), dim=2).permute(1, 2, 0).numpy()  # (H, t·W, 3)
    return np.repeat(np.repeat(strip, scale, axis=0), scale, axis=1)
