"""What may land in models/: file names, formats, headers; and where tokens are kept."""

import json
import logging
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffbox.hub.safety import (UnsafeFile, filename_from_content_disposition, safe_filename, safe_relative_path,
                                validate_weights)
from diffbox.hub.tokens import TokenStore
from diffbox.logs import redact
from fake_hubs import make_safetensors


@pytest.mark.parametrize("name, expected", [
    ("lora.safetensors", "lora.safetensors"),
    ("../../x.safetensors", "x.safetensors"),
    ("..\\..\\windows.safetensors", "windows.safetensors"),
    ("/etc/abs.gguf", "abs.gguf"),
    ("Ünïcode Name v2.SafeTensors", "Ünïcode Name v2.SafeTensors"),
])
def test_safe_filename_keeps_only_a_bare_name(name, expected):
    assert safe_filename(name) == expected


@pytest.mark.parametrize("name, message", [
    ("model.ckpt", "pickles"), ("model.pt", "pickles"), ("pytorch_model.bin", "pickles"),
    ("notes.txt", "only .safetensors, .gguf"), ("..", "empty or hidden"), ("", "empty or hidden"),
    (".hidden.safetensors", "empty or hidden"), ("a\x00b.safetensors", "control"),
    ("c:evil.safetensors", "control characters or ':'"), ("x" * 300 + ".safetensors", "longer than"),
])
def test_safe_filename_refuses(name, message):
    with pytest.raises(UnsafeFile, match=message):
        safe_filename(name)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_no_name_ever_escapes_its_folder(name):
    try:
        safe = safe_filename(name + ".safetensors")
    except UnsafeFile:
        return
    assert "/" not in safe and "\\" not in safe and safe not in (".", "..") and ":" not in safe
    assert safe.lower().endswith(".safetensors")


def test_repo_paths_keep_their_folders_but_never_climb():
    assert safe_relative_path("transformer/config.json", (".json",)) == "transformer/config.json"
    for bad in ("../x.json", "a/../../x.json", "/abs/x.json", "a/.git/x.json"):
        with pytest.raises(UnsafeFile):
            safe_relative_path(bad, (".json",))


def test_content_disposition_names_are_parsed_then_sanitised():
    raw = filename_from_content_disposition("attachment; filename*=UTF-8''..%2F..%2Fm%C3%BCde.safetensors")
    assert raw == "../../müde.safetensors" and safe_filename(raw) == "müde.safetensors"
    assert filename_from_content_disposition('attachment; filename="plain.gguf"') == "plain.gguf"
    assert filename_from_content_disposition(None) is None


def test_weights_are_checked_by_their_bytes(tmp_path):
    good = make_safetensors({"a": [4, 4]}, metadata={"format": "pt"})
    path = tmp_path / "w.safetensors"
    path.write_bytes(good)
    assert set(validate_weights(path)) == {"a", "__metadata__"}
    for data, message in [
        (good[:-3], "truncated or padded"), (good + b"\0", "truncated or padded"),
        (b"\x80\x04\x95" + b"\0" * 100, "pickle"), (b"PK\x03\x04" + b"\0" * 100, "zip"),
        ((10**9).to_bytes(8, "little") + b"{}", "not a valid safetensors"), (b"\x02\0\0\0\0\0\0\0[]", "not JSON"),
        (b"\x04", "only 1 bytes"),
    ]:
        path.write_bytes(data)
        with pytest.raises(UnsafeFile, match=message):
            validate_weights(path)
    header = json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(UnsafeFile, match="malformed"):
        validate_weights(path)
    gguf = tmp_path / "w.gguf"
    gguf.write_bytes(b"GGUF\x03\0\0\0")
    assert validate_weights(gguf) == {}
    gguf.write_bytes(b"\x80\x04pickle")
    with pytest.raises(UnsafeFile, match="pickle"):
        validate_weights(gguf)


def test_tokens_are_private_redacted_and_only_reported_as_set(tmp_path, caplog):
    env_token, ui_token = "civitai-from-env-0001", "hf_" + "Q" * 30
    store = TokenStore(tmp_path / "tokens.json", {"hf": None, "civitai": env_token})
    assert store.status("hf") == "not set" and store.status("civitai") == "set (from environment)"
    assert store.get("civitai") == env_token
    store.set("hf", ui_token)
    assert stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode) == 0o600
    assert store.status("hf") == "set (saved)" and store.get("hf") == ui_token
    assert TokenStore(tmp_path / "tokens.json", {}).get("hf") == ui_token  # survives a restart
    with caplog.at_level(logging.INFO):
        logging.getLogger("x").info("headers %s and %s", {"Authorization": f"Bearer {ui_token}"}, env_token)
    assert ui_token not in redact(caplog.text) and env_token not in redact(caplog.text)
    with pytest.raises(ValueError, match="does not look like"):
        store.set("civitai", "has space in it")
    store.set("hf", "")
    assert store.status("hf") == "not set" and not list(tmp_path.glob(".tmp-*"))
