"""UI cold start: how long until a user sees the page, split into its parts, one run.

    python bench/ui_cold_start.py [--runs 3]

Each part runs in a fresh interpreter (imports are what a cold start pays): `import gradio`,
`import diffbox.ui.app` (gradio + diffbox's UI; ui/ never imports torch, services do), Services.start
in demo mode (torch, diffusers, the library scan, the demo models already built), build_app() (the
Blocks), and `python app.py --demo` until /health answers. Median seconds; ratio against
`import gradio`, the floor any Gradio app pays.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETUP = """
import time, sys
from pathlib import Path
sys.path.insert(0, {root!r})
home = Path({home!r})
"""
PARTS = {
    "import gradio": "t = time.perf_counter(); import gradio; print(time.perf_counter() - t)",
    "import diffbox.ui.app": "t = time.perf_counter(); import diffbox.ui.app; print(time.perf_counter() - t)",
    "Services.start (demo)": """
import diffbox.ui.app
from diffbox.services import Services
from diffbox.settings import Settings, prepare_home
t = time.perf_counter()
settings = Settings(home=home, demo=True); prepare_home(settings, env={{}}); services = Services.start(settings)
print(time.perf_counter() - t); services.hub and services.hub.close()
""",
    "build_app (Blocks)": """
from diffbox.services import Services
from diffbox.settings import Settings, prepare_home
from diffbox.ui.app import build_app
settings = Settings(home=home, demo=True); prepare_home(settings, env={{}}); services = Services.start(settings)
t = time.perf_counter(); build_app(services); print(time.perf_counter() - t)
services.hub and services.hub.close()
""",
}


def run_part(code: str, home: str) -> float:
    script = SETUP.format(root=str(ROOT), home=home) + code.format()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True,
                         timeout=600).stdout
    return float(out.strip().splitlines()[-1])


def app_until_health(home: str) -> float:
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py", "--demo", "--home", home, "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            assert process.poll() is None, "app exited"
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="diffbox-bench-")
    run_part(PARTS["Services.start (demo)"], home)  # builds the demo models once; not part of any figure
    samples: dict[str, list[float]] = {name: [] for name in [*PARTS, "app.py --demo → /health"]}
    for _ in range(args.runs):
        for name, code in PARTS.items():
            samples[name].append(run_part(code, home))
        samples["app.py --demo → /health"].append(app_until_health(home))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    floor = medians["import gradio"]
    print(f"{'part':<28}{'seconds':>9}{'× import gradio':>17}")
    for name, seconds in medians.items():
        print(f"{name:<28}{seconds:>9.2f}{seconds / floor:>17.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
