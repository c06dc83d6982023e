"""What the CPU benches share: Services on a fresh demo home, one start image, one small I2V job."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARAMS = {"width": 32, "height": 32, "num_frames": 9, "num_inference_steps": 4, "seed": 1, "prompt": "a square"}


def start_demo_services():
    """(services, home, start image path): the tiny models are built into the home on first use."""
    from PIL import Image

    from diffbox.services import Services
    from diffbox.settings import Settings, prepare_home

    home = Path(tempfile.mkdtemp(prefix="diffbox-bench-"))
    settings = Settings(home=home, demo=True)
    prepare_home(settings, env={})
    services = Services.start(settings)
    image_path = home / "start.png"
    Image.new("RGB", (32, 32), (10, 120, 200)).save(image_path)
    return services, home, image_path
