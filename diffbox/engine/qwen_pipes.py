"""One loaded Qwen-Image(-Edit) model serving every mode through views over the same modules.

The cache loads the model folder once, as its own class (2509 and 2511: QwenImageEditPlusPipeline;
the original Qwen-Image-Edit: QwenImageEditPipeline). Generate, inpaint, ControlNet and the other
edit flavour need other pipeline classes over the same transformer/VAE/text encoder. A view is
that class's constructor called with the cached pipeline's components: no weights are loaded or
copied, and LoRAs or attention settings put on the shared transformer reach every mode.

Not `from_pipe`: it ends with `.to(dtype)`, float32 unless told otherwise, on every shared module,
so a bf16 model would be cast to float32 in place (a 20B transformer → ~82 GB), and even with the
right dtype fp8 layerwise storage would be upcast. The constructor only registers the modules,
so dtypes, fp8 storage and offload hooks stay exactly as the cache placed them. The views are
remembered on the loaded pipeline itself, so they live and die with the cache entry.

QwenImageEditPlusInpaintPipeline: diffusers 0.42 has no inpaint pipeline for the Plus models (2509,
2511), and its QwenImageEditInpaintPipeline encodes the prompt the original Edit way (the image
tokens inside the template, the ~1 MP image to the vision-language encoder). 2509 was trained and
is served with the Plus encoding: "Picture 1: <image tokens>" in front of the prompt and the image
at a 384×384 area for the encoder (QwenImageEditPlusPipeline's CONDITION_IMAGE_SIZE). Inpaint's
latents, mask and VAE conditioning (the image at ~1 MP) already match Plus's, so the subclass
changes only the prompt encoding, by calling Plus's own.
"""

from __future__ import annotations

import threading
from pathlib import Path

import diffusers
import torch
from diffusers import DiffusionPipeline, QwenImageEditInpaintPipeline, QwenImageEditPlusPipeline
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus_module

from diffbox.engine import tuning

_VIEWS = "_diffbox_views"
_CONTROLNETS = "_diffbox_controlnets"
_lock = threading.Lock()

# Model classes trained with the Plus encoding (their model_index.json names this class).
PLUS_CLASSES = ("QwenImageEditPlusPipeline",)
# Plus sets its template in __init__; a pipeline without modules is enough to read it.
_PLUS_TEMPLATE = QwenImageEditPlusPipeline(None, None, None, None, None, None).prompt_template_encode


class QwenImageEditPlusInpaintPipeline(QwenImageEditInpaintPipeline):
    """Inpaint for Qwen-Image-Edit-2509/2511: the v1 inpaint pipeline with Plus's prompt encoding
    (the module docstring says why that is the whole difference)."""

    def __init__(self, scheduler, vae, text_encoder, tokenizer, processor, transformer):
        super().__init__(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                         processor=processor, transformer=transformer)
        self.prompt_template_encode = _PLUS_TEMPLATE

    def _get_qwen_prompt_embeds(self, prompt=None, image=None, device=None, dtype=None):
        if image is not None:
            image = [self._condition_image(one) for one in (image if isinstance(image, list) else [image])]
        return QwenImageEditPlusPipeline._get_qwen_prompt_embeds(self, prompt, image, device, dtype)

    def _condition_image(self, image):
        # Read at call time, as Plus does, so the module's constants are the ones in force.
        ratio = image.width / image.height
        width, height = plus_module.calculate_dimensions(plus_module.CONDITION_IMAGE_SIZE, ratio)
        return self.image_processor.resize(image, height, width)


_LOCAL_CLASSES = {cls.__name__: cls for cls in (QwenImageEditPlusInpaintPipeline,)}


def pipeline_type(class_name: str) -> type[DiffusionPipeline]:
    found = _LOCAL_CLASSES.get(class_name) or getattr(diffusers, class_name, None)
    if not (isinstance(found, type) and issubclass(found, DiffusionPipeline)):
        raise ValueError(f"unknown Qwen pipeline class {class_name!r}")
    return found


def view(pipe, class_name: str, controlnet=None):
    """`pipe` seen as `class_name`, sharing its components (module docstring); `pipe` itself when it is one."""
    if type(pipe).__name__ == class_name and controlnet is None:
        return pipe
    key = (class_name, id(controlnet))
    with _lock:
        views = pipe.__dict__.setdefault(_VIEWS, {})
        if key not in views:
            views[key] = _build_view(pipe, pipeline_type(class_name), controlnet)
        return views[key]


def _build_view(pipe, cls: type[DiffusionPipeline], controlnet):
    expected, _ = DiffusionPipeline._get_signature_keys(cls)
    available = {**pipe.components, **({"controlnet": controlnet} if controlnet is not None else {})}
    missing = sorted(set(expected) - set(available) - set(cls._optional_components or ()))
    if missing:
        raise ValueError(f"this model ({type(pipe).__name__}) has no {', '.join(missing)}, which "
                         f"{cls.__name__} needs: pick a model made for this mode")
    built = cls(**{name: available[name] for name in expected if name in available})
    tuning.share_originals(pipe, built)  # "the model's scheduler" stays the loaded model's
    return built


def release_offload(pipe, runner) -> None:
    """After a view ran: put model-offloaded weights back on the CPU. The view's own call cannot,
    because the offload hooks were installed by (and are listed on) the cached pipeline."""
    if runner is not pipe:
        pipe.maybe_free_model_hooks()


def controlnet_for(pipe, path: Path):
    """The QwenImageControlNetModel at `path`, loaded once per pipeline in its dtype and on the device
    its transformer runs on. (Not counted in the cache's memory estimate: a Qwen ControlNet is a
    few blocks, small next to the 20B transformer.)"""
    key = str(path)
    with _lock:
        loaded = pipe.__dict__.setdefault(_CONTROLNETS, {})
        if key not in loaded:
            model = diffusers.QwenImageControlNetModel.from_pretrained(path, dtype=pipe.transformer.dtype)
            loaded[key] = model.to(_execution_device(pipe)).eval()
        return loaded[key]


def _execution_device(pipe) -> torch.device:
    try:
        return pipe._execution_device  # where offload hooks run the model, not where it is stored
    except Exception:
        return next(pipe.transformer.parameters()).device
