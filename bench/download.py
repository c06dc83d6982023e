"""Throughput of diffbox's resumable downloader vs curl, for the same file from a local server.

    python bench/download.py [--size-mb 500] [--runs 3]

The file host runs in its own process (tests/fake_hubs.py serve-file, sendfile-backed), so the
server does not compete with the downloader for the GIL. diffbox computes the sha256 while it
downloads; curl does not, so curl is also timed with `sha256sum` afterwards for a like-for-like
figure. Prints MB/s for each and the ratios (diffbox / curl).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffbox.hub.transfer import fetch_resumable  # noqa: E402


def make_file(path: Path, size: int) -> str:
    hasher = hashlib.sha256()
    block = os.urandom(16 << 20)
    with open(path, "wb") as out:
        written = 0
        while written < size:
            piece = block[: min(len(block), size - written)]
            out.write(piece)
            hasher.update(piece)
            written += len(piece)
    return hasher.hexdigest()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ours(url: str, dest: Path, expected: str) -> None:
    dest.unlink(missing_ok=True)
    stop = threading.Event()
    _, digest = fetch_resumable(lambda: (url, {}), dest, on_size=lambda n: None, check=lambda: None, wait=stop.wait)
    assert digest == expected, "diffbox downloaded the wrong bytes"


def curl(url: str, dest: Path, hash_after: bool) -> None:
    dest.unlink(missing_ok=True)
    subprocess.run(["curl", "-s", "-f", "-o", str(dest), url], check=True)
    if hash_after:
        subprocess.run(["sha256sum", str(dest)], check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3, help="best of N for each tool")
    args = parser.parse_args()
    if not shutil.which("curl"):
        print("curl is not installed", file=sys.stderr)
        return 2
    size = args.size_mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="diffbox-bench-") as scratch:
        scratch = Path(scratch)
        source = scratch / "source.bin"
        expected = make_file(source, size)
        server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_hubs.py"), "serve-file", str(source)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            url = server.stdout.readline().strip()
            dest = scratch / "out.bin"
            best = {
                "diffbox (download + sha256)": min(timed(lambda: ours(url, dest, expected)) for _ in range(args.runs)),
                "curl (download)": min(timed(lambda: curl(url, dest, False)) for _ in range(args.runs)),
                "curl + sha256sum": min(timed(lambda: curl(url, dest, True)) for _ in range(args.runs)),
            }
        finally:
            server.terminate()
            server.wait(10)
    print(f"{args.size_mb} MB from a local server, best of {args.runs}:")
    for name, seconds in best.items():
        print(f"  {name:30s} {seconds:6.2f} s  {args.size_mb / seconds:8.1f} MB/s")
    ours_s = best["diffbox (download + sha256)"]
    print(f"ratio diffbox/curl throughput: {best['curl (download)'] / ours_s:.2f} "
          f"(vs curl + sha256sum: {best['curl + sha256sum'] / ours_s:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
