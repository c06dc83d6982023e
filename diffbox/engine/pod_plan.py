"""A pod plan: which published files to download for the VRAM, RAM and disk a pod has, and how each
workflow will then run. Pure: no torch, no files read; the sizes come from published.py and the
decisions from memory.py's choose_placement, the same function the model cache uses at run time, so
a plan says what the cache will do.

How a plan is made:

- for every weight variant of a model (16-bit, scaled fp8, GGUF Q8_0 ... Q3/Q4), each workflow is placed
  as the cache would place it on this pod (VRAM ladder, host RAM projection, loading peak included);
  a variant fits a workflow when a placement fits both the VRAM and the RAM (never "try it anyway");
- quality decides between variants that fit: 16-bit > GGUF Q8_0 > scaled fp8 file > 16-bit weights the
  app stores in fp8 (plain cast, no scales) > Q6_K > Q5_K_M > Q4_K_M > Q3_K_M; speed (the placement)
  is the cache's business within a variant;
- then the download set: one Wan variant (i2v and svi share it, svi adds its LoRA pair) and one Qwen
  variant, the combination that runs the most wanted workflows (in the order asked), then the best
  quality, then the smallest download, among those whose bytes fit the disk with a margin left free.

Units: VRAM and RAM in GiB (what torch and psutil report: a "24 GB" card has 24 GiB), disk in GB of
10^9 bytes (what the hub's sizes and a volume's size are written in). RAM is the pod's total: the app's
own process (``APP_RAM``) is taken off it.

README's "Pod sizes" table is ``markdown()`` over ``POD_SIZES``: ``python -m diffbox.engine.pod_plan markdown``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from diffbox.engine import published
from diffbox.engine.memory import (GiB, ComponentEstimate, HostMemoryError, MemoryStatus, activation_reserve,
                                   choose_placement, format_bytes, placement_label)

WORKFLOWS = ("i2v", "svi", "qwen_edit")
# Finishing workflows need no planning of their own: Upscale's model is 67 MB and runs in tiles (under 1 GiB
# of VRAM or RAM whatever the video), Interpolate is ffmpeg on the CPU. A plan adds them (unless `workflows`
# leaves them out), the upscaler's file when the volume still holds it next to the rest.
FINISHING = ("upscale", "interpolate")
UPSCALE_MEMORY = GiB
MODEL_OF = {"i2v": "wan", "svi": "wan", "qwen_edit": "qwen"}
APP_RAM = 4 * GiB  # Python, torch, the CUDA context's host side, Gradio, a decoded video or two
DISK_MARGIN = 5 * 10**9  # left free for outputs, the database and a partial download's temp file
DISK_MARGIN_FRACTION = 0.02
GB = 10**9

# Quality rank of the weights a job computes with (lower is better), and how a plan names them.
QUALITY = {"fp16": 0, "bf16": 0, "Q8_0": 1, "fp8_scaled": 2, "fp8_storage": 2.5, "Q6_K": 3, "Q5_K_M": 4, "Q4_K_M": 5,
           "Q3_K_M": 6}
LABELS = {"fp16": "16-bit", "bf16": "16-bit", "fp8_scaled": "scaled fp8 file", "Q8_0": "GGUF Q8_0",
          "Q6_K": "GGUF Q6_K", "Q5_K_M": "GGUF Q5_K_M", "Q4_K_M": "GGUF Q4_K_M", "Q3_K_M": "GGUF Q3_K_M"}
VARIANTS = {"wan": published.WAN_EXPERTS, "qwen": published.QWEN_TRANSFORMERS}
BASES = {"wan": published.WAN_BASE, "qwen": published.QWEN_BASE}
VAE_DTYPE = {"wan": "float32", "qwen": "bfloat16"}  # the workflows' defaults (Wan's VAE runs in float32)


@dataclass(frozen=True)
class WorkflowPlan:
    fits: bool
    placement: str  # a placement mode, "" when it does not fit
    weights: str  # e.g. "GGUF Q8_0", "16-bit stored as fp8"
    vram_bytes: int
    ram_bytes: int
    why: str
    variant: str = ""  # the key in published.WAN_EXPERTS / QWEN_TRANSFORMERS
    storage: str = ""  # the cache's weights setting: native | fp8
    quality: float = 99.0

    def public(self) -> dict:
        return {"fits": self.fits, "placement": self.placement, "weights": self.weights,
                "vram_bytes": self.vram_bytes, "ram_bytes": self.ram_bytes, "why": self.why}


@dataclass(frozen=True)
class PodPlan:
    files: tuple[published.PublishedFile, ...]
    workflows: dict[str, WorkflowPlan]
    vram_bytes: int
    ram_bytes: int
    disk_bytes: int

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def public(self) -> dict:
        """The /recommend answer."""
        return {"files": [{"source": f.source, "id": f.repo, "file": f.path, "bytes": f.bytes} for f in self.files],
                "total_bytes": self.total_bytes,
                "workflows": {name: plan.public() for name, plan in self.workflows.items()}}


def disk_budget(disk_bytes: int) -> int:
    return max(0, int(disk_bytes * (1 - DISK_MARGIN_FRACTION)) - DISK_MARGIN)


def component_estimates(model: str, variant: str, weights: str, lora_bytes: int = 0) -> dict[str, ComponentEstimate]:
    """What the cache's header estimate gives for this model with ``variant`` as its transformer(s)."""
    loaded = published.LOADED
    components = {"text_encoder": loaded[(model, "text_encoder", "bfloat16", "native")],
                  "vae": loaded[(model, "vae", VAE_DTYPE[model], "native")]}
    for name, file in _variant_files(model, variant).items():
        if variant.startswith("Q"):
            estimate = published.quantized_estimate(model, name, sum(f.bytes for f in file))
        else:  # 16-bit and scaled fp8 files load into bf16 (fp8 is dequantised), then take the storage asked for
            estimate = loaded[(model, "transformer", "bfloat16", weights)]
            estimate = ComponentEstimate(name, *[getattr(estimate, f) for f in (
                "total_bytes", "outside_blocks_bytes", "largest_block_bytes", "largest_leaf_bytes", "block_level")])
        if lora_bytes:
            estimate = published.with_lora(estimate, lora_bytes, published.BLOCKS[model])
        components[name] = estimate
    return components


def _variant_files(model: str, variant: str) -> dict[str, tuple[published.PublishedFile, ...]]:
    files = VARIANTS[model][variant]
    return {name: (f,) if isinstance(f, published.PublishedFile) else tuple(f) for name, f in files.items()}


def variant_files(model: str, variant: str) -> tuple[published.PublishedFile, ...]:
    return BASES[model] + tuple(f for files in _variant_files(model, variant).values() for f in files)


def place(workflow: str, variant: str, vram_bytes: int, ram_bytes: int) -> WorkflowPlan:
    """How the cache would run ``workflow`` with ``variant`` on this pod (fits False with the reason)."""
    model = MODEL_OF[workflow]
    lora = published.LORA_RANK_128_BF16 if workflow == "svi" else 0
    cache: dict[str, dict[str, ComponentEstimate]] = {}

    def estimates(weights: str) -> dict[str, ComponentEstimate]:
        if weights not in cache:
            cache[weights] = component_estimates(model, variant, weights, lora)
        return cache[weights]

    gpu = MemoryStatus("cuda", vram_bytes, vram_bytes)
    host = MemoryStatus("cpu", ram_bytes, max(0, ram_bytes - APP_RAM))
    label = LABELS[variant]
    try:
        placement = choose_placement(estimates, gpu, activation_reserve(estimates("native")), host=host)
    except HostMemoryError as error:
        return WorkflowPlan(False, "", label, error.vram_bytes, error.host_bytes + APP_RAM,
                            f"{label}: needs {format_bytes(error.host_bytes + APP_RAM)} of RAM with {error.label} "
                            f"(the app's {format_bytes(APP_RAM)} included); the pod has {format_bytes(ram_bytes)}",
                            variant)
    if placement.projected_bytes > vram_bytes:
        return WorkflowPlan(False, "", label, placement.projected_bytes, placement.host_bytes,
                            f"{label}: needs {format_bytes(placement.projected_bytes)} of VRAM even with "
                            f"{placement.label}; the GPU has {format_bytes(vram_bytes)}", variant)
    stored = placement.weights == "fp8" and not variant.startswith("Q")
    weights = f"{label} stored as fp8" if stored else label
    quality = max(QUALITY[variant], QUALITY["fp8_storage"]) if stored else QUALITY[variant]
    why = (f"{weights}, {placement_label(placement.mode, 'native')}: projected "
           f"{format_bytes(placement.projected_bytes)} of {format_bytes(vram_bytes)} VRAM and "
           f"{format_bytes(placement.host_bytes + APP_RAM)} of {format_bytes(ram_bytes)} RAM (the app included)")
    return WorkflowPlan(True, placement.mode, weights, placement.projected_bytes, placement.host_bytes + APP_RAM,
                        why, variant, placement.weights, quality)


def recommend(vram_gb: float, ram_gb: float, disk_gb: float,
              workflows: tuple[str, ...] = WORKFLOWS + FINISHING) -> PodPlan:
    """The download set and per-workflow placements for a pod; see the module docstring."""
    unknown = [w for w in workflows if w not in WORKFLOWS + FINISHING]
    if unknown:
        raise ValueError(f"workflows: unknown {', '.join(unknown)}; expected some of "
                         f"{', '.join(WORKFLOWS + FINISHING)}")
    finishing = [w for w in workflows if w in FINISHING]
    workflows = tuple(w for w in workflows if w in WORKFLOWS)
    vram, ram, disk = (int(_size(name, value) * unit) for name, value, unit in (
        ("vram_gb", vram_gb, GiB), ("ram_gb", ram_gb, GiB), ("disk_gb", disk_gb, GB)))
    budget = disk_budget(disk)
    # Every variant of each wanted model, placed for each wanted workflow of it.
    options: dict[str, list[dict[str, WorkflowPlan] | None]] = {}
    for model in ("wan", "qwen"):
        wanted = [w for w in workflows if MODEL_OF[w] == model]
        options[model] = [None] + ([{w: place(w, v, vram, ram) for w in wanted} for v in VARIANTS[model]]
                                   if wanted else [])
    best, best_key = None, None
    for wan, qwen in itertools.product(options["wan"], options["qwen"]):
        chosen = {**(wan or {}), **(qwen or {})}
        runs = [w for w in workflows if w in chosen and chosen[w].fits]
        if (wan and not any(p.fits for p in wan.values())) or (qwen and not any(p.fits for p in qwen.values())):
            continue  # downloading a model none of whose workflows run here is never the plan
        files = _download_set(chosen, runs)
        size = sum(f.bytes for f in files)
        if size > budget:
            continue
        key = (tuple(w not in runs for w in workflows), sum(chosen[w].quality for w in runs), size)
        if best_key is None or key < best_key:
            best, best_key = (chosen, runs, files), key
    chosen, runs, files = best if best else ({}, [], ())
    plans = {w: chosen[w] if w in runs else _why_not(w, vram, ram, disk, budget, chosen, runs) for w in workflows}
    files, finished = _finishing(finishing, files, budget, vram, ram, bool(runs))
    return PodPlan(files, {**plans, **finished}, vram, ram, disk)


def _finishing(wanted: list[str], files: tuple, budget: int, vram: int, ram: int, generates: bool):
    """The finishing workflows' plans, and the files with the upscaler's added when it is wanted and fits.
    They finish what the pod generates: a pod that runs no generation workflow gets no plan for them."""
    plans = {}
    if not generates:
        why = "Nothing to finish: no generation workflow fits this pod (see their reasons)"
        return files, {w: WorkflowPlan(False, "", "", 0, 0, why) for w in wanted}
    if "upscale" in wanted:
        room = budget - sum(f.bytes for f in files) >= published.UPSCALER.bytes
        fits = room and ram >= APP_RAM + UPSCALE_MEMORY
        files = files + ((published.UPSCALER,) if fits else ())
        why = (f"RealESRGAN x4 ({format_bytes(published.UPSCALER.bytes)}) in 512-pixel tiles: under "
               f"{format_bytes(UPSCALE_MEMORY)} whatever the picture or video" if fits else
               "Not enough disk left for the upscaler next to the rest of the plan" if not room else
               "Not enough RAM left next to the app itself")
        plans["upscale"] = WorkflowPlan(fits, ("gpu" if vram else "cpu") if fits else "", "float32 file",
                                        UPSCALE_MEMORY if vram else 0, APP_RAM + UPSCALE_MEMORY, why)
    if "interpolate" in wanted:
        plans["interpolate"] = WorkflowPlan(True, "cpu", "no model", 0, APP_RAM + UPSCALE_MEMORY,
                                            "ffmpeg's minterpolate on the CPU, the frames in RAM: nothing to "
                                            "download")
    return files, plans


def _size(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name}: must be a number of GB, got {str(value)[:40]!r}") from None
    if not 0 < number <= 100_000:  # also refuses NaN
        raise ValueError(f"{name}: must be more than 0 and at most 100000 GB, got {number:g}")
    return number


def _download_set(chosen: dict[str, WorkflowPlan], runs: list[str]) -> tuple[published.PublishedFile, ...]:
    files: dict[tuple[str, str], published.PublishedFile] = {}
    for workflow in runs:
        plan = chosen[workflow]
        extra = published.SVI_LORAS if workflow == "svi" else ()
        for file in variant_files(MODEL_OF[workflow], plan.variant) + extra:
            files[(file.repo, file.path)] = file
    return tuple(files.values())


def _why_not(workflow: str, vram: int, ram: int, disk: int, budget: int, chosen: dict[str, WorkflowPlan],
             runs: list[str]) -> WorkflowPlan:
    """The reason a wanted workflow is not in the plan, with numbers: memory (the smallest variant's own
    reason) or disk (its smallest download next to what the plan keeps)."""
    model = MODEL_OF[workflow]
    placed = [place(workflow, v, vram, ram) for v in VARIANTS[model]]
    fitting = [p for p in placed if p.fits]
    if not fitting:
        smallest = placed[-1]
        return WorkflowPlan(False, "", smallest.weights, smallest.vram_bytes, smallest.ram_bytes,
                            f"This pod ({format_bytes(vram)} VRAM, {format_bytes(ram)} RAM) is too small for "
                            f"{workflow} even with its smallest weights: {smallest.why}", smallest.variant)
    cheapest = min(fitting, key=lambda p: sum(f.bytes for f in variant_files(model, p.variant)))
    need = _download_set({**chosen, workflow: cheapest}, [*runs, workflow])
    return WorkflowPlan(False, "", cheapest.weights, cheapest.vram_bytes, cheapest.ram_bytes,
                        f"Not enough disk: {workflow} with its smallest download ({cheapest.weights}) makes "
                        f"{sum(f.bytes for f in need) / GB:.1f} GB with the rest of the plan; a {disk / GB:.0f} GB "
                        f"volume leaves {budget / GB:.1f} GB for models after keeping "
                        f"{(disk - budget) / GB:.1f} GB free", cheapest.variant)


def volume_gb_for(total_bytes: int) -> int:
    """The smallest volume, in whole GB, whose budget (after the margin kept free) holds ``total_bytes``."""
    size = int(-(-(total_bytes + DISK_MARGIN) // (1 - DISK_MARGIN_FRACTION)) // GB)
    while disk_budget(size * GB) < total_bytes:  # float rounding in the inverse
        size += 1
    return size


# The pods README's "Pod sizes" table shows (VRAM GiB, RAM GiB, volume GB): the cards people rent, with the
# host RAM and volumes they come with, and the corners where a smaller RAM or volume changes the plan.
POD_SIZES = ((24, 32, 100), (24, 48, 100), (24, 64, 150), (48, 64, 150), (48, 128, 150), (80, 128, 100),
             (80, 128, 150), (141, 256, 300))


def _cell(plan: WorkflowPlan, vram: int, ram: int) -> str:
    if plan.fits:
        return f"{plan.weights}, {placement_label(plan.placement, 'native')}"
    if plan.ram_bytes > ram:
        return f"does not fit: needs {format_bytes(plan.ram_bytes)} RAM"
    if plan.vram_bytes > vram:
        return f"does not fit: needs {format_bytes(plan.vram_bytes)} VRAM"
    return "does not fit on the volume"


def markdown(pods=POD_SIZES) -> str:
    """README's "Pod sizes" table: per pod, what the plan downloads and how each workflow runs."""
    lines = ["| VRAM × RAM × volume | Downloaded | Image → video (i2v) | SVI (svi) | Qwen edit (qwen_edit) |",
             "|---|---|---|---|---|"]
    for vram_gb, ram_gb, disk_gb in pods:
        plan = recommend(vram_gb, ram_gb, disk_gb)
        cells = [_cell(plan.workflows[w], plan.vram_bytes, plan.ram_bytes) for w in WORKFLOWS]
        lines.append(f"| {vram_gb} GB × {ram_gb} GB × {disk_gb} GB | {plan.total_bytes / GB:.1f} GB | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["markdown"]:
        sys.exit("usage: python -m diffbox.engine.pod_plan markdown")
    print(markdown(), end="")
