"""The first-run screen: shown above the tabs while the library holds no workflow model at all.

A fresh pod has an empty models/ folder and every Generate would fail with "no model in the library".
This screen measures the pod (VRAM, host RAM as its cgroup allows, free disk under models/), shows the
pod plan for it (engine/pod_plan.py: which published files, how each workflow will run, or why it cannot)
and queues exactly that plan in one click, recording the variants it sets up so they appear in the model
pickers once their files land. Or it builds the tiny demo models (seconds, offline) so the app can be
tried before tens of GB arrive.
"""

from __future__ import annotations

import gradio as gr

from diffbox.engine.pod_plan import GB, GiB, PodPlan, recommend
from diffbox.hub import pod_setup
from diffbox.markup import code, md
from diffbox.services import Services
from diffbox.workflows.registry import WORKFLOWS

INTRO = """### Welcome: no models yet
diffbox found no model under `models/` in its home folder. {measured}

Or try the app first with **tiny demo models** (built in seconds, offline; their outputs are noise by design).
You can also pick single models in the **Models** tab."""
NO_GPU = ("**No CUDA GPU was found** ({device}): the published models need one, so nothing is proposed for "
          "this machine. Start diffbox on a GPU pod for a download plan (24 GB of VRAM with 48 GB of RAM runs "
          "every workflow with quantised weights; README's Pod sizes has the table), or try the demo models, "
          "which run on the CPU.")


def needs_first_run(services: Services) -> bool:
    return not any(services.models(name) for name, workflow in WORKFLOWS.items() if workflow.first_run)


def _gb(count: int) -> str:
    return f"{count / GB:.1f} GB"


def _gib(count: int) -> str:
    return f"{count / GiB:.1f} GiB"


def measured_plan(services: Services) -> tuple[dict, PodPlan | None]:
    """The pod's measured resources and the plan for them (None without a GPU: no plan fits a CPU)."""
    pod = services.pod_resources()
    if not pod["vram_bytes"]:
        return pod, None
    return pod, recommend(pod["vram_bytes"] / GiB, pod["ram_bytes"] / GiB, max(pod["disk_free_bytes"], 1) / GB)


def plan_text(pod: dict, plan: PodPlan | None) -> str:
    """The plan as Markdown: what will be downloaded (bytes, total against free disk) and how each workflow
    runs (placement and why, or why not, with numbers)."""
    vram = f"**{_gib(pod['vram_bytes'])} VRAM**, " if pod["vram_bytes"] else ""
    measured = (f"This pod: {vram}**{_gib(pod['ram_bytes'])} RAM**, **{_gb(pod['disk_free_bytes'])} free disk** "
                "for models.")
    if plan is None:
        return measured + "\n\n" + NO_GPU.format(device=md(pod["device"]))
    lines = [measured, "", "**What will be downloaded** (it resumes if interrupted):", "",
             "| Download | Size |", "|---|---:|"]
    for request in pod_setup.requests(plan):
        what = code(request.model_id + (f"/{request.file}" if request.file else ""))
        if request.without:
            what += f" (the folder, without the weights of {', '.join(request.without)})"
        lines.append(f"| {what} | {_gb(request.bytes)} |")
    lines.append(f"| **Total** | **{_gb(plan.total_bytes)}** of {_gb(pod['disk_free_bytes'])} free |")
    lines += ["", "**How each workflow will run:**", "", "| Workflow | Runs | Weights | Placement | VRAM | RAM | Why |",
              "|---|---|---|---|---:|---:|---|"]
    for workflow, placed in plan.workflows.items():
        title = WORKFLOWS[workflow].title if workflow in WORKFLOWS else workflow
        lines.append(f"| {title} | {'yes' if placed.fits else '**does not fit**'} | "
                     f"{md(placed.weights)} | {placed.placement or '-'} | {_gib(placed.vram_bytes)} | "
                     f"{_gib(placed.ram_bytes)} | {md(placed.why)} |")
    names = [v.name for v in pod_setup.variants(plan)]
    if names:
        lines += ["", "The model pickers will offer " + ", ".join(f"**{md(n)}**" for n in names)
                  + " once its files have landed."]
    return "\n".join(lines)


def build_first_run(services: Services) -> None:
    shown = needs_first_run(services)
    pod, plan = measured_plan(services) if shown else ({}, None)
    with gr.Group(visible=shown, elem_id="first-run") as group:
        gr.Markdown(INTRO.format(measured=plan_text(pod, plan) if shown else ""), elem_id="first-run-plan")
        with gr.Row():
            download = gr.Button("Download this plan", variant="primary", elem_id="first-run-download",
                                 visible=bool(plan and plan.files))
            demo = gr.Button("Try demo models", elem_id="first-run-demo")
    status = gr.Markdown(elem_id="first-run-status")  # outside the group: it stays when the group hides

    def download_plan():
        if services.downloads is None:
            raise gr.Error("Downloads are not available in this mode.", title="Cannot download", print_exception=False)
        _, current = measured_plan(services)  # measured again: the disk may have filled since the page loaded
        if current is None or not current.files:
            raise gr.Error("Nothing fits this pod: see the plan for why.", title="Nothing to download",
                           print_exception=False)
        done = pod_setup.queue(current, services.downloads, services.library)
        text = (f"Queued {len(done['queued'])} download(s), {_gb(current.total_bytes)}: follow them in "
                "**Models → Downloads**; reload the page when they finish.")
        if done["variants"]:
            text += " Then pick " + ", ".join(f"**{md(n)}**" for n in done["variants"]) + " in the forms."
        return text + ("\n\nNot queued:\n" + "\n".join(f"- {md(f)}" for f in done["failed"]) if done["failed"] else "")

    def build_demo():
        from diffbox.demo import ensure_demo_models  # builds tiny random-weight models; no download

        ensure_demo_models(services.settings.demo_models_dir)
        if services.hub is not None:
            services.library.refresh()
        return (gr.Group(visible=needs_first_run(services)),
                "Demo models are ready under `models/demo`. **Reload the page** to pick them in the forms.")

    private = {"api_visibility": "private"}
    download.click(download_plan, None, status, api_name="ui_first_run_download", **private)
    demo.click(build_demo, None, [group, status], api_name="ui_first_run_demo", **private)
