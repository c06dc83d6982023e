"""What the accelerator is and how much memory it has, for /health and the model cache."""

from __future__ import annotations

import torch

MB = 1024 * 1024


def device_info() -> dict:
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return {"device": f"cuda:{torch.cuda.current_device()} {torch.cuda.get_device_name()}",
                "vram_total_mb": total // MB, "vram_free_mb": free // MB}
    return {"device": "cpu", "vram_total_mb": 0, "vram_free_mb": 0}
