import json
import logging

import pytest

from diffbox.logs import REDACTED, redact, register_secrets, setup_logging


@pytest.mark.parametrize("text,secret", [
    ("token is hf_abcdefghijklmnopqrstuvwxyz0123", "hf_abcdefghijklmnopqrstuvwxyz0123"),
    ("GET https://civitai.com/api/download/models/1?token=0123456789abcdef&type=Model", "0123456789abcdef"),
    ("headers {'Authorization': 'Bearer sk-live-abcdefgh12345'}", "sk-live-abcdefgh12345"),
    ('{"civitai_token": "deadbeefcafe1234"}', "deadbeefcafe1234"),
    ("url?api_key=zzz-secret-zzz", "zzz-secret-zzz"),
])
def test_known_token_shapes_are_redacted(text, secret):
    cleaned = redact(text)
    assert secret not in cleaned and REDACTED in cleaned


def test_registered_values_are_redacted_anywhere():
    register_secrets(["plain-password-42", None, ""])
    assert redact("login with plain-password-42 ok") == f"login with {REDACTED} ok"
    assert redact("nothing to hide here") == "nothing to hide here"


def test_log_file_never_holds_a_secret_even_in_arguments_and_tracebacks(tmp_path):
    log_file = tmp_path / "logs" / "diffbox.log"
    setup_logging(log_file, secrets=["my-civitai-key-0000"])
    log = logging.getLogger("diffbox.test")
    log.info("downloading with %s", "my-civitai-key-0000")
    try:
        raise RuntimeError("401 for https://x/?token=hf_" + "q" * 30)
    except RuntimeError:
        log.exception("download failed")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = log_file.read_text()
    assert "my-civitai-key-0000" not in text and "hf_qqqq" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["message"] == f"downloading with {REDACTED}"
    assert "RuntimeError" in lines[1]["traceback"]
    setup_logging(None)  # idempotent: our handlers are replaced, not stacked
    assert sum(1 for h in logging.getLogger().handlers if getattr(h, "_diffbox_handler", False)) == 1
