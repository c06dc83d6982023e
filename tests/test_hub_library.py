"""The local library: demo models, hand-copied files recognised from their keys, base models, pins."""

import pytest

from diffbox.hub.library import Library
from fake_hubs import make_safetensors, qwen_lora, wan_lora


def test_demo_models_are_in_the_library_and_feed_the_dropdowns(services):
    models = {m.name: m for m in services.library.models()}
    expect = {
        "demo/wan22-i2v": ("diffusers", "wan2.2-i2v", "WanImageToVideoPipeline"),
        "demo/qwen-image-edit": ("diffusers", "qwen-edit", "QwenImageEditPipeline"),
        "demo/qwen-controlnet": ("controlnet", "qwen-image", "QwenImageControlNetModel"),
        "demo/loras/wan-lora-high.safetensors": ("lora", "wan2.2-i2v", ""),
        "demo/loras/wan-lora-low-comfy.safetensors": ("lora", "wan2.2-i2v", ""),  # ComfyUI key names
        "demo/loras/qwen-lora.safetensors": ("lora", "qwen-image", ""),
    }
    for name, (kind, base, pipeline_class) in expect.items():
        assert (models[name].kind, models[name].base_model, models[name].pipeline_class) == (kind, base,
                                                                                              pipeline_class)
    assert models["demo/wan22-i2v"].size > 0 and models["demo/loras/qwen-lora.safetensors"].source == "local"
    assert [m.name for m in services.models("i2v")] == ["demo/wan22-i2v"]
    assert [m.name for m in services.loras("wan2.2-i2v")] == [
        "demo/loras/wan-lora-high-comfy.safetensors", "demo/loras/wan-lora-high.safetensors",
        "demo/loras/wan-lora-low-comfy.safetensors", "demo/loras/wan-lora-low.safetensors"]
    assert [m.name for m in services.loras("qwen-edit")] == ["demo/loras/qwen-lora.safetensors"]
    assert all(lora.path.is_file() for lora in services.loras("wan2.2-i2v"))


def test_hand_copied_files_are_recognised_and_hashed(tmp_path):
    models = tmp_path / "models"
    (models / "mine").mkdir(parents=True)
    (models / "mine" / "orbit.safetensors").write_bytes(wan_lora(0.01))
    (models / "mine" / "portrait.safetensors").write_bytes(qwen_lora())
    (models / "mine" / "qwen_edit_style.safetensors").write_bytes(qwen_lora(1))  # the name says Edit
    (models / "mine" / "mystery.safetensors").write_bytes(make_safetensors({"x.lora_down.weight": [2, 2]}))
    (models / "mine" / "half.safetensors").write_bytes(wan_lora(0.01)[:-10])  # still being copied
    (models / "mine" / "old.ckpt").write_bytes(b"\x80\x04")
    (models / "mine" / "sneaky.safetensors").write_bytes(b"\x80\x04\x95" + b"\0" * 64)
    library = Library(models, tmp_path / "db" / "library.json")
    found = {m.name: (m.kind, m.base_model) for m in library.models()}
    assert found == {"mine/orbit.safetensors": ("lora", "wan2.2-i2v"),
                     "mine/portrait.safetensors": ("lora", "qwen-image"),
                     "mine/qwen_edit_style.safetensors": ("lora", "qwen-edit"),
                     "mine/mystery.safetensors": ("lora", "unknown")}
    assert library.hash_missing() == 4 and all(m.sha256 for m in library.models())
    library.set_base_model("mine/mystery.safetensors", "wan2.1")
    (models / "mine" / "half.safetensors").write_bytes(wan_lora(0.01, 3))  # the copy finished
    library.close()
    reopened = Library(models, tmp_path / "db" / "library.json")  # the app restarted
    found = {m.name: m for m in reopened.models()}
    assert found["mine/mystery.safetensors"].base_model == "wan2.1" and found["mine/mystery.safetensors"].sha256
    assert found["mine/half.safetensors"].kind == "lora"
    with pytest.raises(ValueError, match="unknown base model"):
        reopened.set_base_model("mine/orbit.safetensors", "sdxl")


def test_the_user_can_correct_a_kind_the_keys_could_not_tell(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "exotic.safetensors").write_bytes(make_safetensors({"some.random.key": [2, 2]}))
    library = Library(models, tmp_path / "library.json")
    assert (library.get("exotic.safetensors").kind, library.get("exotic.safetensors").base_model) == (
        "checkpoint", "unknown")
    assert library.loras("wan2.2-i2v") == []
    library.set_kind("exotic.safetensors", "lora")
    library.set_base_model("exotic.safetensors", "wan2.2-i2v")
    library.close()
    reopened = Library(models, tmp_path / "library.json")
    assert [m.name for m in reopened.loras("wan2.2-i2v")] == ["exotic.safetensors"]
    with pytest.raises(ValueError, match="kind is one of checkpoint, lora"):
        reopened.set_kind("exotic.safetensors", "diffusers")


def test_pins_cover_local_and_remote_models(tmp_path):
    models = tmp_path / "models"
    (models / "loras").mkdir(parents=True)
    (models / "loras" / "a.safetensors").write_bytes(wan_lora(0.01))
    library = Library(models, tmp_path / "library.json")
    library.pin("local", "loras/a.safetensors", True)
    assert library.get("loras/a.safetensors").pinned
    remote = library.pin("civitai", "827184", True, revision="2514310", files=[{"name": "x.safetensors"}])
    assert remote == {"source": "civitai", "model_id": "827184", "pinned": True, "revision": "2514310",
                      "in_library": []}
    assert {(p["source"], p["model_id"]) for p in library.pins()} == {("local", "loras/a.safetensors"),
                                                                       ("civitai", "827184")}
    library.pin("local", "loras/a.safetensors", False)
    assert not library.get("loras/a.safetensors").pinned
    with pytest.raises(KeyError):
        library.pin("local", "loras/missing.safetensors", True)


def test_every_twin_is_recognised_by_kind_and_base_model(twin, tmp_path):
    """The published formats, as twins under their original names: what the library lists them as."""
    from diffbox.twins import TWINS

    models = tmp_path / "models"
    for name in TWINS:
        (models / name).mkdir(parents=True)
        (models / name / twin(name).name).symlink_to(twin(name), target_is_directory=twin(name).is_dir())
    library = Library(models, tmp_path / "library.json")
    found = {m.name.split("/")[0]: (m.kind, m.base_model) for m in library.models()}
    assert found == {name: spec.library for name, spec in TWINS.items()}
    svi = {m.name.split("/")[0] for m in library.loras("wan2.2-i2v")}
    assert {"svi-2.0-pro-high", "svi-2.0-pro-low", "lightning-seko-v1-high", "distill-1022-low"} <= svi
    assert {m.name.split("/")[0] for m in library.loras("qwen-edit")} == {
        name for name, spec in TWINS.items() if spec.kind == "lora" and spec.library[1] == "qwen-edit"}


def test_the_keys_alone_tell_a_renamed_twin(twin, tmp_path):
    """Users rename files; the tensor names (or GGUF header) still say what a file is."""
    import shutil

    from diffbox.twins import TWINS

    models = tmp_path / "models"
    models.mkdir()
    expected = {}
    for index, (name, spec) in enumerate(TWINS.items()):
        if spec.kind == "pipeline":
            continue
        path = twin(name)
        shutil.copy(path, models / f"file{index}{path.suffix}")
        family = spec.library[1] if spec.library[1] in ("wan2.2-i2v", "unknown") else "qwen-image"
        expected[f"file{index}{path.suffix}"] = (spec.library[0], "unknown" if spec.library[0] == "text_encoder"
                                                 else family)
    library = Library(models, tmp_path / "library.json")
    assert {m.name: (m.kind, m.base_model) for m in library.models()} == expected
