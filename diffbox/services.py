"""The app's parts wired together once: history, job runner, model cache, library, workflows.

The UI and the API both go through here, so a job started from a button and one started by
gradio_client take exactly the same path: validate → resolve model → runner → workflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from diffbox import __version__
from diffbox.engine.cache import ModelCache, is_out_of_memory
from diffbox.engine.devices import device_info
from diffbox.engine.loras import LoraRequest
from diffbox.engine.runner import Job, JobRunner
from diffbox.hub.library import LocalModel, scan_models
from diffbox.params import InvalidParams, ParamSpec
from diffbox.settings import Settings
from diffbox.store import QUEUED, RUNNING, JobHistory
from diffbox.workflows import i2v

log = logging.getLogger(__name__)

WORKFLOW_SPECS: dict[str, ParamSpec] = {"i2v": i2v.SPEC}
PIPELINE_CLASSES: dict[str, tuple[str, ...]] = {"i2v": i2v.PIPELINE_CLASSES}


@dataclass
class Services:
    settings: Settings
    history: JobHistory
    runner: JobRunner
    cache: ModelCache
    specs: dict[str, ParamSpec] = field(default_factory=lambda: dict(WORKFLOW_SPECS))
    hub: Any = None  # diffbox.hub.hub.ModelHub: library, downloads, tokens, search; started in start()

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
            services.specs = {name: spec.with_defaults(demo.DEMO_DEFAULTS.get(name, {}))
                              for name, spec in services.specs.items()}
        from diffbox.hub.hub import ModelHub  # imports huggingface_hub, which reads HF_HOME: after prepare_home
        services.hub = ModelHub.start(settings)  # scans models/ (demo models included), resumes downloads
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

    def models(self, workflow: str) -> list[LocalModel]:
        """The library's pipelines for a workflow (its pipeline classes pin the base model down)."""
        wanted = PIPELINE_CLASSES[workflow]
        found = self.library.models() if self.hub else scan_models(self.settings.models_dir)
        return [m for m in found if m.pipeline_class in wanted]

    def loras(self, base_model: str) -> list[LocalModel]:
        """The library's LoRA files for a base model (Qwen-Image and -Edit LoRAs count for each other)."""
        if self.hub:
            return self.library.loras(base_model)
        return [m for m in scan_models(self.settings.models_dir) if m.kind == "lora" and m.base_model == base_model]

    def resolve_model(self, workflow: str, name: str) -> LocalModel:
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
        available = {lora.name: lora for lora in self.loras(base_model)}
        missing = [e["name"] for e in entries if e["name"] not in available]
        if missing:
            raise InvalidParams({"loras": f"not in the library for {base_model}: {', '.join(missing)}; "
                                          f"available: {', '.join(sorted(available)) or 'none'}"})
        return [LoraRequest(e["name"], Path(available[e["name"]].path), e["weight_high"], e["weight_low"])
                for e in entries]

    def submit_i2v(self, values: dict | None, image: Any, end_image: Any = None) -> Job:
        job_input = i2v.prepare(values, image, end_image, spec=self.specs["i2v"])
        model = self.resolve_model("i2v", job_input.params["model"])
        loras = self.resolve_loras(i2v.BASE_MODEL, job_input.params["loras"])
        params = {**job_input.params, "model": model.name}
        job_input = i2v.I2VInput(params, job_input.image, job_input.end_image)

        def attempt(ctx, loaded, job_params):
            placement = {"placement": loaded.placement.mode, "weights": loaded.placement.weights}
            return i2v.run(ctx, loaded.pipe, i2v.I2VInput(job_params, job_input.image, job_input.end_image),
                           model.name, loras, extra_metadata=placement)

        return self.runner.submit("i2v", params, lambda ctx: self._on_gpu(ctx, model.path, params, attempt))

    def _on_gpu(self, ctx, path: Path, params: dict, attempt):
        """Loads (or reuses) the model and runs the attempt; on CUDA out-of-memory retries once, one
        placement more conservative with VAE tiling (the cache says which), else a clear error."""
        ctx.progress("loading model")
        loaded = self.cache.get(path, dtype=params["dtype"], weights=params["weights"],
                                placement=params["placement"], log=ctx.note)
        try:
            with self.cache.measure(loaded):
                return attempt(ctx, loaded, params)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        retry = self.cache.more_conservative(loaded, log=ctx.note)
        if retry is None:
            raise RuntimeError("out of GPU memory even with the most conservative placement: lower the "
                               "resolution or frame count, or choose fp8 weights")
        try:
            with self.cache.measure(retry):
                return attempt(ctx, retry, {**params, "vae_tiling": True})
        except Exception as exc:
            if is_out_of_memory(exc):
                raise RuntimeError(f"out of GPU memory again with {retry.placement.mode} and VAE tiling: lower "
                                   "the resolution or frame count, or choose fp8 weights") from None
            raise

    def health(self) -> dict:
        active = self.runner.active()
        return {
            "ok": True,
            "version": __version__,
            **device_info(),
            "models_loaded": self.cache.loaded(),
            "queue": {"running": sum(1 for j in active if j.state == RUNNING),
                      "waiting": sum(1 for j in active if j.state == QUEUED),
                      "jobs": [{"id": j.id, "workflow": j.workflow, "state": j.state, "stage": j.stage,
                                "step": j.steps_done, "total": j.steps_total} for j in active]},
        }
