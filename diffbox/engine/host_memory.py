"""How much host RAM this process may really use: the container's limit, not the machine's.

A rented pod is a container on a bigger host. ``/proc/meminfo`` (and psutil) report the host's memory,
so a pod sold with 46 GB of RAM on a 1 TB machine looks like it has 1 TB; the kernel OOM-kills the
container at its cgroup limit. The limit and usage are read from the cgroup filesystem:

- cgroup v2: ``memory.max`` ("max" = no limit) and ``memory.current``, inactive file pages from
  ``memory.stat`` (``inactive_file``);
- cgroup v1: ``memory.limit_in_bytes`` (a huge number = no limit) and ``memory.usage_in_bytes``,
  ``total_inactive_file`` from ``memory.stat``.

Usage includes the page cache, much of which the kernel drops before it kills anything; the inactive
file pages are counted as free, as Kubernetes' "working set" does. Limits are hierarchical, so every
level from the process's own cgroup up to the mount's root is read and the tightest one wins.
"""

from __future__ import annotations

import os
from pathlib import Path

from diffbox.engine.memory import MemoryStatus

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
PROC_MEMINFO = Path("/proc/meminfo")
# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit number; anything past 2**60 is none.
_NO_LIMIT = 1 << 60


def host_ram_status(*, cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP,
                    meminfo: Path = PROC_MEMINFO) -> MemoryStatus:
    """Total and free host RAM for this process: the machine's, tightened by every cgroup limit above it."""
    total, free = _meminfo(meminfo)
    for limit, used in cgroup_limits(cgroup_root, proc_cgroup):
        total = min(total, limit)
        free = min(free, max(0, limit - used))
    return MemoryStatus("cpu", total, free)


def cgroup_limits(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> list[tuple[int, int]]:
    """(limit, used) of every memory cgroup level that sets a limit; ``used`` leaves out inactive file pages."""
    levels = []
    for folder, names in _cgroup_folders(cgroup_root, proc_cgroup):
        limit = _read_int(folder / names[0])
        if limit is None or limit >= _NO_LIMIT:
            continue
        used = _read_int(folder / names[1]) or 0
        stat = _read_stat(folder / "memory.stat")
        reclaimable = stat.get(names[2], 0)
        levels.append((limit, max(0, used - reclaimable)))
    return levels


V2_FILES = ("memory.max", "memory.current", "inactive_file")
V1_FILES = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")


def _cgroup_folders(root: Path, proc_cgroup: Path) -> list[tuple[Path, tuple[str, str, str]]]:
    """Each memory cgroup folder from the process's own up to the hierarchy's root, with its file names."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    found = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2, mounted at the root or under unified/
            for mount in (root, root / "unified"):
                if (mount / "cgroup.controllers").exists():
                    found += [(folder, V2_FILES) for folder in _up_to(mount, path)]
                    break
        elif "memory" in controllers.split(","):
            found += [(folder, V1_FILES) for folder in _up_to(root / "memory", path)]
    return found


def _up_to(mount: Path, path: str) -> list[Path]:
    """The folders from ``mount/path`` up to ``mount``. Inside a container's cgroup namespace the path
    printed may not exist under the mount (the mount is already the container's own cgroup): then only
    the mount itself is read."""
    own = mount / path.strip("/")
    if not own.is_dir():
        return [mount] if mount.is_dir() else []
    folders = [own]
    while folders[-1] != mount and mount in folders[-1].parents:
        folders.append(folders[-1].parent)
    return folders


def _read_int(file: Path) -> int | None:
    try:
        text = file.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return _NO_LIMIT
    try:
        return int(text)
    except ValueError:
        return None


def _read_stat(file: Path) -> dict[str, int]:
    try:
        pairs = (line.split() for line in file.read_text().splitlines())
        return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].isdigit()}
    except OSError:
        return {}


def _meminfo(meminfo: Path) -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes: what can be had without swapping."""
    try:
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
        return int(fields["MemTotal"].split()[0]) * 1024, int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")


def release_freed_memory() -> None:
    """Hand memory freed by Python/torch back to the system (glibc's malloc_trim).

    Converting a loaded model's weights (bf16 → fp8) frees many mid-sized blocks that glibc keeps in
    its heap: the process's RSS, and so the cgroup's count, stays at the bf16 size until trimmed.
    The freed space would be reused by the next load anyway, but other processes and the limit see it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        pass


class PeakRss:
    """Peak anonymous resident memory (``RssAnon``: what the process itself allocated, not the page cache
    of mapped files) above the level at entry, sampled every ``interval_s`` in a thread: for benches and
    for the tests that hold projected_host to a real load."""

    def __init__(self, interval_s: float = 0.002, status: Path = Path("/proc/self/status")):
        self.interval_s, self._status = interval_s, status
        self.start_bytes = self.peak_bytes = 0

    def rss_anon(self) -> int:
        for line in self._status.read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        return 0

    def __enter__(self) -> PeakRss:
        import threading

        self.start_bytes = self.peak_bytes = self.rss_anon()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.is_set():
                self.peak_bytes = max(self.peak_bytes, self.rss_anon())
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=sample, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self.rss_anon())

    @property
    def added_bytes(self) -> int:
        return self.peak_bytes - self.start_bytes
