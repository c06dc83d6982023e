"""Writing twin files the way the originals were written: diffusers-style JSON, safetensors shards with
their index, per-module seeds so every build of a twin is byte-identical."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

SAFETENSORS_METADATA = {"format": "pt"}  # what diffusers' and transformers' save_pretrained write


@contextmanager
def seeded(seed: int, name: str) -> Iterator[None]:
    """Random weights that depend only on (seed, name), never on what was built before; the caller's
    random stream is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(f"twin:{seed}:{name}".encode()))
        yield


def write_json(path: Path, data: dict, *, sort_keys: bool = True) -> None:
    """diffusers' `to_json_string`: indent 2, sorted keys, trailing newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=sort_keys) + "\n", encoding="utf-8")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path,
              metadata=SAFETENSORS_METADATA if metadata is None else metadata)


def save_shards(folder: Path, tensors: dict[str, torch.Tensor], *, stem: str, count: int, index_name: str,
                total_parameters: bool = False) -> None:
    """``{stem}-0000k-of-0000n.safetensors`` plus the index json mapping every tensor to its shard, as
    ``save_pretrained(max_shard_size=...)`` names them; tensors split in order into ``count`` runs. The
    index metadata holds ``total_size``, and ``total_parameters`` too where transformers 4.5x wrote it."""
    names = list(tensors)
    if len(names) < count:
        raise ValueError(f"{len(names)} tensors cannot fill {count} shards")
    weight_map = {}
    for k in range(count):
        shard = f"{stem}-{k + 1:05d}-of-{count:05d}.safetensors"
        chunk = names[k * len(names) // count:(k + 1) * len(names) // count]
        save_tensors(folder / shard, {name: tensors[name] for name in chunk})
        weight_map |= dict.fromkeys(chunk, shard)
    metadata = {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())}
    if total_parameters:
        metadata["total_parameters"] = sum(t.numel() for t in tensors.values())
    write_json(folder / index_name, {"metadata": metadata, "weight_map": weight_map})


def save_vae(folder: Path, cls, config: dict, *, seed: int, name: str, dtype: torch.dtype) -> None:
    """A diffusers VAE folder: config.json + one diffusion_pytorch_model.safetensors in ``dtype``."""
    with seeded(seed, name):
        vae = cls.from_config(config)
    save_tensors(folder / "diffusion_pytorch_model.safetensors", cast(vae.state_dict(), dtype))
    write_json(folder / "config.json", config)


def cast(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def rename(tensors: dict[str, torch.Tensor], renames: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Applies (old, new) prefix renames in order, first match wins."""
    renamed = {}
    for key, value in tensors.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        renamed[key] = value
    return renamed
