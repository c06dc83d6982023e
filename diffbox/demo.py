"""Tiny random-weight models, built offline, for ``--demo`` and the tests.

Every model has the real architecture (Wan 2.2 A14B-style I2V with two experts, Qwen-Image-Edit,
a Qwen ControlNet, LoRAs in diffusers and ComfyUI key formats) at a few hundred KB, so the
whole app can run end to end on a CPU without downloads. Same seed gives byte-identical files.
docs/tiny_models.md says why each config and tokenizer looks the way it does.

    python -m diffbox.demo build DIR [--seed N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import torch

from diffbox.engine.compat import install_qwen_processor_compat
from diffbox.workflows.registry import WORKFLOWS

DEMO_VERSION = 2  # bump when the builders change; ensure_demo_models rebuilds then
MARKER_NAME = "demo.json"

# What the app's forms start with in --demo mode (each workflow's demo_defaults: sizes a CPU renders in a
# couple of seconds). Keys are workflow parameter names; values are validated against each spec at start.
DEMO_DEFAULTS: dict[str, dict] = {name: dict(w.demo_defaults) for name, w in WORKFLOWS.items() if w.demo_defaults}

# Where each model lives under the demo root.
DEMO_LAYOUT: dict[str, str] = {
    "wan22-i2v": "wan22-i2v",
    "qwen-image-edit": "qwen-image-edit",
    "qwen-controlnet": "qwen-controlnet",
    "wan-lora-high": "loras/wan-lora-high.safetensors",
    "wan-lora-low": "loras/wan-lora-low.safetensors",
    "wan-lora-high-comfy": "loras/wan-lora-high-comfy.safetensors",
    "wan-lora-low-comfy": "loras/wan-lora-low-comfy.safetensors",
    "qwen-lora": "loras/qwen-lora.safetensors",
}

# ---------------------------------------------------------------------------------------------
# Configs (docs/tiny_models.md). Sizes are the smallest that keep every code path alive.
# ---------------------------------------------------------------------------------------------

WAN_VAE = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
               temperal_downsample=[False, True, True])
# rope_max_seq_len as in Wan 2.2 (1024 positions per axis): it only sizes the rotary table, no weights, and
# with fewer positions than latent rows or columns (side / 16) every size the form offers above 512 px fails.
WAN_TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36,
                       out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
                       cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=1024, image_dim=None)
WAN_TEXT_ENCODER = dict(d_model=32, d_kv=8, d_ff=32, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                        relative_attention_max_distance=16, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
WAN_SCHEDULER = dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
WAN_BOUNDARY_RATIO = 0.9  # high-noise expert for t >= 900, low-noise expert below, like Wan 2.2 A14B

QWEN_TRANSFORMER = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16,
                        num_attention_heads=2, joint_attention_dim=16, guidance_embeds=False,
                        axes_dims_rope=(8, 4, 4))  # rope dims must sum to the head dim
# Scale factor 8 like the real VAE; num_res_blocks=0 because CPU conv3d is very slow (docs/tiny_models.md, trap 6).
QWEN_VAE = dict(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=0,
                temperal_downsample=[False, True, True], latents_mean=[0.0] * 16, latents_std=[1.0] * 16)
QWEN_TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=2,
                 # mrope_section must sum to head_dim / 2 = 4
                 rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 1e6})
QWEN_VISION = dict(depth=2, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=16, patch_size=14,
                   spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1])
# At most 16 merged vision tokens per image; the default allows 1280 (docs/tiny_models.md, trap 7).
QWEN_IMAGE_PROCESSOR = dict(size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16},
                            patch_size=14, temporal_patch_size=2, merge_size=2)
QWEN_SCHEDULER = dict(use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9, base_image_seq_len=256,
                      max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential")
QWEN_CONTROLNET_LAYERS = 2

LORA_RANK = 4
WAN_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
QWEN_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
LORA_B_SCALE = 4.0  # random LoRAs at peft's default init barely move a 2-step output; make them obvious

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# Text the tokenizers learn their merges / words from: the pipelines' prompt templates plus
# typical prompts, so demo prompts tokenize to realistic lengths.
TOKENIZER_CORPUS = [
    "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships "
    "of the objects and background:",
    "Describe the key features of the input image (color, shape, size, texture, objects, background), then "
    "explain how the user's text instruction should alter or modify the image. Generate a new image that meets "
    "the user's requirements while maintaining consistency with the original input where appropriate.",
    "Picture 1: Picture 2: Picture 3:",
    "A cat walks slowly across a sunny garden, the camera follows it in a smooth tracking shot.",
    "A woman in a red dress dances on a beach at sunset, waves rolling in, cinematic lighting.",
    "Make the sky purple and add a full moon above the mountains.",
    "Replace the text on the sign with the words OPEN 24 HOURS in bold white letters.",
    "Remove the person on the left and fill the background with green trees.",
    "A close up of a dog running through snow, slow motion, high detail, 4k, 1080p.",
    "Low quality, blurry, static, overexposed, jpeg artifacts, ugly, deformed, extra fingers, watermark.",
    "The same scene at night with neon lights reflecting on the wet street.",
]


def _module_seed(seed: int, name: str) -> int:
    """A seed per module, so builders do not depend on each other's RNG use or order."""
    return zlib.crc32(f"{seed}:{name}".encode())


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------


def build_wan_tokenizer():
    """A T5Tokenizer from a hand-built Unigram vocab: lossless on ASCII text.

    Every printable ASCII character is a piece, so any ASCII prompt round-trips (runs of
    whitespace collapse to one space, as with the real T5 tokenizer); frequent corpus words get
    their own ``▁word`` piece. Not trained: the tokenizers UnigramTrainer is non-deterministic
    (docs/tiny_models.md, trap 5).
    """
    import math
    from collections import Counter

    from transformers import T5Tokenizer

    words = Counter(word for line in TOKENIZER_CORPUS for word in line.split())
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(chr(code), -12.0) for code in range(33, 127)]
    # Sorted, so the vocab order does not depend on Counter's insertion order.
    pieces += [(f"▁{word}", math.log(count) - 5.0) for word, count in sorted(words.items())]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def train_qwen_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a small byte-level BPE with Qwen2's pre-tokenizer (BpeTrainer is deterministic)."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(TOKENIZER_CORPUS, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    # Qwen2Tokenizer wants merges as tuples, not "a b" strings (docs/tiny_models.md, trap 4).
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def build_qwen_tokenizer():
    """A Qwen2Tokenizer over a locally trained BPE, with Qwen's 14 special tokens appended."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = train_qwen_bpe()
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"},
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS],
                         special_tokens=True)
    return tokenizer


# ---------------------------------------------------------------------------------------------
# Model builders: each writes one entry of DEMO_LAYOUT to ``dest``.
# ---------------------------------------------------------------------------------------------


def build_wan_i2v(dest: Path, seed: int) -> None:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_wan_tokenizer()
    torch.manual_seed(_module_seed(seed, "wan.text_encoder"))
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **WAN_TEXT_ENCODER)).eval()
    torch.manual_seed(_module_seed(seed, "wan.vae"))
    vae = AutoencoderKLWan(**WAN_VAE)
    torch.manual_seed(_module_seed(seed, "wan.transformer"))
    transformer = WanTransformer3DModel(**WAN_TRANSFORMER)
    torch.manual_seed(_module_seed(seed, "wan.transformer_2"))
    transformer_2 = WanTransformer3DModel(**WAN_TRANSFORMER)
    pipe = WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
        scheduler=UniPCMultistepScheduler(**WAN_SCHEDULER),
        image_processor=None, image_encoder=None,  # Wan 2.2 I2V has no CLIP image encoder
        transformer=transformer, transformer_2=transformer_2, boundary_ratio=WAN_BOUNDARY_RATIO,
    )
    pipe.save_pretrained(dest)


def _qwen_text_encoder(tokenizer, seed: int):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        # The encoder's vocab and special ids must be the tokenizer's (docs/tiny_models.md, trap 8).
        text_config=dict(QWEN_TEXT, vocab_size=len(tokenizer), bos_token_id=ids("<|endoftext|>"),
                         eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>")),
        vision_config=QWEN_VISION,
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(_module_seed(seed, "qwen.text_encoder"))
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def build_qwen_edit(dest: Path, seed: int) -> None:
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageEditPipeline,
                           QwenImageTransformer2DModel)
    from transformers import Qwen2VLImageProcessorPil, Qwen2VLProcessor

    install_qwen_processor_compat()
    tokenizer = build_qwen_tokenizer()
    # The Pil image processor: the default one needs torchvision (docs/tiny_models.md, trap 3).
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessorPil(**QWEN_IMAGE_PROCESSOR),
                                 tokenizer=tokenizer)
    text_encoder = _qwen_text_encoder(tokenizer, seed)
    torch.manual_seed(_module_seed(seed, "qwen.vae"))
    vae = AutoencoderKLQwenImage(**QWEN_VAE)
    torch.manual_seed(_module_seed(seed, "qwen.transformer"))
    transformer = QwenImageTransformer2DModel(**QWEN_TRANSFORMER)
    pipe = QwenImageEditPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_SCHEDULER), vae=vae,
                                 text_encoder=text_encoder, tokenizer=tokenizer, processor=processor,
                                 transformer=transformer)
    pipe.save_pretrained(dest)


def build_qwen_controlnet(dest: Path, seed: int) -> None:
    from diffusers import QwenImageControlNetModel

    dims = {k: v for k, v in QWEN_TRANSFORMER.items() if k != "guidance_embeds"}
    torch.manual_seed(_module_seed(seed, "qwen.controlnet"))
    controlnet = QwenImageControlNetModel(**dict(dims, num_layers=QWEN_CONTROLNET_LAYERS))
    # The real class zero-initialises its output projections (training starts as a no-op);
    # a demo ControlNet that did nothing would test nothing.
    for layer in [*controlnet.controlnet_blocks, controlnet.controlnet_x_embedder]:
        layer.reset_parameters()
    controlnet.save_pretrained(dest)


def _random_lora_state_dict(transformer, targets: list[str], seed: int, name: str) -> dict[str, torch.Tensor]:
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(_module_seed(seed, name))
    transformer.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=targets,
                                       init_lora_weights=False))
    state_dict = get_peft_model_state_dict(transformer)
    return {key: (value * LORA_B_SCALE if ".lora_B." in key else value).contiguous()
            for key, value in state_dict.items()}


def _wan_lora_state_dict(seed: int, which: str) -> dict[str, torch.Tensor]:
    """peft keys like ``blocks.0.attn1.to_q.lora_A.weight``; the base weights do not matter."""
    from diffusers import WanTransformer3DModel

    return _random_lora_state_dict(WanTransformer3DModel(**WAN_TRANSFORMER), WAN_LORA_TARGETS, seed,
                                   f"wan.lora.{which}")


def to_comfy_wan_lora(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename peft Wan LoRA keys to the original Wan / ComfyUI format most LoRAs ship in.

    ``blocks.0.attn1.to_q.lora_A.weight`` -> ``diffusion_model.blocks.0.self_attn.q.lora_down.weight``,
    plus an ``.alpha`` per layer (alpha == rank, so the LoRA scale stays 1).
    """
    attention = {"attn1": "self_attn", "attn2": "cross_attn"}
    projection = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}
    converted = {}
    for key, value in state_dict.items():
        module, lora_part, _ = key.rsplit(".", 2)  # e.g. blocks.0.attn1.to_out.0 / lora_A / weight
        blocks, index, attn, proj = module.split(".", 3)
        prefix = f"diffusion_model.{blocks}.{index}.{attention[attn]}.{projection[proj]}"
        direction = "lora_down" if lora_part == "lora_A" else "lora_up"
        converted[f"{prefix}.{direction}.weight"] = value
        converted[f"{prefix}.alpha"] = torch.tensor(float(LORA_RANK))
    return converted


def build_wan_lora(dest: Path, seed: int, *, which: str, comfy: bool) -> None:
    from diffusers import WanImageToVideoPipeline
    from safetensors.torch import save_file

    state_dict = _wan_lora_state_dict(seed, which)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if comfy:
        save_file(to_comfy_wan_lora(state_dict), dest, metadata={"format": "pt"})
    else:
        WanImageToVideoPipeline.save_lora_weights(dest.parent, transformer_lora_layers=state_dict,
                                                  weight_name=dest.name)


def build_qwen_lora(dest: Path, seed: int) -> None:
    from diffusers import QwenImageEditPipeline, QwenImageTransformer2DModel

    transformer = QwenImageTransformer2DModel(**QWEN_TRANSFORMER)  # only its shapes matter
    state_dict = _random_lora_state_dict(transformer, QWEN_LORA_TARGETS, seed, "qwen.lora")
    dest.parent.mkdir(parents=True, exist_ok=True)
    QwenImageEditPipeline.save_lora_weights(dest.parent, transformer_lora_layers=state_dict, weight_name=dest.name)


BUILDERS: dict[str, Callable[[Path, int], None]] = {
    "wan22-i2v": build_wan_i2v,
    "qwen-image-edit": build_qwen_edit,
    "qwen-controlnet": build_qwen_controlnet,
    "wan-lora-high": lambda dest, seed: build_wan_lora(dest, seed, which="high", comfy=False),
    "wan-lora-low": lambda dest, seed: build_wan_lora(dest, seed, which="low", comfy=False),
    "wan-lora-high-comfy": lambda dest, seed: build_wan_lora(dest, seed, which="high", comfy=True),
    "wan-lora-low-comfy": lambda dest, seed: build_wan_lora(dest, seed, which="low", comfy=True),
    "qwen-lora": build_qwen_lora,
}


def _named_builder(target: str) -> Callable[[Path, int], None]:
    """A builder named "module:function" (as a workflow's demo_models names it), imported when it runs."""
    module, function = target.split(":")

    def build(dest: Path, seed: int) -> None:
        import importlib

        getattr(importlib.import_module(module), function)(dest, seed)
    return build


# The twins that workflows declare themselves (finishing models), built under the same root.
WORKFLOW_TWINS = {name: twin for workflow in WORKFLOWS.values() for name, twin in workflow.demo_models.items()}
DEMO_LAYOUT.update({name: where for name, (where, _) in WORKFLOW_TWINS.items()})
BUILDERS.update({name: _named_builder(builder) for name, (_, builder) in WORKFLOW_TWINS.items()})

# ---------------------------------------------------------------------------------------------
# Building into a root folder
# ---------------------------------------------------------------------------------------------


def demo_paths(root: Path) -> dict[str, Path]:
    return {name: Path(root) / relative for name, relative in DEMO_LAYOUT.items()}


def _build_one(name: str, dest: Path, seed: int) -> None:
    """Build into a temporary sibling, then swap it in: a crash never leaves half a model."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # fork_rng: the builders reseed torch, which must not change the caller's random stream.
    with (
        torch.random.fork_rng(devices=[]),
        tempfile.TemporaryDirectory(prefix=f".building-{name}-", dir=dest.parent) as scratch,
    ):
        built = Path(scratch) / dest.name
        BUILDERS[name](built, seed)
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        os.replace(built, dest)


def _write_marker(root: Path, seed: int) -> None:
    marker = {"version": DEMO_VERSION, "seed": seed, "models": DEMO_LAYOUT}
    temporary = root / f".{MARKER_NAME}.tmp"
    temporary.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, root / MARKER_NAME)


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _build(root: Path, names: list[str], seed: int, on_built: Callable[[str, Path], None] | None) -> dict[str, Path]:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = demo_paths(root)
    for name in names:
        _build_one(name, paths[name], seed)
        if on_built:
            on_built(name, paths[name])
    _write_marker(root, seed)  # last: its presence means every model above is complete
    return paths


def build_all(root: Path, seed: int = 0, *, on_built: Callable[[str, Path], None] | None = None) -> dict[str, Path]:
    """Build every demo model under ``root`` (replacing what is there); returns name -> path."""
    return _build(root, list(DEMO_LAYOUT), seed, on_built)


def ensure_demo_models(root: Path, *, on_built: Callable[[str, Path], None] | None = None) -> dict[str, Path]:
    """Build only what is missing, or everything when ``root`` holds another DEMO_VERSION."""
    root = Path(root)
    paths = demo_paths(root)
    marker = _read_marker(root)
    if marker is None or marker.get("version") != DEMO_VERSION:
        seed = 0
        missing = list(DEMO_LAYOUT)
    else:
        seed = int(marker.get("seed", 0))  # keep rebuilt pieces consistent with the rest
        missing = [name for name, path in paths.items() if not path.exists()]
    if not missing:
        return paths
    return _build(root, missing, seed, on_built)


QWEN_DEMO_CONDITION_AREA = 64 * 64


def shrink_qwen_condition_area(area: int = QWEN_DEMO_CONDITION_AREA) -> None:
    """Demo/test speed measure, for --demo only: Qwen edit pipelines condition on ~`area` pixels.

    The edit pipelines resize every input to ~1 MP (hard-coded ``calculate_dimensions(1024 * 1024,
    ...)`` / ``VAE_IMAGE_SIZE``), which takes seconds per image on a CPU even with the tiny models
    (docs/tiny_models.md, trap 6). Patches those module globals for the whole process, so it must
    never run with real models: app.py calls it only when started with --demo.
    """
    from diffusers.pipelines.qwenimage import (pipeline_qwenimage_edit, pipeline_qwenimage_edit_inpaint,
                                               pipeline_qwenimage_edit_plus)

    for module in (pipeline_qwenimage_edit, pipeline_qwenimage_edit_inpaint, pipeline_qwenimage_edit_plus):
        original = getattr(module, "_diffbox_calculate_dimensions", module.calculate_dimensions)
        module._diffbox_calculate_dimensions = original
        module.calculate_dimensions = lambda target_area, ratio, original=original: original(area, ratio)
    pipeline_qwenimage_edit_plus.VAE_IMAGE_SIZE = area
    pipeline_qwenimage_edit_plus.CONDITION_IMAGE_SIZE = area


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffbox.demo", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build every demo model into DIR")
    build.add_argument("dir", type=Path, metavar="DIR")
    build.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    build_all(args.dir, args.seed, on_built=lambda name, path: print(f"built {name}: {path}", flush=True))
    print(f"{len(DEMO_LAYOUT)} demo models in {args.dir} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
