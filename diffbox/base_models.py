"""The base-model vocabulary, declared once: the keys the library records on every model file, LoRA
compatibility, the search filters of both hubs and the Models tab's labels all come from here."""

from __future__ import annotations

from dataclasses import dataclass

WAN22_I2V = "wan2.2-i2v"
WAN21 = "wan2.1"
QWEN_IMAGE = "qwen-image"
QWEN_EDIT = "qwen-edit"


@dataclass(frozen=True)
class BaseModel:
    key: str
    label: str                      # the Models tab's filter
    hf_repo: str                    # Hugging Face model-tree tag (base_model:adapter:<repo>) a search filters on
    civitai: tuple[str, ...]        # Civitai's exact baseModel strings (it validates nothing: a typo finds nothing)
    lora_bases: tuple[str, ...]     # whose LoRAs and ControlNets run on it
    # The model catalog walks the model tree (base_model:<repo> tags) of each of these repos, and the repos
    # whose names hold one of these words (repackaged and quantised files often carry no model-tree tag).
    hf_tree: tuple[str, ...] = ()
    hf_words: tuple[str, ...] = ()


BASES: tuple[BaseModel, ...] = (
    BaseModel(WAN22_I2V, "Wan 2.2 I2V A14B", "Wan-AI/Wan2.2-I2V-A14B", ("Wan Video 2.2 I2V-A14B",), (WAN22_I2V,),
              ("Wan-AI/Wan2.2-I2V-A14B", "Wan-AI/Wan2.2-I2V-A14B-Diffusers"), ("Wan2.2", "Wan_2.2")),
    BaseModel(WAN21, "Wan 2.1 / other Wan", "Wan-AI/Wan2.1-I2V-14B-720P",
              ("Wan Video 14B i2v 480p", "Wan Video 14B i2v 720p", "Wan Video 14B t2v", "Wan Video 1.3B t2v",
               "Wan Video"), (WAN21,),
              ("Wan-AI/Wan2.1-I2V-14B-720P", "Wan-AI/Wan2.1-I2V-14B-480P", "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
               "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"), ("Wan2.1", "Wan_2.1")),
    # Qwen-Image LoRAs are commonly used on Qwen-Image-Edit and the other way round; Civitai files both
    # under one string.
    BaseModel(QWEN_IMAGE, "Qwen-Image", "Qwen/Qwen-Image", ("Qwen",), (QWEN_IMAGE, QWEN_EDIT), ("Qwen/Qwen-Image",),
              ("Qwen-Image",)),
    BaseModel(QWEN_EDIT, "Qwen-Image-Edit", "Qwen/Qwen-Image-Edit-2509", ("Qwen",), (QWEN_EDIT, QWEN_IMAGE),
              ("Qwen/Qwen-Image-Edit", "Qwen/Qwen-Image-Edit-2509", "Qwen/Qwen-Image-Edit-2511"), ("Qwen-Image",)),
)
BASE_MODELS: tuple[str, ...] = tuple(b.key for b in BASES)
BY_KEY: dict[str, BaseModel] = {b.key: b for b in BASES}
