"""What a workflow is, to the rest of the app: the `Workflow` object each workflow module exports as
`WORKFLOW`, its named inputs and outputs, and what `resolve` finds before a job is queued. No Gradio here.

How a job goes through a Workflow (diffbox/services.py):

    job = wf.prepare(values, spec=spec, **files)        # files by input name; InvalidParams on bad input
    resolved = (wf.resolve or services.default_resolve)(services, wf, job)   # model + LoRAs; InvalidParams
    result = wf.run(ctx, pipe, replace(job, params=...), resolved.model_name, list(resolved.loras),
                    extra_metadata={...}, **resolved.extra)          # in the GPU worker

`pipe` is the cached diffusers pipeline when the workflow has `pipeline_classes`; workflows whose models
are not diffusers pipelines (upscalers, frame interpolators) get `pipe=None` and load their model from
`resolved.extra["model_path"]` themselves (through their engine module).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from diffbox.params import ParamSpec

INPUT_KINDS = ("image", "images", "video", "mask", "file")  # file: an image or a video
OUTPUT_KINDS = ("video", "image", "images", "file")


@dataclass(frozen=True)
class Input:
    """A file argument: `name` is its keyword in prepare(), its argument in the API, its field in errors."""
    name: str
    kind: str
    label: str
    optional: bool = False


@dataclass(frozen=True)
class Output:
    """A named result: "images" takes every output file of the job, the other kinds the first one."""
    name: str
    kind: str
    label: str


@dataclass(frozen=True)
class Resolved:
    """What prepare() could not know: the library entries the job uses, found before it is queued."""
    model_name: str                         # saved as params["model"]; "" when the job uses no model
    source: Any = None                      # what ModelCache loads (a folder or a ModelSource); None = no pipeline
    loras: tuple = ()                       # LoraRequest, in application order
    extra: dict = field(default_factory=dict)   # keyword arguments for run() (Qwen: controlnet_path)
    record: dict = field(default_factory=dict)  # extra history params, not passed to run (SVI: extends)


@dataclass(frozen=True)
class Workflow:
    name: str                               # the spec's name, the API endpoint, the tab id, history's "workflow"
    title: str                              # the tab's title
    spec: ParamSpec
    inputs: tuple[Input, ...]
    outputs: tuple[Output, ...]
    prepare: Callable[..., Any]             # (values, *, spec, **files) -> job input with `.params` (validated)
    run: Callable[..., Any]                 # (ctx, pipe, job, model_name, loras, *, extra_metadata, **extra)
                                            # -> JobResult
    base_model: str = ""                    # diffusers/LoRA vocabulary (diffbox.base_models); "" = none
    pipeline_classes: tuple[str, ...] = ()  # library pipelines its model picker offers
    model_kind: str = ""                    # non-diffusers models: the library kind its picker lists ("upscaler")
    resolve: Callable[..., Resolved] | None = None  # (services, workflow, job) -> Resolved; None = default_resolve
    demo_defaults: dict = field(default_factory=dict)  # form defaults in --demo (validated at start)
    demo_models: dict[str, tuple[str, str]] = field(default_factory=dict)
    # ^ demo twin name -> (path under models/demo, "module:function" of its builder(dest, seed)), built
    #   offline by diffbox.demo; named, not imported, so a workflow never imports the twins (test support)
    first_run: bool = True                  # its models count for "the library holds no model yet"
    size_presets: dict[str, tuple[int, int]] = field(default_factory=dict)  # label -> (width, height)
    lora_weights: tuple[str, ...] = ()      # the weight fields of a LoRA row ("weight_high", "weight_low")
    description: str = ""                   # one line: the API docstring
    live_preview: bool = False              # run() emits OutputEvent("preview") images while it works

    def __post_init__(self):
        if self.name != self.spec.workflow:
            raise ValueError(f"workflow {self.name!r} carries the spec of {self.spec.workflow!r}")
        for put in self.inputs:
            if put.kind not in INPUT_KINDS:
                raise ValueError(f"{self.name}: input {put.name!r} has unknown kind {put.kind!r}")
        for out in self.outputs:
            if out.kind not in OUTPUT_KINDS:
                raise ValueError(f"{self.name}: output {out.name!r} has unknown kind {out.kind!r}")

    @property
    def uses_pipeline(self) -> bool:
        return bool(self.pipeline_classes)
