import os
from pathlib import Path

import pytest

from diffbox import settings as settings_module
from diffbox.settings import SettingsError, load_settings, prepare_home, resolve_home


def test_flags_beat_env_which_beat_defaults(tmp_path):
    env = {"DIFFBOX_HOME": str(tmp_path / "env-home"), "DIFFBOX_PORT": "9000", "DIFFBOX_AUTH": "a:b",
           "HF_TOKEN": "hf_secret", "CIVITAI_TOKEN": "civ", "DIFFBOX_CONFIG": "/x.json"}
    s = load_settings(["--home", str(tmp_path / "flag-home"), "--port", "7000", "--auth", "me:pw"], env)
    assert s.home == tmp_path / "flag-home" and s.port == 7000 and s.auth == ("me", "pw")
    s = load_settings([], env)
    assert s.home == tmp_path / "env-home" and s.port == 9000 and s.auth == ("a", "b")
    assert s.hf_token == "hf_secret" and s.civitai_token == "civ" and s.config == "/x.json"
    assert "hf_secret" not in repr(s) and "'b'" not in repr(s)
    assert set(s.secrets()) == {"hf_secret", "civ", "b"}


def test_home_falls_back_to_workspace_then_data(tmp_path, monkeypatch):
    volume = tmp_path / "workspace"
    monkeypatch.setattr(settings_module, "RUNPOD_VOLUME", volume)
    assert resolve_home(None, {}) == (Path("data").absolute(), "default ./data")
    volume.mkdir()
    assert resolve_home(None, {})[0] == volume / "diffbox"
    volume.chmod(0o500)
    try:
        if not os.access(volume, os.W_OK):  # root can write anyway; the rule is still exercised above
            assert resolve_home(None, {})[0] == Path("data").absolute()
    finally:
        volume.chmod(0o700)


def test_prepare_home_creates_layout_and_points_hf_cache_inside(tmp_path):
    s = load_settings(["--home", str(tmp_path / "h")], {})
    env: dict[str, str] = {}
    prepare_home(s, env)
    for sub in ("models", "outputs", "db", "cache"):
        assert (tmp_path / "h" / sub).is_dir()
    assert env["HF_HOME"] == str(tmp_path / "h" / "cache" / "huggingface")
    env = {"HF_HOME": "/my/own/cache"}
    prepare_home(s, env)
    assert env["HF_HOME"] == "/my/own/cache"  # a user's own cache is kept


def test_unusable_home_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    s = load_settings(["--home", str(blocker / "home")], {})
    with pytest.raises(SettingsError, match="home folder .* is not usable"):
        prepare_home(s, {})


@pytest.mark.parametrize("argv,env,field", [
    (["--auth", "nopassword"], {}, "--auth"),
    ([], {"DIFFBOX_AUTH": ":pw"}, "DIFFBOX_AUTH"),
    ([], {"DIFFBOX_PORT": "http"}, "DIFFBOX_PORT"),
    (["--port", "70000"], {}, "--port"),
    (["--port", "abc"], {}, "--port"),
])
def test_bad_values_name_their_source(argv, env, field):
    with pytest.raises(SettingsError, match=field):
        load_settings(argv, env)


def test_unknown_flag_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as caught:
        load_settings(["--turbo"], {})
    assert caught.value.code == 2
    assert "unrecognized arguments: --turbo" in capsys.readouterr().err


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("pod.example", False),
])
def test_only_this_machines_loopback_counts_as_private(host, loopback):
    assert load_settings(["--host", host], {}).loopback_only is loopback


def test_upload_limit_ttl_and_no_auth_come_from_flags_or_env():
    s = load_settings([], {})
    assert (s.no_auth, s.max_upload_mb, s.upload_ttl_hours) == (False, 100.0, 24.0)
    s = load_settings([], {"DIFFBOX_NO_AUTH": "1", "DIFFBOX_MAX_UPLOAD_MB": "5", "DIFFBOX_UPLOAD_TTL_HOURS": "0.5"})
    assert (s.no_auth, s.max_upload_mb, s.upload_ttl_hours) == (True, 5.0, 0.5)
    s = load_settings(["--max-upload-mb", "7", "--upload-ttl-hours", "2"], {"DIFFBOX_MAX_UPLOAD_MB": "5"})
    assert (s.max_upload_mb, s.upload_ttl_hours) == (7.0, 2.0)


@pytest.mark.parametrize("argv,env,field", [
    (["--max-upload-mb", "0"], {}, "--max-upload-mb"),
    ([], {"DIFFBOX_UPLOAD_TTL_HOURS": "soon"}, "DIFFBOX_UPLOAD_TTL_HOURS"),
    ([], {"DIFFBOX_AUTH": "diffbox:{{ RUNPOD_SECRET_diffbox_password }}"}, "unfilled RunPod secret"),
    (["--no-auth"], {"DIFFBOX_AUTH": "a:b"}, "contradict"),
])
def test_more_bad_values_name_their_source(argv, env, field):
    with pytest.raises(SettingsError, match=field):
        load_settings(argv, env)
