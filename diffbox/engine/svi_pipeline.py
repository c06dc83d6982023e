"""SVI 2.0 Pro's device work: the clip condition, the Wan I2V pipeline subclass that uses it, and the
anchor encode / latent decode in normalized latent space (diffbox/workflows/svi.py runs the clip loop).

Every clip is conditioned on y = [anchor latent, the previous clip's last M denoised latents (none for
clip 0), zeros…] with the mask set on the anchor latent only — as the official SVI 2.0 Pro inference
(vita-epfl/Stable-Video-Infinity, branch svi_wan22) builds it; decoded frames are never re-encoded.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import WanImageToVideoPipeline
from diffusers.pipelines.wan.pipeline_wan_i2v import get_module_execution_device, randn_tensor, retrieve_latents
from PIL import Image

from diffbox.engine import tuning


def svi_condition(anchor: torch.Tensor, motion: torch.Tensor | None, num_latents: int,
                  mask_channels: int = 4) -> torch.Tensor:
    """cat([mask, y], dim=1): y = [anchor, motion latents, zero latents]; mask 1 on latent 0 only.

    The padding is literal zeros in normalized latent space, not VAE-encoded black frames, and the
    motion latents are *not* masked: the model continues them rather than copying them.
    """
    motion = anchor[:, :, :0] if motion is None else motion.to(anchor)
    padding = num_latents - 1 - motion.shape[2]
    if padding < 0:
        raise ValueError(f"{motion.shape[2]} motion latents do not fit in a {num_latents}-latent clip")
    batch, _, _, height, width = anchor.shape
    y = torch.cat([anchor, motion, anchor.new_zeros(batch, anchor.shape[1], padding, height, width)], dim=2)
    mask = anchor.new_zeros(batch, mask_channels, num_latents, height, width)
    mask[:, :, 0] = 1
    return torch.cat([mask, y], dim=1)


class SVIPipeline(WanImageToVideoPipeline):
    """WanImageToVideoPipeline whose prepare_latents returns SVI's condition instead of VAE-encoding
    [image, zeros…]. Set `svi_anchor` / `svi_motion` before each call; run with output_type="latent"."""

    svi_anchor: torch.Tensor | None = None
    svi_motion: torch.Tensor | None = None

    def prepare_latents(self, image, batch_size, num_channels_latents=16, height=480, width=832, num_frames=81,
                        dtype=None, device=None, generator=None, latents=None, last_image=None):
        if self.svi_anchor is None:
            raise RuntimeError("SVIPipeline: set svi_anchor before calling the pipeline")
        if last_image is not None or self.config.expand_timesteps:
            raise ValueError("SVI 2.0 Pro takes no last image and needs Wan 2.2 A14B I2V (not TI2V-5B)")
        num_latents = (num_frames - 1) // self.vae_scale_factor_temporal + 1
        shape = (batch_size, num_channels_latents, num_latents, height // self.vae_scale_factor_spatial,
                 width // self.vae_scale_factor_spatial)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            latents = latents.to(device=device, dtype=dtype)
        condition = svi_condition(self.svi_anchor, self.svi_motion, num_latents, self.vae_scale_factor_temporal)
        return latents, condition.to(device=device, dtype=dtype).repeat(batch_size, 1, 1, 1, 1)


def svi_view(pipe) -> SVIPipeline:
    """An SVIPipeline over the cached pipeline's modules (no weights loaded or copied). It starts from
    the model's own scheduler and expert switch, not whatever the last job left on `pipe`."""
    # Not from_pipe: it casts every module to float32 unless told a dtype, which would undo the
    # cache's bf16/fp8 choice for the I2V tab too. The constructor only registers the modules.
    view = SVIPipeline(**pipe.components, boundary_ratio=pipe.config.boundary_ratio,
                       expand_timesteps=pipe.config.get("expand_timesteps", False))
    tuning.share_originals(pipe, view)
    return view


def _latent_stats(pipe, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    config = pipe.vae.config
    mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(like.device, like.dtype)
    std = torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(like.device, like.dtype)
    return mean, std


@torch.no_grad()
def encode_anchor(pipe, image: Image.Image, height: int, width: int) -> torch.Tensor:
    """The user's image encoded alone: one normalized latent [1, 16, 1, h, w] (float32, on CPU)."""
    vae_device = get_module_execution_device(pipe.vae)
    pixels = pipe.video_processor.preprocess(image, height=height, width=width)
    pixels = pixels.unsqueeze(2).to(device=vae_device, dtype=pipe.vae.dtype)
    latent = retrieve_latents(pipe.vae.encode(pixels), sample_mode="argmax").float()
    mean, std = _latent_stats(pipe, latent)
    return ((latent - mean) / std).cpu()


@torch.no_grad()
def decode(pipe, latents: torch.Tensor) -> np.ndarray:
    """Normalized latents → frames (F, H, W, 3) float in [0, 1]."""
    vae_device = get_module_execution_device(pipe.vae)
    latents = latents.to(device=vae_device, dtype=pipe.vae.dtype)
    mean, std = _latent_stats(pipe, latents)
    video = pipe.vae.decode(latents * std + mean, return_dict=False)[0]
    return pipe.video_processor.postprocess_video(video, output_type="np")[0]
