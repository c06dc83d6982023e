"""A pod plan (engine/pod_plan.py) turned into downloads and variant records.

A plan lists published files. Those of a base repo (Wan 2.2 I2V -Diffusers, Qwen-Image-Edit-2509) are
fetched as one diffusers folder, without the weights of the components the plan takes from single files
(Wan's two fp32 experts: 114 GB never downloaded); every other file is a download of its own. The
single-file components chosen are recorded as a variant ("Wan2.2-I2V-A14B · GGUF Q8_0"), which the
model pickers offer once its files have landed.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffbox.engine import pod_plan, published
from diffbox.hub.variants import Ref, Variant

BASE_REPOS = {"wan": published.WAN_REPO, "qwen": published.QWEN_REPO}
BASE_MODELS = {"wan": "wan2.2-i2v", "qwen": "qwen-edit"}
STEMS = {"wan": "Wan2.2-I2V-A14B", "qwen": "Qwen-Image-Edit-2509"}
SWAPPABLE = ("transformer", "transformer_2")


@dataclass(frozen=True)
class Request:
    source: str
    model_id: str
    file: str = ""  # "" = the whole repo
    without: tuple[str, ...] = ()  # component folders fetched without their weights
    bytes: int = 0


def variant_label(variant: str) -> str:
    """How a weights variant is named in a model's name: fp16, fp8 scaled, GGUF Q8_0, ..."""
    return f"GGUF {variant}" if variant.startswith("Q") else variant.replace("_", " ")


def variant_name(model: str, variant: str) -> str:
    return f"{STEMS[model]} · {variant_label(variant)}"


def requests(plan: pod_plan.PodPlan) -> list[Request]:
    """The downloads that fetch exactly the plan's files: one per single file, one per base folder."""
    found: list[Request] = []
    for model, repo in BASE_REPOS.items():
        files = [f for f in plan.files if f.repo == repo]
        if not files:
            continue
        present = {f.path.split("/")[0] for f in files if f.path.lower().endswith((".safetensors", ".gguf"))}
        without = tuple(c for c in SWAPPABLE if c not in present and any(
            f.path == f"{c}/config.json" for f in files))
        found.append(Request(files[0].source, repo, "", without, sum(f.bytes for f in files)))
    found += [Request(f.source, f.repo, f.path, (), f.bytes) for f in plan.files if f.repo not in BASE_REPOS.values()]
    return found


def variants(plan: pod_plan.PodPlan) -> list[Variant]:
    """The variants a plan sets up: each model whose components come from single files of other repos."""
    found, seen = [], set()
    for workflow, placed in plan.workflows.items():
        if workflow not in pod_plan.MODEL_OF:  # a finishing workflow: its file (if any) is a plain download
            continue
        model = pod_plan.MODEL_OF[workflow]
        if not placed.fits or (model, placed.variant) in seen:
            continue
        seen.add((model, placed.variant))
        parts = {}
        for component, files in pod_plan.VARIANTS[model][placed.variant].items():
            file = files if isinstance(files, published.PublishedFile) else files[0]
            if file.repo != BASE_REPOS[model]:  # the base repo's own folder needs no variant
                parts[component] = Ref(file.source, file.repo, file.path)
        if parts:
            found.append(Variant(variant_name(model, placed.variant), BASE_MODELS[model],
                                 Ref("hf", BASE_REPOS[model]), parts))
    return found


def queue(plan: pod_plan.PodPlan, downloads, library) -> dict:
    """Records the plan's variants, then queues its downloads (a failure names the file and the rest go on).
    Returns {"queued": [download ids], "failed": [sentences], "variants": [names]}."""
    names = []
    for variant in variants(plan):
        library.variant_records.add(variant.name, variant.base_model, variant.base, variant.parts)
        names.append(variant.name)
    queued, failed = [], []
    for request in requests(plan):
        try:
            queued.append(downloads.request(request.source, request.model_id, request.file, without=request.without))
        except Exception as exc:  # noqa: BLE001 - a token, network or disk problem: say which, go on
            failed.append(f"{request.model_id}{'/' + request.file if request.file else ''}: {exc}")
    return {"queued": queued, "failed": failed, "variants": names}
