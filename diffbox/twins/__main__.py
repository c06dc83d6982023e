"""python -m diffbox.twins build DIR [--seed N] [NAME ...] | markdown (readme | catalogue)"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from diffbox.twins import TWINS, build_twin
from diffbox.twins.docs import catalogue, verified_with_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffbox.twins", description="miniature twins of published files")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build twins (all by default) under DIR")
    build.add_argument("dir", type=Path, metavar="DIR")
    build.add_argument("names", nargs="*", metavar="NAME")
    build.add_argument("--seed", type=int, default=0)
    markdown = commands.add_parser("markdown", help="print README's table or docs/twins.md's catalogue")
    markdown.add_argument("which", choices=("readme", "catalogue"))
    args = parser.parse_args(argv)

    if args.command == "markdown":
        print(verified_with_table(TWINS) if args.which == "readme" else catalogue(TWINS), end="")
        return 0
    unknown = [name for name in args.names if name not in TWINS]
    if unknown:
        parser.error(f"unknown twin(s): {', '.join(unknown)}")
    started = time.perf_counter()
    for name in args.names or TWINS:
        print(f"{name}: {build_twin(name, args.dir, args.seed)}", flush=True)
    print(f"{len(args.names or TWINS)} twins in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
