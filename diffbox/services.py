"""The app's parts wired together once: history, job runner, model cache, library, workflows.

The UI and the API both go through here, so a job started from a button and one started by
gradio_client take exactly the same path: validate → resolve model → runner → workflow.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


from diffbox import __version__
from diffbox.base_models import BY_KEY, QWEN_EDIT
from diffbox.engine.cache import ModelCache, display_name, is_out_of_memory
from diffbox.engine.devices import device_info
from diffbox.engine.loras import LoraRequest
from diffbox.engine.runner import Job, JobRunner
from diffbox.engine.loaders import ModelSource
from diffbox.hub.library import LocalModel, scan_models
from diffbox.hub.variants import Variant
from diffbox.params import InvalidParams, ParamSpec
from diffbox.settings import Settings
from diffbox.store import QUEUED, RUNNING, JobHistory
from diffbox.workflows import svi
from diffbox.workflows.registry import WORKFLOWS
from diffbox.workflows.workflow import Resolved, Workflow

log = logging.getLogger(__name__)

WORKFLOW_SPECS: dict[str, ParamSpec] = {name: workflow.spec for name, workflow in WORKFLOWS.items()}


def lora_file(name: str, available: list[LocalModel]) -> LocalModel:
    """A LoRA by its library name (its path under models/), or by its bare file name when exactly one
    library LoRA has it: the downloader puts LoRAs in models/loras/, and presets and scripts name the
    published file. LookupError with a sentence when it is missing or the file name is ambiguous."""
    exact = [m for m in available if m.name == name]
    if exact:
        return exact[0]
    same_file = [m for m in available if "/" not in name and Path(m.name).name == name]
    if len(same_file) == 1:
        return same_file[0]
    if same_file:
        raise LookupError(f"{name!r} names {len(same_file)} library files; give one of "
                          f"{', '.join(sorted(m.name for m in same_file))}")
    raise LookupError(f"{name!r} is not in the library")


def lora_refusal(problems: list[str], base_model: str, available: list[LocalModel]) -> str:
    missing = [p for p in problems if p.endswith("is not in the library")]
    text = "; ".join(problems)
    if missing:
        text += (f" (LoRAs for {base_model}: a preset's come with its \"Download its models\" button, others "
                 f"from the Models tab); available: {', '.join(sorted(m.name for m in available)) or 'none'}")
    return text


@dataclass
class Services:
    settings: Settings
    history: JobHistory
    runner: JobRunner
    cache: ModelCache
    specs: dict[str, ParamSpec] = field(default_factory=lambda: dict(WORKFLOW_SPECS))
    hub: Any = None  # diffbox.hub.hub.ModelHub: library, downloads, tokens, search; started in start()
    presets: Any = None  # diffbox.presets.PresetStore: the user's and the shipped presets
    prompt_library: Any = None  # diffbox.prompt_library.PromptLibrary: the user's and the shipped snippets

    @classmethod
    def start(cls, settings: Settings) -> "Services":
        """Expects prepare_home() to have run. In demo mode builds the tiny models first (seconds)."""
        history = JobHistory(settings.db_dir / "jobs.json")
        interrupted = history.mark_interrupted()
        if interrupted:
            log.warning("%d job(s) were cut off when the app last stopped; marked failed in the history",
                        interrupted)
        services = cls(settings, history, JobRunner(history, settings.outputs_dir), ModelCache())
        if settings.demo:
            from diffbox import demo
            demo.ensure_demo_models(settings.demo_models_dir)
            services.specs = {name: spec.with_defaults(WORKFLOWS[name].demo_defaults)
                              for name, spec in services.specs.items()}
        from diffbox.portable import apply_user_defaults  # after the demo defaults: the user's config wins
        from diffbox.presets import PresetStore
        services.specs = apply_user_defaults(services.specs, settings.db_dir)
        services.presets = PresetStore.open(settings.db_dir, services.specs)
        from diffbox.prompt_library import PromptLibrary
        services.prompt_library = PromptLibrary.open(settings.db_dir)
        from diffbox.hub.hub import ModelHub  # imports huggingface_hub, which reads HF_HOME: after prepare_home
        # Scans models/ (demo models included), resumes downloads, refreshes the model catalog when it is due.
        services.hub = ModelHub.start(settings, catalog_hours=settings.catalog_hours)
        return services

    @property
    def library(self):
        return self.hub.library if self.hub else None

    @property
    def downloads(self):
        return self.hub.downloads if self.hub else None

    @property
    def tokens(self):
        return self.hub.tokens if self.hub else None

    def library_models(self) -> list[LocalModel]:
        return self.library.models() if self.hub else scan_models(self.settings.models_dir)

    def models(self, workflow: str) -> list[LocalModel | Variant]:
        """What a workflow's model picker offers: the library's pipelines for it (its pipeline classes pin the
        base model down) that hold all their weights, then the variants whose base and parts are all here
        (a base fetched without its experts is offered only through its variants). A workflow whose models
        are not diffusers pipelines (an upscaler) lists the library's files of its model kind."""
        flow = WORKFLOWS[workflow]
        found = self.library_models()
        if not flow.uses_pipeline:
            return [m for m in found if flow.model_kind and m.kind == flow.model_kind]
        wanted = flow.pipeline_classes
        models: list[LocalModel | Variant] = [m for m in found if m.pipeline_class in wanted and not m.missing_weights]
        if self.hub:
            models += [v for v in self.library.variant_records.list(found) if v.ready and v.pipeline_class in wanted]
        return models

    @staticmethod
    def load_source(model: LocalModel | Variant) -> Path | ModelSource:
        """What the model cache loads for a picker entry: a folder, or a variant's base with its part files."""
        if isinstance(model, Variant):
            return ModelSource(model.base_model_found.path, {c: m.path for c, m in model.parts_found.items()})
        return model.path

    def loras(self, base_model: str) -> list[LocalModel]:
        """The library's LoRA files for a base model (Qwen-Image and -Edit LoRAs count for each other)."""
        if self.hub:
            return self.library.loras(base_model)
        return [m for m in scan_models(self.settings.models_dir) if m.kind == "lora" and m.base_model == base_model]

    def resolve_model(self, workflow: str, name: str) -> LocalModel | Variant:
        available = self.models(workflow)
        if not available:
            raise InvalidParams({"model": f"no {workflow} model in the library ({self.settings.models_dir}); "
                                          "download one in the Models tab, or start with --demo"})
        if not name:
            return available[0]
        for model in available:
            if model.name == name:
                return model
        raise InvalidParams({"model": f"{name!r} is not in the library; available: "
                                      f"{', '.join(m.name for m in available)}"})

    def resolve_loras(self, base_model: str, entries: list[dict]) -> list[LoraRequest]:
        """Library names → files; an unknown name is an InvalidParams naming the loras field."""
        if not entries:
            return []
        available = self.loras(base_model)
        found, problems = [], []
        for entry in entries:
            try:
                found.append(LoraRequest(entry["name"], Path(lora_file(entry["name"], available).path),
                                         entry["weight_high"], entry["weight_low"]))
            except LookupError as problem:
                problems.append(str(problem))
        if problems:
            raise InvalidParams({"loras": lora_refusal(problems, base_model, available)})
        return found

    def default_resolve(self, workflow: Workflow, job) -> Resolved:
        """The model `params["model"]` names (the first one when empty) and the `loras` rows; a workflow
        without a pipeline gets its model file's path as `model_path`."""
        model = self.resolve_model(workflow.name, job.params["model"])
        if not workflow.uses_pipeline:
            return Resolved(model.name, extra={"model_path": Path(model.path)})
        weights = workflow.lora_weights
        entries = [{"name": e["name"], "weight_high": e[weights[0]],
                    "weight_low": e[weights[1]] if len(weights) > 1 else 0.0} for e in job.params.get("loras", [])]
        return Resolved(model.name, self.load_source(model), tuple(self.resolve_loras(workflow.base_model, entries)))

    def submit(self, workflow_name: str, values: dict | None, files: dict[str, Any] | None = None, *,
               source_job: str | None = None) -> Job:
        """Validates (InvalidParams naming each bad field), finds the model and LoRAs, then queues the job.
        `files` maps the workflow's input names to uploads (paths, images, editor values). `source_job`: the
        job whose output this one finishes (a chained upscale or interpolation); its history record and
        metadata name it."""
        workflow = WORKFLOWS[workflow_name]
        job_input = workflow.prepare(values, spec=self.specs[workflow_name], **(files or {}))
        return self.queue(workflow, job_input, {"source_job": source_job} if source_job else {})

    def submit_svi_extend(self, job_id: str, values: dict | None) -> Job:
        """Continues an earlier SVI job from its saved latents with new prompts (and settings)."""
        record = self.history.get(str(job_id or "")) if job_id else None
        if not record or record.get("workflow") != "svi":
            raise InvalidParams({"job_id": f"no SVI job {job_id!r} in the history"})
        outdir = self.settings.outputs_dir / record["id"]
        return self.queue(WORKFLOWS["svi"], svi.prepare_extend(values, outdir, record["id"],
                                                               record.get("params") or {}, spec=self.specs["svi"]))

    def queue(self, workflow: Workflow, job_input, link: dict | None = None) -> Job:
        """Finds what the job uses (InvalidParams when it is missing), then hands it to the runner; the
        history records the params with the model's library name, and `link` (saved in the record and
        the output's metadata)."""
        resolved = (workflow.resolve or Services.default_resolve)(self, workflow, job_input)
        run_params = {**job_input.params, **({"model": resolved.model_name} if "model" in workflow.spec else {})}
        link = link or {}

        def attempt(ctx, loaded, overrides: dict):
            extra = {"placement": loaded.placement.mode, "weights": loaded.placement.weights} if loaded else {}
            extra.update(link)
            job = replace(job_input, params={**run_params, **overrides})
            return workflow.run(ctx, loaded.pipe if loaded else None, job, resolved.model_name, list(resolved.loras),
                                extra_metadata=extra, **resolved.extra)

        def work(ctx):
            if resolved.source is None:  # no pipeline: the workflow loads its own model, if any
                return attempt(ctx, None, {})
            return self._on_gpu(ctx, resolved.source, run_params, attempt)

        return self.runner.submit(workflow.name, {**run_params, **resolved.record, **link}, work)

    # The entry points scripts and tests have used since before the registry.
    def submit_i2v(self, values: dict | None, image: Any, end_image: Any = None) -> Job:
        return self.submit("i2v", values, {"image": image, "end_image": end_image})

    def submit_svi(self, values: dict | None, image: Any) -> Job:
        return self.submit("svi", values, {"image": image})

    def submit_qwen_edit(self, values: dict | None, images: Any = None, mask: Any = None,
                         control_image: Any = None) -> Job:
        return self.submit("qwen_edit", values, {"images": images, "mask": mask, "control_image": control_image})

    def qwen_controlnets(self) -> list[LocalModel]:
        """The library's Qwen-Image ControlNets (they serve the edit model's generate mode too)."""
        qwen = BY_KEY[QWEN_EDIT].lora_bases
        return [m for m in self.library_models() if m.kind == "controlnet" and m.base_model in qwen]

    def _on_gpu(self, ctx, path: Path | ModelSource, params: dict, attempt):
        """Loads (or reuses) the model and runs the attempt; on CUDA out-of-memory retries once, one
        placement more conservative with VAE tiling (the cache says which), else a clear error."""
        ctx.progress("loading model")
        loaded = self.cache.get(path, dtype=params["dtype"], weights=params["weights"],
                                placement=params["placement"], vae_dtype=params["vae_dtype"], log=ctx.note)
        try:
            with self.cache.measure(loaded, log=ctx.note):
                return attempt(ctx, loaded, {})
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        retry = self.cache.more_conservative(loaded, log=ctx.note)
        if retry is None:
            raise RuntimeError("out of GPU memory even with the most conservative placement: lower the "
                               "resolution or frame count, or choose fp8 weights")
        try:
            with self.cache.measure(retry, log=ctx.note):
                return attempt(ctx, retry, {"vae_tiling": True})
        except Exception as exc:
            if is_out_of_memory(exc):
                raise RuntimeError(f"out of GPU memory again with {retry.placement.mode} and VAE tiling: lower "
                                   "the resolution or frame count, or choose fp8 weights") from None
            raise

    def pod_resources(self) -> dict:
        """What a pod plan is made for, measured: total VRAM (0 without a CUDA GPU) and host RAM (the cgroup
        limit when tighter than the machine's) in bytes, and the free disk under models/ in bytes."""
        import shutil

        import torch

        from diffbox.engine.cache import cuda_memory_probe
        from diffbox.engine.host_memory import host_ram_status

        folder = self.settings.models_dir
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return {"vram_bytes": cuda_memory_probe().total_bytes if torch.cuda.is_available() else 0,
                "ram_bytes": host_ram_status().total_bytes, "disk_free_bytes": shutil.disk_usage(folder).free,
                "device": device_info()["device"]}

    def shown_name(self, cache_key: str) -> str:
        """A loaded model as /health shows it, to anyone: its library name (relative to models/) or its
        folder's / repo's short name, never a server path."""
        base = cache_key.split("+", 1)[0]
        library = {os.path.realpath(m.path): m.name for m in self.library.models(refresh=False)} if self.hub else {}
        name = library.get(os.path.realpath(base)) or display_name(base)
        return name + display_name(cache_key)[len(display_name(base)):]  # plus its single files' names, if any

    def health(self, jobs: bool = True) -> dict:
        """Every job the app holds is the runner's (it is the only GPU queue), so `waiting` counts them all.
        It names no path. `jobs=False` leaves out `queue.jobs` (one entry per job: its id, which is also
        its output folder's name, workflow, state, stage, steps, and `position`, a waiting job's place in
        line, 1 = next): GET /health answers anyone, and only a caller who may read the history gets them."""
        active = self.runner.active()
        queue = {"running": sum(1 for j in active if j.state == RUNNING),
                 "waiting": sum(1 for j in active if j.state == QUEUED)}
        if jobs:
            line = {job.id: place for place, job in enumerate(self.runner.waiting(), start=1)}
            queue["jobs"] = [{"id": j.id, "workflow": j.workflow, "state": j.state, "stage": j.stage,
                              "step": j.steps_done, "total": j.steps_total, "position": line.get(j.id)}
                             for j in active]
        return {
            "ok": True,
            "version": __version__,
            **device_info(),
            "models_loaded": [self.shown_name(key) for key in self.cache.loaded()],
            "queue": queue,
        }
