"""What a long job history costs each new job: 0, 5,000 and 20,000 earlier records, in one run.

    python bench/history_overhead.py [--jobs 40]

Each job is an empty one through the JobRunner (queued → running → done: the history writes and
the GPU lock every real job pays, without the model), so the time per job is the history's
overhead. Also times `/history(10)`'s read. The three histories are used in turn, so load from
other processes hits all alike; medians, and ratios to the empty history (goal: ≤ 1.1 at 20,000).
The earlier records are realistic i2v records, brought in the way an old tinydb history is.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffbox.engine.runner import JobResult, JobRunner  # noqa: E402
from diffbox.store import DONE, JobHistory  # noqa: E402

SIZES = (0, 5_000, 20_000)


def old_record(n: int) -> dict:
    """An i2v record as the app writes them: ~40 parameters, a prompt, outputs, metadata and timings."""
    params = {"prompt": f"a red fox running through fresh snow, cinematic light, take {n}", "negative_prompt": "",
              "width": 832, "height": 480, "num_frames": 81, "fps": 16, "num_inference_steps": 40, "seed": n,
              "guidance_scale": 3.5, "guidance_scale_2": 3.0, "model": "Wan-AI/Wan2.2-I2V-A14B-Diffusers",
              "loras": [], "dtype": "auto", "weights": "auto", "placement": "auto", "attention": "auto",
              "step_cache": "off", **{f"expert_{k}": k for k in range(24)}}
    job_id = f"2026{n:010d}-{n % 999999:06x}"
    created = 1.7e9 + n * 60
    return {"id": job_id, "workflow": "i2v", "status": DONE, "params": params, "created_at": created,
            "started_at": created + 1, "finished_at": created + 300,
            "outputs": [f"/workspace/outputs/{job_id}/video.mp4"],
            "metadata": {"params": params, "frames": 81, "model": params["model"]}, "error": None,
            "steps_done": 40, "steps_total": 40, "notes": [], "timings": {"wait_s": 1.0, "run_s": 299.0}}


def history_with(folder: Path, count: int) -> tuple[JobHistory, float]:
    """A history holding `count` earlier records; returns it and the seconds its one-time import took."""
    folder.mkdir(parents=True)
    legacy = folder / "jobs.json"
    if count:
        legacy.write_text(json.dumps({"jobs": {str(n): old_record(n) for n in range(count)}}))
    start = time.perf_counter()
    history = JobHistory(legacy)
    return history, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=40, help="jobs per history size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        histories, imports = {}, {}
        for size in SIZES:
            histories[size], imports[size] = history_with(root / str(size), size)
        runners = {size: JobRunner(history, root / "outputs", max_waiting=1) for size, history in histories.items()}
        job_s: dict[int, list[float]] = {size: [] for size in SIZES}
        list_s: dict[int, list[float]] = {size: [] for size in SIZES}
        for _ in range(args.jobs + 1):
            for size in SIZES:
                start = time.perf_counter()
                job = runners[size].submit("i2v", old_record(0)["params"], lambda ctx: JobResult())
                assert job.wait(30).status == DONE
                job_s[size].append(time.perf_counter() - start)
                start = time.perf_counter()
                assert len(histories[size].list(limit=10)) == 10 or size == 0
                list_s[size].append(time.perf_counter() - start)
        base_job = statistics.median(job_s[0][1:])  # the first round warms up
        base_list = statistics.median(list_s[0][1:])
        print(f"{'earlier records':>15}  {'ms/job':>7}  {'ratio':>5}  {'history(10) ms':>14}  {'ratio':>5}  "
              f"{'import s':>8}")
        for size in SIZES:
            per_job, per_list = statistics.median(job_s[size][1:]), statistics.median(list_s[size][1:])
            print(f"{size:>15,}  {per_job * 1000:>7.2f}  {per_job / base_job:>5.2f}  {per_list * 1000:>14.2f}  "
                  f"{per_list / base_list:>5.2f}  {imports[size]:>8.2f}")
        for history in histories.values():
            history.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
