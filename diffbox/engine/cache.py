"""ModelCache: loaded pipelines kept between jobs, placed to fit the VRAM budget.

``get()`` returns a ready pipeline. A second job on the same model skips loading. A new model is
estimated from its file headers first (memory.py), then placed on the fastest rung that fits the
free VRAM (all on GPU → model CPU offload → fp8 weights → group offload → sequential offload).
Idle models that hold VRAM or RAM the new one needs are unloaded least recently used first, and
any model idle longer than ``idle_unload_s`` is unloaded. Every decision is one sentence for the
job log and the UI (``log=``). After each job the measured peak VRAM is recorded next to the
projection, and on CUDA out-of-memory ``more_conservative()`` re-places the model one rung lower.

Host RAM is part of every decision: a placement whose projected RAM (the weights it keeps on the
host, and the peak while loading) does not fit the free RAM (the container's cgroup limit, not the
machine's) is not used, idle models holding RAM are unloaded for it, and when none fits the job is
refused before anything loads (HostMemoryError, a ValueError naming the numbers).

The memory probes are injectable: tests and CPU demos pass ``SimulatedMemory(24 * GiB)``, a pretend
GPU whose free memory shrinks by what this cache keeps resident, and a ``ram_probe`` likewise.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from diffusers import DiffusionPipeline

from diffbox.engine import loaders
from diffbox.engine.loaders import ModelSource
from diffbox.engine.host_memory import host_ram_status, release_freed_memory
from diffbox.engine.memory import (GiB, MODES, WEIGHTS, ComponentEstimate, HostMemoryError, MemoryStatus, Placement,
                                   activation_reserve, choose_placement, estimate_components, format_bytes,
                                   idle_vram_bytes, more_conservative_placement)

__all__ = ["GiB", "HostMemoryError", "LoadedPipeline", "MemoryStatus", "ModelCache", "ModelSource", "Placement",
           "SimulatedMemory", "estimate_pipeline_bytes", "host_ram_probe", "is_out_of_memory"]

logger = logging.getLogger(__name__)
Log = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------


def cuda_memory_probe() -> MemoryStatus:
    free, total = torch.cuda.mem_get_info()
    # Blocks PyTorch has cached but not handed out are free to us as well.
    free += torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    return MemoryStatus("cuda", total, free)


def host_ram_probe() -> MemoryStatus:
    """Host RAM this process may use: MemAvailable, capped by the container's cgroup limit (host_memory.py)."""
    return host_ram_status()


def default_memory_probe() -> MemoryStatus:
    return cuda_memory_probe() if torch.cuda.is_available() else host_ram_probe()


class SimulatedMemory:
    """A pretend GPU of ``total_bytes``: free = total − the VRAM the attached cache keeps resident.

    ``ModelCache(memory_probe=SimulatedMemory(24 * GiB))`` makes the same decisions a 24 GB card
    would, on any machine; the placements are then applied with the CPU standing in for the GPU.
    """

    def __init__(self, total_bytes: int, *, device: str = "cuda"):
        self.total_bytes = int(total_bytes)
        self.device = device
        self._held: Callable[[], int] = lambda: 0

    def attach(self, held: Callable[[], int]) -> None:
        self._held = held

    def __call__(self) -> MemoryStatus:
        return MemoryStatus(self.device, self.total_bytes, max(0, self.total_bytes - self._held()))


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA out-of-memory, however it surfaced (torch's class, or a RuntimeError from a kernel)."""
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


# ---------------------------------------------------------------------------------------------
# Entries
# ---------------------------------------------------------------------------------------------


class _Estimates:
    """Per-component estimates of one model and dtype (and VAE dtype), computed once per weight storage."""

    def __init__(self, source: ModelSource, dtype: str, vae_dtype: str | None = None):
        self.source, self.dtype, self.vae_dtype = source, dtype, vae_dtype or dtype
        self._by_weights: dict[str, dict[str, ComponentEstimate]] = {}

    def __call__(self, weights: str) -> dict[str, ComponentEstimate]:
        if weights not in self._by_weights:
            self._by_weights[weights] = estimate_components(self.source.base, self.dtype, weights,
                                                            dict(self.source.files), {"vae": self.vae_dtype})
        return self._by_weights[weights]


@dataclass
class LoadedPipeline:
    pipe: DiffusionPipeline | None  # None once unloaded
    key: tuple  # (resolved model str, dtype name, weights, VAE dtype name[, pipeline class name])
    placement: Placement
    source: ModelSource
    estimates: _Estimates
    reserve_bytes: int
    requested: tuple[str, str]  # (weights, placement) as asked for: an OOM retry keeps forced weights
    pipeline_class: type | None = None
    load_s: float = 0.0
    loaded_at: float = 0.0
    last_used: float = 0.0
    jobs: int = 0
    in_use: bool = False
    measured_peak_bytes: int | None = None  # the last job's, CUDA only
    measurements: list[tuple[int, int]] = field(default_factory=list)  # (projected, measured) per job

    @property
    def name(self) -> str:
        return self.key[0]

    @property
    def components(self) -> dict[str, ComponentEstimate]:
        return self.estimates(self.placement.weights)

    @property
    def idle_vram_bytes(self) -> int:
        return idle_vram_bytes(self.placement.mode, self.components)

    @property
    def host_bytes(self) -> int:
        """RAM the weights take on the host (all of them unless they live on the GPU)."""
        return sum(c.total_bytes for c in self.components.values()) - self.idle_vram_bytes


def display_name(key: str) -> str:
    """A short name for messages: org/name for an HF snapshot, else the folder name, plus single files."""
    base, *files = key.split("+")
    parts = Path(base).parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        short = parts[-3].removeprefix("models--").replace("--", "/")
    else:
        short = Path(base).name
    extra = [Path(f.split("=", 1)[-1]).name for f in files]
    return short + (f" ({', '.join(extra)})" if extra else "")


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------


class ModelCache:
    def __init__(self, *, loader: Callable[..., DiffusionPipeline] | None = None,
                 memory_probe: Callable[[], MemoryStatus] | None = None, idle_unload_s: float | None = 900.0,
                 clock: Callable[[], float] = time.monotonic, ram_probe: Callable[[], MemoryStatus] | None = None,
                 min_reserve_bytes: int = GiB, reserve_fraction: float = 0.15, max_loaded: int | None = None,
                 cache_dir: str | Path | None = None):
        """``loader(source, dtype=, pipeline_class=)`` loads onto the CPU (default: loaders.load_pipeline).
        ``min_reserve_bytes``/``reserve_fraction``: activation headroom (memory.activation_reserve).
        ``max_loaded``: an optional cap on the number of models kept, on top of the memory budget."""
        self._loader = loader or loaders.load_pipeline
        self._probe = memory_probe or default_memory_probe
        self._ram_probe = ram_probe or host_ram_probe
        if hasattr(self._probe, "attach"):
            self._probe.attach(self.held_vram_bytes)
        self.idle_unload_s = idle_unload_s
        self._clock = clock
        self._min_reserve, self._reserve_fraction = min_reserve_bytes, reserve_fraction
        self._max_loaded = max_loaded
        self._cache_dir = cache_dir
        self._entries: OrderedDict[tuple, LoadedPipeline] = OrderedDict()  # least recently used first
        self._lock = threading.RLock()
        self._watcher_stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- the main call ---------------------------------------------------------------------------

    def get(self, path: str | Path | ModelSource, *, dtype: str = "auto", weights: str = "auto",
            placement: str = "auto", pipeline_class: type | None = None, log: Log | None = None,
            vae_dtype: str = "auto") -> LoadedPipeline:
        """A ready pipeline for ``path`` (folder, cached repo id or ModelSource), loading it if needed.

        dtype: auto (bf16 on CUDA, float32 on CPU) | bfloat16 | float16 | float32.
        vae_dtype: auto (= dtype) | bfloat16 | float16 | float32 — the VAE alone (Wan's runs best in float32).
        weights: auto (native unless the budget needs fp8) | native | fp8 | int8.
        placement: auto | gpu | model_offload | group_offload | sequential_offload | cpu.
        """
        _check_choice("weights", weights, ("auto", *WEIGHTS))
        _check_choice("placement", placement, ("auto", *MODES))
        if weights == "int8" and not loaders.torchao_available():
            raise ValueError("int8 weights need torchao, which is not installed here; choose fp8, or "
                             "pip install torchao (a build matching this torch)")
        torch_dtype = loaders.resolve_dtype(dtype)
        vae_torch_dtype = torch_dtype if vae_dtype in (None, "auto") else loaders.resolve_dtype(vae_dtype)
        say = _sayer(log)
        with self._lock:
            self.unload_idle(log=say)
            source = loaders.resolve_source(path, cache_dir=self._cache_dir)
            dname, vae_dname = loaders.dtype_name(torch_dtype), loaders.dtype_name(vae_torch_dtype)
            hit = self._find(source.key, dname, vae_dname, weights, placement, pipeline_class)
            if hit is not None:
                hit.last_used = self._clock()
                self._entries.move_to_end(hit.key)
                say(f"{display_name(hit.name)} is already loaded ({hit.placement.label}): no load needed")
                return hit
            for stale in [e for e in self._entries.values() if e.name == source.key and not e.in_use]:
                # Two copies of one model never help: drop the one loaded with other settings first.
                self._drop(stale, say, f"Unloaded {display_name(stale.name)} ({stale.placement.label}) "
                                       "to load it with other settings")
            estimates = _Estimates(source, dname, vae_dname)
            reserve = activation_reserve(estimates("native"), min_bytes=self._min_reserve,
                                         fraction=self._reserve_fraction)
            try:
                chosen = self._make_room(source.key, estimates, reserve, placement, weights, say)
            except HostMemoryError as error:
                raise HostMemoryError(f"{display_name(source.key)}: {error}") from None
            return self._load(source, torch_dtype, chosen, estimates, reserve, (weights, placement),
                              pipeline_class, say, vae_torch_dtype)

    def _find(self, name, dname, vae_dname, weights, placement, pipeline_class) -> LoadedPipeline | None:
        for entry in self._entries.values():
            if (entry.name == name and entry.key[1] == dname and entry.key[3] == vae_dname
                    and entry.pipeline_class is pipeline_class
                    and weights in ("auto", entry.placement.weights)
                    and placement in ("auto", entry.placement.mode)):
                return entry
        return None

    def _make_room(self, name: str, estimates: _Estimates, reserve: int, mode: str, weights: str,
                   say: Log) -> Placement:
        """Choose a placement, first unloading idle models (LRU) whose VRAM or RAM would let it be faster,
        or let it fit the RAM at all. HostMemoryError when it cannot fit even with every idle model gone."""
        def choose(status: MemoryStatus, host: MemoryStatus) -> Placement | None:
            try:
                return choose_placement(estimates, status, reserve, mode=mode, weights=weights, host=host)
            except HostMemoryError:
                return None

        while True:
            status, host = self._probe(), self._ram_probe()
            idle = [e for e in self._entries.values() if not e.in_use]  # least recently used first
            holding_vram = [e for e in idle if e.idle_vram_bytes > 0]
            holding_ram = [e for e in idle if e.host_bytes > 0]
            chosen = choose(status, host)
            if chosen is None and not holding_ram:  # nothing left to unload: refuse, naming the numbers
                choose_placement(estimates, status, reserve, mode=mode, weights=weights, host=host)
            if status.device == "cuda" and holding_vram and chosen is not None:
                freeable = sum(e.idle_vram_bytes for e in holding_vram)
                best = choose(MemoryStatus(status.device, status.total_bytes, status.free_bytes + freeable), host)
                if best is not None and (best.mode, best.weights) != (chosen.mode, chosen.weights):
                    victim = holding_vram[0]
                    self._drop(victim, say, f"Unloaded {display_name(victim.name)} to free "
                                            f"{format_bytes(victim.idle_vram_bytes)} of VRAM for "
                                            f"{display_name(name)}")
                    continue
            if holding_ram:
                freeable = sum(e.host_bytes for e in holding_ram)
                best = choose(status, MemoryStatus(host.device, host.total_bytes, host.free_bytes + freeable))
                if chosen is None or (best is not None and (best.mode, best.weights) != (chosen.mode, chosen.weights)):
                    victim = holding_ram[0]
                    self._drop(victim, say, f"Unloaded {display_name(victim.name)} to free "
                                            f"{format_bytes(victim.host_bytes)} of RAM for {display_name(name)}")
                    continue
            if self._max_loaded and idle and len(self._entries) >= self._max_loaded:
                self._drop(idle[0], say, f"Unloaded {display_name(idle[0].name)}: at most "
                                         f"{self._max_loaded} model(s) stay loaded")
                continue
            return chosen

    def _load(self, source: ModelSource, torch_dtype: torch.dtype, placement: Placement, estimates: _Estimates,
              reserve: int, requested: tuple[str, str], pipeline_class: type | None, say: Log,
              vae_dtype: torch.dtype) -> LoadedPipeline:
        say(f"{display_name(source.key)}: {placement.reason}")
        started = time.perf_counter()
        pipe = None
        stored: list[str] = []

        def prepare(component: str, module: torch.nn.Module) -> None:
            # Each denoiser takes its storage (and for "gpu" its place) before the next loads: projected_host.
            if loaders.prepare_denoiser(module, placement.weights, placement.mode, torch_dtype):
                stored.append(component)
            release_freed_memory()

        try:
            pipe = self._loader(source, dtype=torch_dtype, vae_dtype=vae_dtype, pipeline_class=pipeline_class,
                                prepare=prepare)
            if stored:
                say(f"{placement.weights} weight storage for {', '.join(stored)}, each as it loaded")
            self._place(pipe, placement, torch_dtype, say)
        except BaseException:
            pipe = None
            _free_memory()
            raise
        key = (source.key, loaders.dtype_name(torch_dtype), placement.weights, loaders.dtype_name(vae_dtype))
        key += (pipeline_class.__name__,) if pipeline_class else ()
        now = self._clock()
        entry = LoadedPipeline(pipe, key, placement, source, estimates, reserve, requested, pipeline_class,
                               load_s=time.perf_counter() - started, loaded_at=now, last_used=now)
        self._entries[key] = entry
        say(f"Loaded {display_name(source.key)} in {entry.load_s:.1f} s ({placement.label})")
        self._start_idle_watcher()
        return entry

    def _place(self, pipe: DiffusionPipeline, placement: Placement, torch_dtype: torch.dtype, say: Log) -> None:
        changed = loaders.apply_weights(pipe, placement.weights, torch_dtype)
        if changed:
            say(f"{placement.weights} weight storage for {', '.join(changed)}")
            release_freed_memory()
        # Group offload with streams pins a copy of the weights when the placement's RAM projection allowed it.
        note = loaders.apply_placement(pipe, placement.mode, pin_memory=placement.pin_memory)
        if note:
            say(note)
        if placement.vae_tiling and hasattr(getattr(pipe, "vae", None), "enable_tiling"):
            pipe.vae.enable_tiling()

    # -- after a job, and on out-of-memory -------------------------------------------------------

    @contextlib.contextmanager
    def measure(self, loaded: LoadedPipeline, log: Log | None = None) -> Iterator[LoadedPipeline]:
        """Around one job: keeps the model from idle unload, then records its peak VRAM next to the
        projection (CUDA only; on the CPU there is nothing to measure and nothing is logged)."""
        say = _sayer(log)
        cuda = torch.cuda.is_available() and loaded.placement.mode != "cpu"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        loaded.in_use = True
        try:
            yield loaded
            if cuda:
                peak = torch.cuda.max_memory_allocated()
                loaded.measured_peak_bytes = peak
                loaded.measurements.append((loaded.placement.projected_bytes, peak))
                say(f"Peak VRAM {format_bytes(peak)} (projected {format_bytes(loaded.placement.projected_bytes)}, "
                    f"{loaded.placement.label})")
        finally:
            loaded.in_use = False
            loaded.jobs += 1
            loaded.last_used = self._clock()

    def more_conservative(self, loaded: LoadedPipeline, log: Log | None = None) -> LoadedPipeline | None:
        """For an out-of-memory retry: free memory and re-place the same model one rung lower, with
        VAE tiling. None when no rung is left. ``loaded`` is spent afterwards. gpu and model-offload
        placements are re-placed in memory (LoRAs stay); others are reloaded from disk, so per-job
        changes such as LoRAs must be applied again to the returned pipeline."""
        say = _sayer(log)
        with self._lock:
            _free_memory()
            status = self._probe()
            if loaded.key in self._entries:  # its own resident weights are free for the retry
                status = MemoryStatus(status.device, status.total_bytes, status.free_bytes + loaded.idle_vram_bytes)
            host = self._ram_probe()
            if loaded.key in self._entries:  # its own weights on the host are free for the retry too
                host = MemoryStatus(host.device, host.total_bytes, host.free_bytes + loaded.host_bytes)
            nxt = more_conservative_placement(loaded.placement, loaded.estimates, status, loaded.reserve_bytes,
                                              weights=loaded.requested[0], host=host)
            if nxt is None:
                say(f"No placement more conservative than {loaded.placement.label} is left for "
                    f"{display_name(loaded.name)}")
                return None
            self._entries.pop(loaded.key, None)
            pipe, loaded.pipe = loaded.pipe, None
            torch_dtype = loaders.resolve_dtype(loaded.key[1])
            same_storage = nxt.weights == loaded.placement.weights or loaded.placement.weights == "native"
            if pipe is not None and same_storage and loaders.release_placement(pipe, loaded.placement.mode):
                say(f"{display_name(loaded.name)}: {nxt.reason}")
                _free_memory()
                started = time.perf_counter()
                self._place(pipe, nxt, torch_dtype, say)  # no reload: weights are on the CPU
                key = (loaded.name, loaded.key[1], nxt.weights, *loaded.key[3:])
                now = self._clock()
                entry = LoadedPipeline(pipe, key, nxt, loaded.source, loaded.estimates, loaded.reserve_bytes,
                                       loaded.requested, loaded.pipeline_class, load_s=time.perf_counter() - started,
                                       loaded_at=now, last_used=now)
                self._entries[key] = entry
                return entry
            pipe = None  # group/sequential hooks or fp8 weights cannot be undone: reload from disk
            _free_memory()
            return self._load(loaded.source, torch_dtype, nxt, loaded.estimates, loaded.reserve_bytes,
                              loaded.requested, loaded.pipeline_class, say, loaders.resolve_dtype(loaded.key[3]))

    # -- unloading ---------------------------------------------------------------------------------

    def unload_idle(self, log: Log | None = None) -> list[str]:
        """Unload models unused for longer than ``idle_unload_s``; returns their names."""
        if self.idle_unload_s is None:
            return []
        say = _sayer(log)
        with self._lock:
            now = self._clock()
            idle = [e for e in self._entries.values()
                    if not e.in_use and now - e.last_used >= self.idle_unload_s]
            for entry in idle:
                self._drop(entry, say, f"Unloaded {display_name(entry.name)} after "
                                       f"{(now - entry.last_used) / 60:.0f} min idle")
            return [entry.name for entry in idle]

    def _drop(self, entry: LoadedPipeline, say: Log, message: str) -> None:
        self._entries.pop(entry.key, None)
        entry.pipe = None
        _free_memory()
        say(message)

    def clear(self) -> None:
        with self._lock:
            for entry in list(self._entries.values()):
                self._entries.pop(entry.key)
                entry.pipe = None
        _free_memory()

    def close(self) -> None:
        """Stop the idle watcher thread and unload everything."""
        self._watcher_stop.set()
        self.clear()

    def _start_idle_watcher(self) -> None:
        """A daemon thread that calls unload_idle() now and then, so an app nobody uses frees the GPU."""
        if self.idle_unload_s is None or self._watcher is not None:
            return
        cache_ref, stop = weakref.ref(self), self._watcher_stop
        interval = max(1.0, min(60.0, self.idle_unload_s / 4))

        def watch() -> None:
            while not stop.wait(interval):
                cache = cache_ref()  # a weak reference: a cache nobody holds any more ends its thread
                if cache is None:
                    return
                try:
                    cache.unload_idle()
                except Exception:
                    logger.exception("idle unload failed")
                del cache

        self._watcher = threading.Thread(target=watch, name="model-cache-idle", daemon=True)
        self._watcher.start()

    # -- reporting ---------------------------------------------------------------------------------

    # These take a snapshot instead of the lock, so /health answers while a model is loading.

    def held_vram_bytes(self) -> int:
        """VRAM the loaded models keep between jobs (by estimate): what SimulatedMemory subtracts."""
        return sum(entry.idle_vram_bytes for entry in list(self._entries.values()))

    def loaded(self) -> list[str]:
        return [entry.name for entry in list(self._entries.values())]

    def stats(self) -> list[dict]:
        now = self._clock()
        return [{
            "model": entry.name, "dtype": entry.key[1], "vae_dtype": entry.key[3], "weights": entry.placement.weights,
            "placement": entry.placement.mode, "reason": entry.placement.reason,
            "projected_bytes": entry.placement.projected_bytes, "budget_bytes": entry.placement.budget_bytes,
            "projected_host_bytes": entry.placement.host_bytes,
            "measured_peak_bytes": entry.measured_peak_bytes, "idle_vram_bytes": entry.idle_vram_bytes,
            "host_bytes": entry.host_bytes, "components": {n: c.total_bytes for n, c in entry.components.items()},
            "load_s": round(entry.load_s, 3), "jobs": entry.jobs, "idle_s": round(now - entry.last_used, 1),
        } for entry in list(self._entries.values())]


def estimate_pipeline_bytes(path: str | Path | ModelSource, dtype: str | torch.dtype = "auto",
                            weights: str = "native", vae_dtype: str | torch.dtype = "auto") -> dict[str, int]:
    """Bytes per component once loaded, from safetensors/GGUF headers only (no weights are read)."""
    source = loaders.resolve_source(path)
    storage = "native" if weights == "auto" else weights
    _check_choice("weights", storage, WEIGHTS)
    dname = loaders.dtype_name(loaders.resolve_dtype(dtype))
    vae = dname if vae_dtype == "auto" else loaders.dtype_name(loaders.resolve_dtype(vae_dtype))
    estimates = estimate_components(source.base, dname, storage, dict(source.files), {"vae": vae})
    return {name: estimate.total_bytes for name, estimate in estimates.items()}


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")


def _sayer(log: Log | None) -> Log:
    def say(message: str) -> None:
        logger.info(message)
        if log is not None:
            log(message)
    return say


def _free_memory() -> None:
    """Give unloaded weights back to the device. Pipelines hold reference cycles (offload hooks),
    so on CUDA a full collection is needed before empty_cache() can return their VRAM. Without
    CUDA it is left to Python's own collector: a full pass costs ~0.5 s with torch and gradio loaded."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
