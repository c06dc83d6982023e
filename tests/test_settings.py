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
])
def test_bad_values_name_their_source(argv, env, field):
    with pytest.raises(SettingsError, match=field):
        load_settings(argv, env)


def test_unknown_flag_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as caught:
        load_settings(["--turbo"], {})
    assert caught.value.code == 2
    assert "unrecognized arguments: --turbo" in capsys.readouterr().err
