"""Where a finished output can go next: History's "Send to …" buttons and the "Finish with" step of the
tabs whose result is a video. Both are read from the registry, never listed by hand.

A workflow *takes* an output when it has exactly one required input and that input's kind accepts the
output's kind (a `file` input takes images and videos). A *finishing* workflow is one whose only input
takes a video (Upscale, Interpolate): its first parameter is how much it does, and "Finish with" offers
each of that parameter's values ("Upscale ×2", "Interpolate ×4"); the rest of its parameters are the
defaults of its own form. A follow-up job is an ordinary job of that workflow, queued on the finished
output with `Services.submit(..., source_job=...)`, so it has its own history record that names its source.
"""

from __future__ import annotations

from pathlib import Path

from diffbox.params import InvalidParams, Param
from diffbox.workflows.registry import WORKFLOWS
from diffbox.workflows.workflow import Input, Workflow

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
ACCEPTS = {"video": ("video", "file"), "image": ("image", "file")}  # output kind -> input kinds that take it


def output_kind(path: str) -> str | None:
    suffix = Path(path).suffix.lower()
    return "video" if suffix in VIDEO_SUFFIXES else "image" if suffix in IMAGE_SUFFIXES else None


def main_output(paths: list[str]) -> str | None:
    """A job's result as the next workflow gets it: its first video, else its first image (SVI also keeps
    its clips and latents; they come after the stitched video)."""
    for kind in ("video", "image"):
        found = next((p for p in paths if output_kind(p) == kind), None)
        if found:
            return found
    return None


def taking_input(workflow: Workflow, kind: str | None) -> Input | None:
    required = [put for put in workflow.inputs if not put.optional]
    if len(required) == 1 and required[0].kind in ACCEPTS.get(kind, ()):
        return required[0]
    return None


def takers(kind: str | None) -> list[Workflow]:
    """The workflows, in tab order, that can start from one output of this kind."""
    return [w for w in WORKFLOWS.values() if taking_input(w, kind)]


def is_finishing(workflow: Workflow) -> bool:
    return len(workflow.inputs) == 1 and taking_input(workflow, "video") is not None


def offers_finish(workflow: Workflow) -> bool:
    """A tab gets "Finish with" when its result is a video and it is not itself a finishing step."""
    return any(out.kind == "video" for out in workflow.outputs) and not is_finishing(workflow)


def amounts(param: Param) -> list:
    if param.choices:
        return list(param.choices)
    return list(range(int(param.minimum), int(param.maximum) + 1, int(param.step or 1)))


def finish_options(specs: dict) -> dict[str, tuple[str, dict]]:
    """"Upscale ×2" -> ("upscale", {"scale": 2}), for every finishing workflow and value of its first parameter."""
    options = {}
    for workflow in filter(is_finishing, WORKFLOWS.values()):
        amount = next(iter(specs[workflow.name].params))
        for value in amounts(amount):
            options[f"{workflow.title} ×{value}"] = (workflow.name, {amount.name: value})
    return options


def finish_steps(chosen: list[str] | None, specs: dict) -> list[tuple[str, str, dict]]:
    """The chosen labels as (label, workflow, params) steps in tab order; InvalidParams naming `finish` for a
    label that is not offered or for two amounts of one workflow."""
    options = finish_options(specs)
    unknown = [label for label in chosen or [] if label not in options]
    if unknown:
        raise InvalidParams({"finish": f"{', '.join(map(repr, unknown))} is not offered; choose from "
                                       f"{', '.join(options)}"})
    steps = [(label, *options[label]) for label in options if label in (chosen or [])]
    names = [name for _, name, _ in steps]
    twice = sorted({WORKFLOWS[n].title for n in names if names.count(n) > 1})
    if twice:
        raise InvalidParams({"finish": f"choose one amount of {' and '.join(twice)}, not two"})
    return steps
