"""Does SVI stream? Time to the first delivered clip against total time / N, through the real API.

    python bench/svi_stream.py [--clips 5] [--steps 6] [--size 64]

Starts `python app.py --demo` (tiny random-weight Wan model, CPU is fine), warms it with a one-clip
run (model load), then submits an N-clip /svi job with gradio_client and notes when each clip
reaches the client. Streaming works when the first clip arrives after about total/N, not total:
the ratio printed is first_clip_s / (total_s / N), ~1 when clips are delivered as they finish, ~N
when the client only gets them at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(home: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFBOX_")}
    env.update(GRADIO_ANALYTICS_ENABLED="False")
    process = subprocess.Popen([sys.executable, "app.py", "--demo", "--home", str(home), "--port", str(port)],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the app exited while starting")
        try:
            if httpx.get(url + "health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit("the app did not come up in 300 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    from gradio_client import Client, handle_file
    from PIL import Image

    home = Path(tempfile.mkdtemp(prefix="diffbox-svi-bench-"))
    image = home / "anchor.png"
    Image.new("RGB", (args.size, args.size), (30, 120, 220)).save(image)
    params = {"width": args.size, "height": args.size, "num_frames": 9, "num_inference_steps": args.steps,
              "seed": 1, "num_clips": args.clips, "prompts": ["a square drifting"]}
    process, url = start_app(home)
    try:
        client = Client(url, verbose=False)
        client.predict({**params, "num_clips": 1}, handle_file(str(image)), api_name="/svi")  # load the model
        started = time.perf_counter()
        job = client.submit(params, handle_file(str(image)), api_name="/svi")
        arrivals: list[float] = []
        while not job.done():
            while len(arrivals) < len(job.outputs()):
                arrivals.append(time.perf_counter() - started)
            time.sleep(0.01)
        total = time.perf_counter() - started
        outputs = job.outputs()
        arrivals += [total] * (len(outputs) - len(arrivals))
    finally:
        process.terminate()
        process.wait(30)
    if len(outputs) != args.clips + 1:
        raise SystemExit(f"expected {args.clips} clips + the stitched video, got {len(outputs)} outputs")
    per_clip = total / args.clips
    print(f"clips: {args.clips} × 9 frames at {args.size}×{args.size}, {args.steps} steps (tiny demo model)")
    print("clip arrivals (s): " + ", ".join(f"{t:.2f}" for t in arrivals[:args.clips]) + f"; stitched {arrivals[-1]:.2f}")
    print(f"first clip: {arrivals[0]:.2f} s   total: {total:.2f} s   total/N: {per_clip:.2f} s")
    print(f"ratio first_clip / (total/N): {arrivals[0] / per_clip:.2f}  (≈1 streams; ≈{args.clips} would not)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
