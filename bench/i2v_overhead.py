"""What diffbox adds on top of a bare diffusers call, measured in one run on the tiny Wan model.

    python bench/i2v_overhead.py [--runs 5]

Three ways to make the same 9-frame 32×32 video, all warm (model loaded, first call done):
the bare `pipe(...)` call + mp4 export, the same job through Services (validation, GPU lock,
history records, LoRA/tuning setup, metadata, mp4), and through the HTTP API with gradio_client.
Prints milliseconds per job and the overhead ratio against the bare call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from _demo import PARAMS, ROOT, start_demo_services


def timed(fns: dict, runs: int) -> dict[str, float]:
    """Median ms per call of each function, interleaved so that load from other processes hits all alike."""
    for fn in fns.values():
        fn()  # warm
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1000 for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import torch
    from diffusers.utils import export_to_video
    from PIL import Image
    services, home, image_path = start_demo_services()
    model = services.resolve_model("i2v", "")
    pipe = services.cache.get(model.path).pipe
    negative = services.specs["i2v"]["negative_prompt"].default

    def bare():
        frames = pipe(image=Image.open(image_path).convert("RGB"), prompt=PARAMS["prompt"], negative_prompt=negative,
                      height=32, width=32, num_frames=9, num_inference_steps=4, guidance_scale=3.5,
                      guidance_scale_2=3.5, generator=torch.Generator().manual_seed(1), output_type="np").frames[0]
        export_to_video(list(frames), str(home / "bare.mp4"), fps=16)

    def through_services():
        assert services.submit_i2v(PARAMS, str(image_path)).wait(300).status == "done"

    port = "7899"
    server = subprocess.Popen([sys.executable, "app.py", "--demo", "--home", str(home / "api-home"), "--port", port],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        from gradio_client import Client, handle_file
        deadline = time.monotonic() + 240
        while True:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        def through_api():
            client.predict(PARAMS, handle_file(str(image_path)), None, api_name="/i2v")

        results = timed({"bare pipe + mp4": bare, "services (runner)": through_services, "HTTP API": through_api},
                        args.runs)
    finally:
        server.terminate()
        server.wait(30)

    bare_ms = results["bare pipe + mp4"]
    print(f"{'path':<22}{'ms/job':>10}{'overhead ms':>14}{'ratio':>8}")
    for name, ms in results.items():
        print(f"{name:<22}{ms:>10.0f}{ms - bare_ms:>14.0f}{ms / bare_ms:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
