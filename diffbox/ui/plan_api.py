"""The pod plan's scriptable API (gradio_client), named as in README's API section:

    /recommend(vram_gb, ram_gb, disk_gb) → {"files": [{"source", "id", "file", "bytes"}], "total_bytes",
                                            "workflows": {name: {"fits", "placement", "weights", "vram_bytes",
                                                                 "ram_bytes", "why"}}}

Pure arithmetic over declared sizes (diffbox/engine/pod_plan.py): nothing is probed, downloaded or loaded,
so it never waits behind a generation job.
"""

from __future__ import annotations

import gradio as gr

from diffbox.engine.pod_plan import recommend as plan_for

LIGHT = {"concurrency_limit": None}


def register_plan_api(services) -> None:  # noqa: ARG001 - the same signature as every register_*_api
    def recommend(vram_gb: float, ram_gb: float, disk_gb: float) -> dict:
        """What to download and how each workflow runs on a pod with this much VRAM and RAM (GiB, as torch and
        psutil report them) and disk (GB of 10^9 bytes). Bytes throughout; a workflow that cannot run says why."""
        try:
            return plan_for(vram_gb, ram_gb, disk_gb).public()
        except ValueError as exc:
            raise gr.Error(str(exc), title="Invalid input", print_exception=False) from None

    gr.api(recommend, api_name="recommend", **LIGHT)
