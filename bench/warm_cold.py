"""Cold job (model loaded from disk first) vs warm job (model already in the cache), one run, tiny Wan model.

    python bench/warm_cold.py [--runs 5]

Each cold job starts after `cache.clear()`, so it pays the load (files → pipeline → device) that a
real pod pays once per model; a warm job finds the pipeline in the ModelCache. Interleaved, median
ms. On the tiny demo model the load is small in absolute terms; the ratio shows that the cache works
and how much of a short job loading would otherwise be. Jobs go through Services, as the UI's do.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _demo import PARAMS, start_demo_services


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    services, home, image_path = start_demo_services()

    def job() -> float:
        start = time.perf_counter()
        assert services.submit_i2v(PARAMS, str(image_path)).wait(300).status == "done"
        return (time.perf_counter() - start) * 1000

    job()  # imports, kernels, first-call costs: neither cold nor warm should pay them
    cold, warm = [], []
    for _ in range(args.runs):
        services.cache.clear()
        cold.append(job())
        warm.append(job())
    cold_ms, warm_ms = statistics.median(cold), statistics.median(warm)
    print(f"{'job':<28}{'ms/job':>10}{'ratio':>8}")
    print(f"{'warm (model cached)':<28}{warm_ms:>10.0f}{1:>8.2f}")
    print(f"{'cold (load + job)':<28}{cold_ms:>10.0f}{cold_ms / warm_ms:>8.2f}")
    print(f"load share of a cold job: {100 * (cold_ms - warm_ms) / cold_ms:.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
