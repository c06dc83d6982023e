"""How much memory a pipeline needs and where it should live, decided before any weight is loaded.

Three parts, all pure (no torch tensors, no device calls) so they can be tested with a simulated budget:

- estimate: each component's bytes from its safetensors (or GGUF) header alone, in the dtype it will
  be loaded in and with fp8/int8 weight storage where that applies, plus the shape facts the offload
  modes care about (the largest transformer block, the largest single layer);
- project: the peak VRAM of each placement, from those estimates;
- project: the host RAM of each placement too: the weights it keeps on the host, and the peak while
  loading (see ``projected_host``);
- choose: the fastest rung of the placement ladder whose projection fits the free VRAM and the free
  host RAM, with one sentence saying which and why; when no rung fits the RAM, the job is refused
  before a byte is loaded (``HostMemoryError``, naming the numbers).

Sizes are shown in GiB labelled "GB": that is how cards are sold (a "24 GB" RTX 4090 has 24.0 GiB).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from diffbox.engine.checkpoints import COMFY_PREFIX, MARKERS, QUANT_EXTRAS
from diffbox.engine.weight_files import read_safetensors_header

GiB = 1024**3

MODES = ("gpu", "model_offload", "group_offload", "sequential_offload", "cpu")
WEIGHTS = ("native", "fp8", "int8")
MODE_LABELS = {
    "gpu": "all on GPU",
    "model_offload": "model CPU offload",
    "group_offload": "group offload",
    "sequential_offload": "sequential offload",
    "cpu": "CPU",
}

# Fastest first. fp8 storage costs a little quality but keeps whole models on the GPU, which beats
# streaming bf16 weights over PCIe every step, so it comes before group offload; it is not used
# once the weights stream anyway (group/sequential offload fit any model). int8 needs torchao and
# is only used when asked for.
AUTO_LADDER: tuple[tuple[str, str], ...] = (
    ("gpu", "native"),
    ("model_offload", "native"),
    ("gpu", "fp8"),
    ("model_offload", "fp8"),
    ("group_offload", "native"),
    ("sequential_offload", "native"),
)
OFFLOAD_ORDER = ("gpu", "model_offload", "group_offload", "sequential_offload")

# Group offload keeps these components whole on the GPU: a VAE is small next to the transformers,
# and its causal conv cache does not split into blocks.
GROUP_OFFLOAD_EXCLUDE = ("vae",)
# Components whose weight storage fp8/int8 changes: the denoisers, where nearly all the bytes are.
LOW_PRECISION_PREFIXES = ("transformer", "unet")

# diffusers' layerwise casting leaves these layers in the compute dtype (hooks/layerwise_casting.py).
DEFAULT_SKIP_PATTERNS = ("pos_embed", "patch_embed", "norm", "^proj_in$", "^proj_out$")

_ST_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
                   "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# Original Wan module names in single files -> the diffusers names _keep_in_fp32_modules lists.
NATIVE_WAN_NAMES = {"time_embedding": "time_embedder", "modulation": "scale_shift_table"}
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def format_bytes(count: int | float | None) -> str:
    """Bytes for people: GB from a tenth of one up (model and disk sizes compare at a glance), "—" if unknown."""
    if count is None:
        return "—"
    if count >= GiB / 10:
        return f"{count / GiB:.1f} GB"
    if count >= 1024**2:
        return f"{count / 1024**2:.1f} MB"
    if count >= 1024:
        return f"{count / 1024:.0f} KB"  # the tiny demo models, small configs
    return f"{count:.0f} B"


@dataclass(frozen=True)
class MemoryStatus:
    """What a memory probe returns: the device the budget is for and its free bytes."""
    device: str  # "cuda" or "cpu"
    total_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class Placement:
    mode: str  # one of MODES
    weights: str  # storage: "native" | "fp8" | "int8"
    projected_bytes: int  # peak VRAM projected for this placement
    budget_bytes: int  # free bytes the decision was made against
    reason: str  # one sentence for the job log and the UI
    vae_tiling: bool = False  # set on an out-of-memory retry
    host_bytes: int = 0  # peak host RAM projected (loading included); 0 when RAM was not considered
    pin_memory: bool = True  # group offload: pin a copy of the weights up front (the RAM for it fits)

    @property
    def label(self) -> str:
        return placement_label(self.mode, self.weights)


def placement_label(mode: str, weights: str) -> str:
    label = MODE_LABELS[mode]
    return label if weights == "native" else f"{label}, {weights} weights"


# ---------------------------------------------------------------------------------------------
# Estimate: bytes per component from file headers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentEstimate:
    name: str
    total_bytes: int
    outside_blocks_bytes: int  # not in a top-level ModuleList: block-level offload onloads it as one group
    largest_block_bytes: int  # largest entry of a top-level ModuleList (a transformer block)
    largest_leaf_bytes: int  # largest single layer: what sequential / leaf-level offload onloads at once
    block_level: bool  # a diffusers model (block-level group offload) or not (leaf-level, e.g. text encoders)

    @property
    def group_offload_peak(self) -> int:
        # With CUDA streams the next group is prefetched while the current one runs: two on the GPU.
        if self.block_level:
            return self.outside_blocks_bytes + 2 * self.largest_block_bytes
        return 2 * self.largest_leaf_bytes


@dataclass(frozen=True)
class _Tensor:
    name: str
    dtype: str  # safetensors dtype name, or "Q" for an already-quantized GGUF tensor
    shape: tuple[int, ...]
    stored_bytes: int

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


def tensor_shapes(file: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor name -> (dtype, shape), from the header only (the data may be absent); remembered per file
    version. ValueError naming the file if it is not a safetensors file."""
    file = Path(file)
    stat = file.stat()
    return _tensor_shapes(str(file), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _tensor_shapes(file: str, size: int, mtime_ns: int) -> dict[str, tuple[str, tuple[int, ...]]]:  # key: size, mtime
    header = read_safetensors_header(Path(file), complete=False, full_path=True)
    return {name: (str(info["dtype"]), tuple(info["shape"])) for name, info in header.items() if name != "__metadata__"}


def _safetensors_tensors(file: Path) -> list[_Tensor]:
    tensors = []
    for name, (dtype, shape) in tensor_shapes(file).items():
        tensor = _Tensor(name, dtype, shape, 0)
        tensors.append(_Tensor(name, dtype, shape, tensor.numel * _ST_DTYPE_BYTES.get(dtype, 2)))
    return tensors


def _gguf_tensors(file: Path) -> list[_Tensor] | None:
    """Tensor sizes from a GGUF file (memory-mapped, data not read); None without the gguf package."""
    try:
        import gguf
    except ImportError:
        return None
    try:
        reader = gguf.GGUFReader(str(file))
    except Exception as error:  # the reader raises assorted errors on garbage
        raise ValueError(f"{file} is not a valid GGUF file: {error}") from None
    plain = {gguf.GGMLQuantizationType.F32: "F32", gguf.GGMLQuantizationType.F16: "F16"}
    tensors = []
    for tensor in reader.tensors:
        shape = tuple(int(d) for d in reversed(tensor.shape))  # GGUF lists dimensions innermost first
        tensors.append(_Tensor(tensor.name, plain.get(tensor.tensor_type, "Q"), shape, int(tensor.n_bytes)))
    return tensors


def component_weight_files(folder: Path) -> list[Path]:
    """The safetensors files diffusers/transformers would load from a component folder.

    Variant files (``model.fp16.safetensors``) are only counted when there is no plain one, as
    ``from_pretrained`` without ``variant=`` does.
    """
    files = sorted(folder.glob("*.safetensors"))
    plain = [f for f in files if "." not in f.name[: -len(".safetensors")]]
    return plain or files


def _model_class_patterns(library: str, class_name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(keep-in-fp32 module names, layerwise-casting skip patterns) for a diffusers model class."""
    if library != "diffusers":
        return (), DEFAULT_SKIP_PATTERNS
    try:
        import diffusers

        cls = getattr(diffusers, class_name)
    except (ImportError, AttributeError):
        return (), DEFAULT_SKIP_PATTERNS
    keep = tuple(getattr(cls, "_keep_in_fp32_modules", None) or ())
    skip = tuple(getattr(cls, "_skip_layerwise_casting_patterns", None) or ())
    return keep, DEFAULT_SKIP_PATTERNS + keep + skip


def estimate_component(name: str, tensors: Iterable[_Tensor], *, dtype: str, weights: str,
                       library: str = "diffusers", class_name: str = "") -> ComponentEstimate:
    """Bytes of one component once loaded in ``dtype`` with ``weights`` storage (see module docstring)."""
    tensors = list(tensors)
    keep_fp32, skip_patterns = _model_class_patterns(library, class_name)
    low_precision = weights in ("fp8", "int8") and name.startswith(LOW_PRECISION_PREFIXES)
    target = _DTYPE_BYTES[dtype]
    # Layers with a >=2-D weight are the Linear/Conv/Embedding layers layerwise casting and
    # torchao act on; 1-D weights are norms. torchao's int8 only takes Linear (2-D) layers.
    layer_ndim = {t.name.rsplit(".", 1)[0]: len(t.shape) for t in tensors if t.name.endswith(".weight")}

    def loaded_bytes(tensor: _Tensor) -> int:
        kept_fp32 = any(NATIVE_WAN_NAMES.get(m, m) in keep_fp32 for m in tensor.name.split("."))
        if tensor.dtype == "Q":  # GGUF-quantized: stays as stored, dequantized per layer at run time,
            # except in the layers diffusers keeps in fp32: those it dequantizes once, at load
            return tensor.numel * 4 if kept_fp32 else tensor.stored_bytes
        if tensor.dtype not in _ST_DTYPE_BYTES or not (tensor.dtype.startswith("F") or tensor.dtype == "BF16"):
            return tensor.stored_bytes  # integer buffers keep their type
        module, _, leaf = tensor.name.rpartition(".")
        if dtype != "float32" and kept_fp32:
            return tensor.numel * 4  # diffusers keeps these in fp32 under a half dtype
        if low_precision and leaf in ("weight", "bias") and not any(re.search(p, module) for p in skip_patterns):
            ndim = layer_ndim.get(module, 0)
            if weights == "fp8" and ndim >= 2:
                return tensor.numel
            if weights == "int8" and ndim == 2:
                if leaf == "weight":
                    return tensor.numel + tensor.shape[0] * target  # int8 values + one scale per row
                return tensor.numel * target
        return tensor.numel * target

    total = outside = 0
    blocks: dict[str, int] = {}
    leaves: dict[str, int] = {}
    for tensor in tensors:
        size = loaded_bytes(tensor)
        total += size
        parts = tensor.name.split(".")
        # children of a top-level ModuleList: blocks.3.attn1... (not an original-name Sequential: time_embedding.0)
        if len(parts) > 2 and parts[1].isdigit() and parts[0].endswith("blocks"):
            block = f"{parts[0]}.{parts[1]}"
            blocks[block] = blocks.get(block, 0) + size
        else:
            outside += size
        leaf = tensor.name.rpartition(".")[0]
        leaves[leaf] = leaves.get(leaf, 0) + size
    return ComponentEstimate(name, total, outside, max(blocks.values(), default=0), max(leaves.values(), default=0),
                             block_level=library == "diffusers")


def estimate_components(base: str | Path, dtype: str, weights: str, files: dict[str, Path] | None = None,
                        component_dtypes: dict[str, str] | None = None) -> dict[str, ComponentEstimate]:
    """Per-component estimates for a diffusers folder; ``files`` swaps in single-file checkpoints,
    ``component_dtypes`` loads some components in another dtype (e.g. {"vae": "float32"})."""
    base = Path(base)
    index = json.loads((base / "model_index.json").read_text(encoding="utf-8"))
    files = dict(files or {})
    estimates: dict[str, ComponentEstimate] = {}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or entry[0] is None:
            continue
        library, class_name = entry
        if name in files:
            tensors = _single_file_tensors(Path(files[name]))
        else:
            weight_files = component_weight_files(base / name)
            if weight_files:
                tensors = [t for f in weight_files for t in _safetensors_tensors(f)]
            else:  # pickled weights (old repos): their size on disk, as one piece, errs on the safe side
                tensors = [_Tensor(f.name, "Q", (), f.stat().st_size) for f in sorted((base / name).glob("*"))
                           if f.suffix in _PICKLE_SUFFIXES]
            if not tensors:
                continue  # tokenizers, schedulers, processors: no weights
        estimates[name] = estimate_component(name, tensors, dtype=(component_dtypes or {}).get(name, dtype),
                                             weights=weights, library=library, class_name=class_name)
    return estimates


def _single_file_tensors(file: Path) -> list[_Tensor]:
    if file.suffix == ".gguf":
        tensors = _gguf_tensors(file)
        if tensors is None:
            # Without the gguf package the load fails later with its own message; until then assume the
            # file is one big block so the projection errs on the safe side.
            return [_Tensor("weights", "Q", (), file.stat().st_size)]
    else:
        tensors = _safetensors_tensors(file)
    # ComfyUI's files nest every name under `model.diffusion_model.`; the loader strips it, and so
    # must the block grouping below (`blocks.3.` is a block, `model.diffusion_model.blocks.3.` is not).
    # fp8 scales and markers are folded into the weights at load time: they take no memory then.
    tensors = [_Tensor(t.name.removeprefix(COMFY_PREFIX), t.dtype, t.shape, t.stored_bytes) for t in tensors]
    return [t for t in tensors if t.name not in MARKERS and not t.name.endswith(QUANT_EXTRAS)]


# ---------------------------------------------------------------------------------------------
# Project: peak VRAM of each placement
# ---------------------------------------------------------------------------------------------


def activation_reserve(native: dict[str, ComponentEstimate], *, min_bytes: int = GiB, fraction: float = 0.15) -> int:
    """Headroom for activations, latents and the CUDA workspace, which headers cannot tell.

    Scales with the largest denoiser (bigger models run bigger hidden states); measured peaks are
    recorded after every job (ModelCache.measure) so this can be checked against real runs.
    """
    denoisers = [c.total_bytes for name, c in native.items() if name.startswith(LOW_PRECISION_PREFIXES)]
    largest = max(denoisers or [c.total_bytes for c in native.values()] or [0])
    return max(min_bytes, int(fraction * largest))


def projected_peak(mode: str, components: dict[str, ComponentEstimate], reserve: int) -> int:
    """Peak VRAM of a placement: resident weights + the largest piece onloaded at once + reserve."""
    parts = list(components.values())
    if mode == "cpu":
        return 0
    if mode == "gpu":
        weights = sum(c.total_bytes for c in parts)
    elif mode == "model_offload":  # one whole component on the GPU at a time
        weights = max((c.total_bytes for c in parts), default=0)
    elif mode == "group_offload":
        resident = sum(c.total_bytes for c in parts if c.name in GROUP_OFFLOAD_EXCLUDE)
        streamed = max((c.group_offload_peak for c in parts if c.name not in GROUP_OFFLOAD_EXCLUDE), default=0)
        weights = resident + streamed
    elif mode == "sequential_offload":  # one layer at a time
        weights = max((c.largest_leaf_bytes for c in parts), default=0)
    else:
        raise ValueError(f"unknown placement {mode!r}; expected one of {', '.join(MODES)}")
    return weights + reserve


def idle_vram_bytes(mode: str, components: dict[str, ComponentEstimate]) -> int:
    """VRAM a placed pipeline keeps between jobs (what evicting it gives back)."""
    if mode == "gpu":
        return sum(c.total_bytes for c in components.values())
    if mode == "group_offload":
        return sum(c.total_bytes for c in components.values() if c.name in GROUP_OFFLOAD_EXCLUDE)
    return 0  # offload hooks move everything back to the CPU after each call


# ---------------------------------------------------------------------------------------------
# Project: host RAM of each placement
# ---------------------------------------------------------------------------------------------


class HostMemoryError(ValueError):
    """No placement's projected host RAM fits: the job is refused before anything is loaded. Carries the
    numbers of the placement that needs the least RAM: its label, its VRAM and RAM, and the RAM free."""

    def __init__(self, message: str, *, label: str = "", vram_bytes: int = 0, host_bytes: int = 0,
                 free_bytes: int = 0):
        super().__init__(message)
        self.label, self.vram_bytes, self.host_bytes, self.free_bytes = label, vram_bytes, host_bytes, free_bytes


@dataclass(frozen=True)
class HostProjection:
    steady_bytes: int  # weights the placement keeps in host RAM between and during jobs
    loading_bytes: int  # the most held at once while loading and placing

    @property
    def peak_bytes(self) -> int:
        return max(self.steady_bytes, self.loading_bytes)


def projected_host(mode: str, loaded: dict[str, ComponentEstimate], native: dict[str, ComponentEstimate], *,
                   pinned: bool = False) -> HostProjection:
    """Host RAM of a placement, following how loaders.load_pipeline loads (tests/test_cache.py holds a real
    load's peak RSS to it).

    The denoisers load first, one at a time, each in the compute dtype (``native``; diffusers converts a
    float32 checkpoint tensor by tensor, so no float32 copy is ever held: the source stays in the page
    cache, which the kernel drops under pressure), and each is stored as its placement says (``loaded``:
    fp8/int8) — and, for "gpu", moved to the GPU — before the next one loads. The other components load
    together afterwards. Then the placement: "gpu" leaves nothing on the host; model and sequential
    offload and the CPU keep every weight there; group offload keeps the streamed components there, twice
    when ``pinned`` (diffusers pins a copy of every weight up front so transfers overlap compute).
    """
    denoisers = [name for name in loaded if name.startswith(LOW_PRECISION_PREFIXES)]
    rest = [name for name in loaded if name not in denoisers]
    kept = loading = 0
    for name in denoisers:
        loading = max(loading, kept + native[name].total_bytes)
        kept += 0 if mode == "gpu" else loaded[name].total_bytes
    loading = max(loading, kept + sum(native[name].total_bytes for name in rest))
    everything = sum(c.total_bytes for c in loaded.values())
    if mode == "gpu":
        steady = 0
    elif mode == "group_offload":
        streamed = [c for c in loaded.values() if c.name not in GROUP_OFFLOAD_EXCLUDE]
        weights = sum(c.total_bytes for c in streamed)
        # unpinned, each group is pinned on its way to the GPU: the next one is prefetched meanwhile
        steady = 2 * weights if pinned else weights + max((c.group_offload_peak for c in streamed), default=0)
    else:
        steady = everything
    return HostProjection(steady, loading)


# ---------------------------------------------------------------------------------------------
# Choose: the fastest rung that fits
# ---------------------------------------------------------------------------------------------

Estimates = Callable[[str], dict[str, ComponentEstimate]]  # weights -> per-component estimates


def candidate_rungs(mode: str = "auto", weights: str = "auto") -> list[tuple[str, str]]:
    """The (mode, weights) rungs to consider, fastest first, honouring user overrides."""
    if weights == "auto":
        rungs = list(AUTO_LADDER)
        if mode != "auto":  # a forced placement may still fall back to fp8 storage to fit
            rungs = [(mode, "native"), (mode, "fp8")]
    else:
        rungs = [(m, weights) for m in OFFLOAD_ORDER]
        if mode != "auto":
            rungs = [(mode, weights)]
    return rungs


@dataclass(frozen=True)
class _Rung:
    mode: str
    weights: str
    vram: int
    host: HostProjection | None
    pinned: bool

    @property
    def label(self) -> str:
        return placement_label(self.mode, self.weights)

    @property
    def host_bytes(self) -> int:
        return self.host.peak_bytes if self.host else 0


def _rung(mode: str, weights: str, estimates: Estimates, reserve: int, host: MemoryStatus | None,
          streams: bool) -> _Rung:
    loaded = estimates(weights)
    vram = projected_peak(mode, loaded, reserve)
    if host is None:
        return _Rung(mode, weights, vram, None, streams)
    native = estimates("native")
    pinned = projected_host(mode, loaded, native, pinned=True) if mode == "group_offload" and streams else None
    if pinned is not None and pinned.peak_bytes <= host.free_bytes:
        return _Rung(mode, weights, vram, pinned, True)
    return _Rung(mode, weights, vram, projected_host(mode, loaded, native), False)


def _placement(rung: _Rung, budget: int, reason: str, *, vae_tiling: bool = False) -> Placement:
    return Placement(rung.mode, rung.weights, rung.vram, budget, reason, vae_tiling, rung.host_bytes, rung.pinned)


def _ram_note(skipped: list[_Rung], host: MemoryStatus | None) -> str:
    if not skipped or host is None:
        return ""
    first = skipped[0]
    return (f"; not {first.label}: it needs {format_bytes(first.host_bytes)} of RAM, "
            f"{format_bytes(host.free_bytes)} is free")


def _refuse(rungs: list[_Rung], host: MemoryStatus, gpu: MemoryStatus | None = None) -> HostMemoryError:
    """The sentence for a job no placement can hold: the least RAM any placement needs (the least among
    those that fit the GPU, when some do), against the free RAM."""
    least = min(rungs, key=lambda rung: rung.host_bytes)
    where = f"the smallest placement ({least.label})"
    if gpu is not None:
        where = f"the smallest placement that fits the {format_bytes(gpu.free_bytes)} free on the GPU ({least.label})"
    return HostMemoryError(
        f"Not enough RAM: {where} needs {format_bytes(least.host_bytes)} of host RAM (steady "
        f"{format_bytes(least.host.steady_bytes)}, {format_bytes(least.host.loading_bytes)} while loading), but "
        f"only {format_bytes(host.free_bytes)} of {format_bytes(host.total_bytes)} is free; nothing was loaded. "
        "Free RAM (unload other models), use a pod with more RAM, or pick smaller weights (a GGUF or fp8 file)",
        label=least.label, vram_bytes=least.vram, host_bytes=least.host_bytes, free_bytes=host.free_bytes)


def choose_placement(estimates: Estimates, status: MemoryStatus, reserve: int, *, mode: str = "auto",
                     weights: str = "auto", host: MemoryStatus | None = None) -> Placement:
    """The first rung of the ladder whose projected peak fits ``status.free_bytes`` (and, given ``host``,
    whose projected host RAM fits ``host.free_bytes``).

    ``estimates(weights)`` gives the per-component estimate for a weight storage (it is asked only
    for the storages it needs). Short VRAM never raises: when nothing fits, the smallest projection
    is returned with a reason that says it probably will not fit. Short RAM does (HostMemoryError):
    a host out of memory is killed, not slowed down.
    """
    budget = status.free_bytes
    streams = status.device == "cuda"
    if status.device != "cuda" or mode == "cpu":
        storage = "native" if weights == "auto" else weights
        why = "No CUDA GPU: running on the CPU" if status.device != "cuda" else "CPU (your choice)"
        rung = _rung("cpu", storage, estimates, reserve, host, False)
        if host is not None and rung.host_bytes > host.free_bytes:
            raise _refuse([rung], host)
        return _placement(rung, budget, why)
    rungs = [_rung(m, w, estimates, reserve, host, streams) for m, w in candidate_rungs(mode, weights)]
    fitting = [r for r in rungs if host is None or r.host_bytes <= host.free_bytes]
    if not fitting:
        raise _refuse(rungs, host)
    on_gpu = [r for r in rungs if r.vram <= budget]
    if on_gpu and not any(r in fitting for r in on_gpu):  # the GPU could hold it; the RAM cannot
        raise _refuse(on_gpu, host, status)
    first = rungs[0]
    chosen = next((r for r in fitting if r.vram <= budget), None)
    note = _ram_note([r for r in rungs[:rungs.index(chosen) if chosen else len(rungs)] if r not in fitting], host)
    if chosen is None:
        least = min(fitting, key=lambda rung: rung.vram)
        reason = (f"Projected {format_bytes(least.vram)} > {format_bytes(budget)} free even with "
                  f"{least.label}: trying it anyway; lower the resolution or frame count if it "
                  f"runs out of memory{note}")
        return _placement(least, budget, reason)
    if chosen is first:
        suffix = " (your choice)" if mode != "auto" else ""
        reason = f"Projected {format_bytes(chosen.vram)} ≤ {format_bytes(budget)} free: {chosen.label}{suffix}"
    else:
        reason = (f"Projected {format_bytes(first.vram)} > {format_bytes(budget)} free: "
                  f"{chosen.label} (peak {format_bytes(chosen.vram)}){note}")
        if first.vram <= budget:  # the faster rungs fit the GPU: RAM ruled them out
            reason = f"{chosen.label} (peak {format_bytes(chosen.vram)}){note}"
    return _placement(chosen, budget, reason)


def more_conservative_placement(current: Placement, estimates: Estimates, status: MemoryStatus, reserve: int,
                                *, weights: str = "auto", host: MemoryStatus | None = None) -> Placement | None:
    """For an out-of-memory retry: the fastest rung projected below ``current``; None if there is none.

    A rung that fits the (freshly probed) budget is preferred; otherwise the smallest one. A forced
    placement is not honoured here (it just ran out of memory); forced weights are. Given ``host``,
    rungs whose host RAM does not fit are left out (a retry that gets the process killed is no retry).
    """
    if current.mode == "cpu":
        return None
    streams = status.device == "cuda"
    lower = [r for m, w in candidate_rungs("auto", weights)
             if (r := _rung(m, w, estimates, reserve, host, streams)).vram < current.projected_bytes
             and (host is None or r.host_bytes <= host.free_bytes)]
    if not lower:
        return None
    budget = status.free_bytes
    rung = next((r for r in lower if r.vram <= budget), min(lower, key=lambda r: r.vram))
    reason = (f"Out of memory with {current.label} (projected {format_bytes(current.projected_bytes)}): "
              f"retrying with {rung.label} (peak {format_bytes(rung.vram)}) and VAE tiling")
    return _placement(rung, budget, reason, vae_tiling=True)
