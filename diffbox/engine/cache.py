"""ModelCache: loaded pipelines kept between jobs, least recently used dropped first.

The second job on the same model then skips loading entirely. (The VRAM budget, offload policy and
idle unload build on this class.)
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from diffbox.engine import loaders

log = logging.getLogger(__name__)


class ModelCache:
    def __init__(self, loader: Callable[[Path], object] | None = None, max_loaded: int = 1):
        self._loader = loader or (lambda path: loaders.load_pipeline(path))
        self._max_loaded = max_loaded
        self._pipes: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str | Path):
        key = str(Path(path).resolve())
        with self._lock:
            if key in self._pipes:
                self._pipes.move_to_end(key)
                return self._pipes[key]
            while len(self._pipes) >= self._max_loaded:
                evicted, _ = self._pipes.popitem(last=False)
                log.info("unloaded %s to make room", evicted)
                gc.collect()
            log.info("loading %s", key)
            pipe = self._loader(Path(key))
            self._pipes[key] = pipe
            return pipe

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._pipes)

    def clear(self) -> None:
        with self._lock:
            self._pipes.clear()
        gc.collect()
