"""The app's parts wired together once: history, job runner, model cache, library, workflows.

The UI and the API both go through here, so a job started from a button and one started by
gradio_client take exactly the same path: validate → resolve model → runner → workflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from diffbox import __version__
from diffbox.engine.cache import ModelCache
from diffbox.engine.devices import device_info
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
        return services

    def models(self, workflow: str) -> list[LocalModel]:
        wanted = PIPELINE_CLASSES[workflow]
        return [m for m in scan_models(self.settings.models_dir) if m.pipeline_class in wanted]

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

    def submit_i2v(self, values: dict | None, image: Any, end_image: Any = None) -> Job:
        job_input = i2v.prepare(values, image, end_image, spec=self.specs["i2v"])
        model = self.resolve_model("i2v", job_input.params["model"])
        params = {**job_input.params, "model": model.name}
        job_input = i2v.I2VInput(params, job_input.image, job_input.end_image)

        def work(ctx):
            ctx.progress("loading model")
            pipe = self.cache.get(model.path)
            return i2v.run(ctx, pipe, job_input, model.name)

        return self.runner.submit("i2v", params, work)

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
