"""Build pipelines: find the model, load it, put its weights where the placement says.

Every model diffbox runs, real or demo, goes through here so the environment shims, the dtype
policy and the offload calls live in one place. Sources:

- a local diffusers folder (``model_index.json`` + component folders);
- a Hugging Face repo id (``org/name`` or ``org/name@revision``) or a ``models--org--name`` folder,
  resolved to its snapshot in the local HF cache (never downloaded here: that is the hub's job);
- a ``ModelSource`` that swaps single-file checkpoints (.safetensors, or .gguf with the gguf
  package) into a base folder, e.g. Wan 2.2's two experts as ``transformer`` and ``transformer_2``.

Placement and weight storage use diffusers' own hooks (model/sequential/group offload, layerwise
casting) and torchao; nothing here re-implements them.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from diffusers import DiffusionPipeline

from diffbox.engine.checkpoints import (checkpoint_keys, config_overrides, fp32_values,
                                        state_dict_for_diffusers)
from diffbox.engine.compat import install_qwen_processor_compat
from diffbox.engine.kept_copies import kept_copy, read_ahead
from diffbox.engine.memory import (DEFAULT_SKIP_PATTERNS, GROUP_OFFLOAD_EXCLUDE, LOW_PRECISION_PREFIXES,
                                   MODE_LABELS, component_weight_files, tensor_shapes)
from diffbox.engine.weight_files import read_safetensors_header

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
SINGLE_FILE_SUFFIXES = (".safetensors", ".gguf")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def default_dtype() -> torch.dtype:
    """bfloat16 on CUDA (what Wan 2.2 and Qwen-Image ship in); float32 on CPU, where bf16 is slow."""
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """"auto"/None -> default_dtype(); "bfloat16"/"float16"/"float32" or a torch.dtype as given."""
    if dtype is None or dtype == "auto":
        return default_dtype()
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------------------------------------
# Where the model is
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """A diffusers folder (or repo id), optionally with components replaced by single-file checkpoints.

    ``ModelSource("Wan-AI/Wan2.2-I2V-A14B-Diffusers", {"transformer": "high.gguf", "transformer_2": "low.gguf"})``
    """
    base: str | Path
    files: tuple[tuple[str, Path], ...] | dict = ()

    def __post_init__(self):
        files = self.files.items() if isinstance(self.files, dict) else self.files
        object.__setattr__(self, "files", tuple(sorted((str(c), Path(f)) for c, f in files)))

    @property
    def key(self) -> str:
        """One string naming exactly what is loaded: the cache key and the name /health shows."""
        return str(self.base) + "".join(f"+{component}={file}" for component, file in self.files)


def hf_cache_dir() -> Path:
    """The HF hub cache, read at call time: prepare_home() sets HF_HOME after huggingface_hub is imported."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def read_model_index(path: str | Path) -> dict:
    """Parse ``model_index.json`` of a diffusers folder, with errors that name the file."""
    index_file = Path(path) / "model_index.json"
    if not index_file.is_file():
        raise FileNotFoundError(f"not a diffusers folder: {index_file} is missing")
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {index_file}: {error}") from error
    if not isinstance(index, dict) or "_class_name" not in index:
        raise ValueError(f"{index_file} is not a diffusers model index (no _class_name)")
    return index


def resolve_diffusers_folder(ref: str | Path, *, cache_dir: str | Path | None = None) -> Path:
    """A local diffusers folder for a folder path, an HF cache repo folder, or a repo id in the HF cache."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if path.name.startswith("models--") and not (path / "model_index.json").exists():
            path = _snapshot_of_cache_folder(path)
        read_model_index(path)
        return path.resolve()
    if path.is_file():
        if path.suffix in SINGLE_FILE_SUFFIXES:
            raise ValueError(f"{path} is a single-file checkpoint: load it into a base model with "
                             f"ModelSource(base, {{'transformer': '{path}'}})")
        raise ValueError(f"{path} is a file, not a diffusers model folder")
    text = str(ref)
    if _REPO_ID.match(text) and not text.startswith((".", "/", "~")):
        return _snapshot_of_repo(text, Path(cache_dir) if cache_dir else hf_cache_dir())
    raise FileNotFoundError(f"no model at {ref}: not a folder, and not a repo id like org/name")


def _snapshot_of_cache_folder(repo_folder: Path) -> Path:
    """models--org--name/snapshots/<sha>: the one refs/main points to, else the only one there is."""
    main = repo_folder / "refs" / "main"
    if main.is_file():
        snapshot = repo_folder / "snapshots" / main.read_text(encoding="utf-8").strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = sorted(p for p in (repo_folder / "snapshots").glob("*") if p.is_dir())
    if len(snapshots) == 1:
        return snapshots[0]
    raise FileNotFoundError(f"{repo_folder} holds {len(snapshots)} snapshots and no refs/main: cannot tell which")


def _snapshot_of_repo(ref: str, cache_dir: Path) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id, _, revision = ref.partition("@")
    try:
        folder = Path(snapshot_download(repo_id, revision=revision or None, cache_dir=cache_dir,
                                        local_files_only=True))
    except LocalEntryNotFoundError:
        raise FileNotFoundError(f"{ref} is not in the Hugging Face cache ({cache_dir}); "
                                "download it first") from None
    read_model_index(folder)
    return folder


def resolve_source(source: str | Path | ModelSource, *, cache_dir: str | Path | None = None) -> ModelSource:
    """Any accepted model reference -> a ModelSource with a resolved base folder and checked files."""
    if not isinstance(source, ModelSource):
        return ModelSource(resolve_diffusers_folder(source, cache_dir=cache_dir))
    base = resolve_diffusers_folder(source.base, cache_dir=cache_dir)
    files = {}
    for component, file in source.files:
        file = file.expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"checkpoint for {component} not found: {file}")
        if file.suffix not in SINGLE_FILE_SUFFIXES:
            raise ValueError(f"{file}: unsupported checkpoint type {file.suffix or '(none)'}; "
                             f"expected {' or '.join(SINGLE_FILE_SUFFIXES)}")
        files[component] = file.resolve()
    return ModelSource(base, files)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_pipeline(
    path: str | Path | ModelSource,
    *,
    dtype: torch.dtype | str | None = None,
    vae_dtype: torch.dtype | str | None = None,
    pipeline_class: type | None = None,
    cache_dir: str | Path | None = None,
    prepare: Callable[[str, torch.nn.Module], None] | None = None,
) -> DiffusionPipeline:
    """Load a pipeline onto the CPU from a folder, a cached repo id, or a ModelSource.

    ``vae_dtype`` loads the VAE alone in another dtype (None/"auto" = ``dtype``): diffusers
    recommends float32 for Wan's VAE under bf16 experts. ``pipeline_class`` overrides the class
    named in model_index.json, e.g. to open a Qwen-Image-Edit folder as QwenImageEditPlusPipeline.

    ``prepare(name, module)`` is called on each denoiser as soon as it is loaded, before the next one
    loads (the cache stores it in fp8 there, or moves it to the GPU): the host then never holds every
    denoiser in the compute dtype at once, only the ones prepared so far plus the one loading.
    """
    install_qwen_processor_compat()
    source = resolve_source(path, cache_dir=cache_dir)
    index = read_model_index(source.base)  # fail early with a clear message instead of a hub lookup error
    dtype = resolve_dtype(dtype)
    vae = dtype if vae_dtype in (None, "auto") else resolve_dtype(vae_dtype)
    singles = dict(source.files)
    fixed = experts_without_image_layers(source.base, index, skip=singles)
    # Denoisers are loaded here one by one (prepare runs between them; a float32 one loads from its kept copy).
    first = [name for name in [*singles, *index] if name in singles or name in fixed or _is_denoiser(index, name)]
    first = list(dict.fromkeys(first))
    # Components loaded here are passed in, so from_pretrained never reads the base folder's copy of them.
    replaced = {}
    for name in sorted(first, key=lambda name: not _is_denoiser(index, name)):
        component_dtype = vae if name == "vae" else dtype
        if name in singles:
            module = load_single_file(singles[name], base=source.base, component=name, dtype=component_dtype,
                                      index=index)
        else:
            module = _load_diffusers_component(source.base, index, name, component_dtype,
                                               **fixed.get(name, {}))
        if prepare is not None and _is_denoiser(index, name):
            prepare(name, module)
        replaced[name] = module
    replaced = {**t5_tokenizer_as_saved(source.base, index), **replaced}
    # The concrete class, not DiffusionPipeline: the generic from_pretrained silently ignores
    # passed-in components (it checks kwargs against DiffusionPipeline's own, empty, signature).
    loader = pipeline_class or _pipeline_class(index)
    # dtype=, not torch_dtype=: the latter is deprecated in diffusers 0.42. A dict gives one dtype per
    # component in the same single load ("default" for the rest), so nothing is loaded twice or cast after.
    dtypes = dtype if vae == dtype else {"default": dtype, "vae": vae}
    return loader.from_pretrained(source.base, dtype=dtypes, local_files_only=True, **replaced)


def _is_denoiser(index: dict, name: str) -> bool:
    entry = index.get(name)
    return (name.startswith(LOW_PRECISION_PREFIXES) and isinstance(entry, list) and len(entry) == 2
            and entry[0] == "diffusers")


def _load_diffusers_component(base: Path, index: dict, name: str, dtype: torch.dtype, **config) -> torch.nn.Module:
    """One diffusers model of the folder, as the pipeline's own from_pretrained would load it."""
    import diffusers

    class_name = index[name][1]
    cls = getattr(diffusers, class_name, None)
    if cls is None:
        raise ValueError(f"{base / 'model_index.json'} names {class_name} for {name}, which this diffusers lacks")
    kept = kept_copy(base / name, dtype, tuple(getattr(cls, "_keep_in_fp32_modules", None) or ()))
    if kept is not None:  # float32 on disk: its copy in ``dtype``, written on the first load (kept_copies.py)
        read_ahead(kept)
        return cls.from_pretrained(kept, dtype=dtype, local_files_only=True, **config)
    return cls.from_pretrained(base, subfolder=name, dtype=dtype, local_files_only=True, **config)


def experts_without_image_layers(base: Path, index: dict, *, skip=()) -> dict[str, dict]:
    """{expert: config overrides} for Wan I2V experts whose config names image-conditioning layers their
    weights do not have: they are loaded without them. Wan 2.2 A14B has no image encoder, but one revision
    of its -Diffusers transformer config carried Wan 2.1's ``image_dim`` / ``added_kv_proj_dim``; diffusers
    would then build those layers with random weights and the pipeline would try to run an image encoder it
    does not have."""
    if index.get("_class_name") != "WanImageToVideoPipeline" or any(index.get("image_encoder") or []):
        return {}
    experts = {}
    for name in ("transformer", "transformer_2"):
        config_file = base / name / "config.json"
        if name in skip or not config_file.is_file():
            continue
        if json.loads(config_file.read_text(encoding="utf-8")).get("image_dim") is None:
            continue
        if any(key.startswith("condition_embedder.image_embedder.") for file in component_weight_files(base / name)
               for key in tensor_shapes(file)):
            continue  # the weights are there: a real Wan 2.1-style expert
        experts[name] = {"image_dim": None, "added_kv_proj_dim": None}
    return experts


def t5_tokenizer_as_saved(base: Path, index: dict) -> dict:
    """{"tokenizer": ...} read from the folder's tokenizer.json exactly as saved, for a T5-family tokenizer.

    transformers 5's T5Tokenizer keeps only the vocabulary of that file and rebuilds the Unigram model
    around it with T5's layout (unknown = id 2, no byte fallback). UMT5's layout (Wan's tokenizer, from
    google/umt5-xxl) has <pad> 0, </s> 1, <s> 2, <unk> 3, so every prompt character outside the
    vocabulary would silently become <s>. The generic fast tokenizer keeps the saved model whole, so
    prompts tokenize as they did under transformers 4.5x, which Wan was trained and published with."""
    from transformers import PreTrainedTokenizerFast

    entry = index.get("tokenizer")
    folder = base / "tokenizer"
    if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == "transformers"
            and str(entry[1]).startswith("T5Tokenizer") and (folder / "tokenizer.json").is_file()):
        return {}
    return {"tokenizer": PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)}


def _pipeline_class(index: dict) -> type:
    import diffusers

    found = getattr(diffusers, str(index["_class_name"]), None)
    return found if isinstance(found, type) and issubclass(found, DiffusionPipeline) else DiffusionPipeline


def gguf_available() -> bool:
    try:
        import gguf  # noqa: F401
    except ImportError:
        return False
    return True


def load_single_file(file: str | Path, *, base: Path, component: str, dtype: torch.dtype,
                     index: dict | None = None) -> torch.nn.Module:
    """One component from a single-file checkpoint, configured by ``base/component/config.json``.

    Diffusers-format and original-format keys both work (diffusers converts the latter); passing
    ``config=`` means no hub lookup and no guessing the model size from the keys. ComfyUI's scaled
    fp8 files (both formats) are dequantised into ``dtype`` first, the layers diffusers keeps in
    float32 stay float32 as in a folder load, a Qwen-Image-Edit-2511 file gets its ``zero_cond_t``;
    text encoders are refused (engine/checkpoints.py says why).
    """
    import diffusers

    file = Path(file)
    index = index or read_model_index(base)
    entry = index.get(component)
    if isinstance(entry, list) and len(entry) == 2 and entry[0] == "transformers":
        raise ValueError(f"{file.name} cannot replace the {component} of {base.name}: diffbox loads transformers "
                         f"components ({entry[1]}) from the model's folder only; use single files for its "
                         "transformers")
    if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == "diffusers"):
        raise ValueError(f"{base} has no diffusers component {component!r} for {file.name} to replace")
    cls = getattr(diffusers, entry[1], None)
    if cls is None or not hasattr(cls, "from_single_file"):
        raise ValueError(f"{entry[1]} cannot be loaded from a single file ({file})")
    kwargs = dict(config=str(base), subfolder=component, dtype=dtype, local_files_only=True)
    if file.suffix == ".gguf":
        if not gguf_available():
            raise ImportError(f"{file.name} is a GGUF checkpoint; reading it needs the gguf package "
                              "(pip install gguf)")
        kwargs["quantization_config"] = diffusers.GGUFQuantizationConfig(compute_dtype=dtype)
    else:
        read_safetensors_header(file, full_path=True)  # a corrupt, truncated or padded file fails here, named
    try:
        keys = checkpoint_keys(file)
    except Exception as error:  # the GGUF reader raises assorted errors on garbage
        raise ValueError(f"{file} is not a valid {file.suffix[1:]} file: {error}") from None
    config_file = base / component / "config.json"
    base_config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    kwargs |= config_overrides(file, keys, entry[1], base_config)
    checkpoint = state_dict_for_diffusers(file, entry[1], dtype)
    try:  # a copy: diffusers' converter empties the dict it is given, and fp32_values reads it afterwards
        model = cls.from_single_file(dict(checkpoint), **kwargs)
    except Exception as error:
        raise ValueError(f"could not load {file} as the {component} ({entry[1]}) of {base.name}: its "
                         f"tensors do not match that model ({error.__class__.__name__}: {error})") from error
    missing = [name for name, param in model.named_parameters() if param.is_meta]
    if missing:
        raise ValueError(f"{file} lacks {len(missing)} weights of {entry[1]}, e.g. {', '.join(missing[:3])}")
    if "quantization_config" not in kwargs and dtype != torch.float32 and model._keep_in_fp32_modules:
        _keep_fp32_modules(model, fp32_values(model, checkpoint, file))
    return model


def _keep_fp32_modules(model: torch.nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Put back in float32 what from_single_file cast to the compute dtype (a folder load keeps these):
    the file's own values, and the buffers the model computes itself (Wan's rope tables) as a fresh,
    weightless instance of the same config computes them."""
    from accelerate import init_empty_weights

    model.load_state_dict(values, strict=False, assign=True)
    keep = model._keep_in_fp32_modules
    with init_empty_weights():  # parameters on the meta device; buffers are real
        fresh = type(model).from_config(model.config)
    for name, buffer in fresh.named_buffers():
        if name not in values and any(m in name.split(".") for m in keep):
            module, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(module), leaf, buffer)


# ---------------------------------------------------------------------------------------------
# Weight storage and placement (applied to a pipeline loaded on the CPU)
# ---------------------------------------------------------------------------------------------


@functools.cache
def torchao_available() -> bool:
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_  # noqa: F401
    except Exception:  # ImportError, or a torchao built for another torch failing at import
        return False
    return True


def low_precision_components(pipe: DiffusionPipeline) -> list[str]:
    """The denoisers whose weight storage fp8/int8 changes (not ones already quantized, e.g. GGUF)."""
    from diffusers import ModelMixin

    return [name for name, component in pipe.components.items()
            if name.startswith(LOW_PRECISION_PREFIXES) and isinstance(component, ModelMixin)
            and getattr(component, "hf_quantizer", None) is None]


def apply_weights(pipe: DiffusionPipeline, weights: str, compute_dtype: torch.dtype) -> list[str]:
    """Store the denoisers' weights in fp8 (diffusers layerwise casting) or int8 (torchao); returns the
    names of those it changed. A denoiser already stored so (an out-of-memory retry re-placing the same
    pipeline) is left as it is: neither storage can be applied twice."""
    if weights == "native":
        return []
    if weights not in ("fp8", "int8"):
        raise ValueError(f"unknown weights {weights!r}; expected native, fp8 or int8")
    if weights == "int8" and not torchao_available():
        raise ImportError("int8 weights need torchao, which is not installed here; "
                          "pip install torchao (a build matching this torch), or choose fp8")
    names = [name for name in low_precision_components(pipe) if stored_as(getattr(pipe, name)) == "native"]
    for name in names:
        _store(getattr(pipe, name), weights, compute_dtype)
    return names


def prepare_denoiser(model: torch.nn.Module, weights: str, mode: str, compute_dtype: torch.dtype) -> bool:
    """What ``apply_weights`` and ``apply_placement`` would do to this one denoiser, done as soon as it is
    loaded (see load_pipeline's ``prepare``): its weight storage, and for the "gpu" placement the move to
    the GPU, so it leaves the host before the next one loads. True when its storage changed."""
    from diffusers import ModelMixin

    changed = False
    if (weights != "native" and isinstance(model, ModelMixin) and getattr(model, "hf_quantizer", None) is None
            and stored_as(model) == "native"):
        if weights == "int8" and not torchao_available():
            raise ImportError("int8 weights need torchao, which is not installed here; "
                              "pip install torchao (a build matching this torch), or choose fp8")
        _store(model, weights, compute_dtype)
        changed = True
    if mode == "gpu" and torch.cuda.is_available():
        model.to("cuda")
    return changed


def _store(model: torch.nn.Module, weights: str, compute_dtype: torch.dtype) -> None:
    if weights == "fp8":
        # Upcast per layer for compute; diffusers skips norms, embeddings and the model's own list.
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)
        _tell_peft_the_compute_dtype(model)
    elif weights == "int8":
        _quantize_int8(model)
    else:
        raise ValueError(f"unknown weights {weights!r}; expected native, fp8 or int8")


def stored_as(model: torch.nn.Module) -> str:
    """"fp8" or "int8" once apply_weights stored the model so, else "native"."""
    from diffusers.hooks.layerwise_casting import _LAYERWISE_CASTING_HOOK

    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and registry.get_hook(_LAYERWISE_CASTING_HOOK) is not None:
            return "fp8"
        if type(getattr(module, "weight", None)).__module__.startswith("torchao."):
            return "int8"
    return "native"


def _tell_peft_the_compute_dtype(model: torch.nn.Module) -> None:
    """LoRAs are loaded per job, after the weights went to fp8. PEFT creates each LoRA layer in its base
    layer's dtype, or in the base layer's ``compute_dtype`` when it has one (as quantized layers do: bnb,
    GGUF), and casts the layer's input to that dtype. Without this the LoRA would be stored in fp8 too,
    where small LoRA values round to zero and the first step fails ("not implemented for
    'Float8_e4m3fn'"). The layer's own weights keep their fp8 storage and diffusers' upcast hook."""
    from diffusers.hooks.layerwise_casting import _LAYERWISE_CASTING_HOOK

    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook(_LAYERWISE_CASTING_HOOK) if registry is not None else None
        if hook is not None:
            module.compute_dtype = hook.compute_dtype


def _quantize_int8(model: torch.nn.Module) -> None:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    # The same layers layerwise casting leaves alone (norms, fp32-pinned embedders) stay exact here too.
    skip = DEFAULT_SKIP_PATTERNS + tuple(getattr(model, "_keep_in_fp32_modules", None) or ()) + tuple(
        getattr(model, "_skip_layerwise_casting_patterns", None) or ())

    def wanted(module: torch.nn.Module, name: str) -> bool:
        return isinstance(module, torch.nn.Linear) and not any(re.search(p, name) for p in skip)

    quantize_(model, Int8WeightOnlyConfig(), filter_fn=wanted)


def apply_placement(pipe: DiffusionPipeline, mode: str, *, pin_memory: bool = True) -> str | None:
    """Put a CPU-loaded pipeline where ``mode`` says. Returns a note when it had to be adapted.

    On CUDA: gpu = ``.to("cuda")``; model_offload = ``enable_model_cpu_offload``; group_offload =
    diffusers group offload, block level for diffusers models and leaf level for text encoders
    (their blocks are nested too deep for block level), with CUDA streams, VAE kept whole on the
    GPU; sequential_offload = ``enable_sequential_cpu_offload``. Without CUDA the CPU stands in for
    the GPU (the same hooks run, so tests exercise them) except sequential offload, which accelerate
    cannot do onto the CPU it offloads to. ``pin_memory=False`` pins per transfer instead of
    pinning a second copy of all weights up front (group offload with streams), when RAM is short.
    """
    cuda = torch.cuda.is_available()
    device = torch.device("cuda") if cuda else torch.device("cpu")
    note = None if cuda or mode == "cpu" else f"No CUDA here: {MODE_LABELS[mode]} runs with the CPU as the GPU"
    if mode in ("gpu", "cpu"):
        pipe.to(device if mode == "gpu" else "cpu")
    elif mode == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "group_offload":
        _enable_group_offload(pipe, device, use_stream=cuda, low_cpu_mem_usage=not pin_memory)
    elif mode == "sequential_offload":
        if cuda:
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.to("cpu")
            note = "No CUDA here: sequential offload needs a GPU to offload from, so the weights stay on the CPU"
    else:
        raise ValueError(f"unknown placement {mode!r}")
    return note


def _enable_group_offload(pipe: DiffusionPipeline, device: torch.device, *, use_stream: bool,
                          low_cpu_mem_usage: bool) -> None:
    from diffusers import ModelMixin
    from diffusers.hooks import apply_group_offloading

    common = dict(onload_device=device, offload_device=torch.device("cpu"), use_stream=use_stream,
                  non_blocking=use_stream, low_cpu_mem_usage=low_cpu_mem_usage)
    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        if name in GROUP_OFFLOAD_EXCLUDE:
            component.to(device)
        elif isinstance(component, ModelMixin):
            component.enable_group_offload(offload_type="block_level", num_blocks_per_group=1, **common)
        else:
            apply_group_offloading(component, offload_type="leaf_level", **common)


def release_placement(pipe: DiffusionPipeline, mode: str) -> bool:
    """Undo a gpu or model_offload placement (weights back on the CPU, hooks removed), so the same
    pipeline can be placed again without reloading. False for placements that cannot be undone
    cleanly (group/sequential offload): reload those."""
    if mode in ("gpu", "cpu"):
        pipe.to("cpu")
        return True
    if mode == "model_offload":
        pipe.remove_all_hooks()
        pipe.to("cpu")
        return True
    return False
