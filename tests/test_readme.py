"""README.md is what users follow: its commands and flags must be the ones that exist."""

import re
from pathlib import Path

from diffbox.settings import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section_command(title: str) -> str:
    section = README.split(f"## {title}", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()


def test_ci_runs_the_readme_test_command():
    command = section_command("Test it")
    assert command.startswith("pip install -r requirements-dev.txt && ")
    pytest_part = command.split("&& ", 1)[1]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert f"python3 -m {pytest_part.removeprefix('python -m ')}" in ci_lines
    assert "python3 -m pip install -q -r requirements-dev.txt" in ci_lines


def test_readme_run_command_names_a_real_entry_point():
    command = section_command("Run it")
    assert command == "pip install -r requirements.txt && python app.py --demo"
    assert (ROOT / "app.py").is_file()


def test_the_cpu_torch_line_installs_the_cpu_build_and_the_pinned_version():
    """PyPI's Linux torch is the CUDA build; the CPU one comes from PyTorch's own index."""
    line = re.search(r"`pip install torch==(\S+) --index-url (\S+)`", README.split("## Run it", 1)[1])
    assert line and line.group(1) == "2.13.0" and line.group(2) == "https://download.pytorch.org/whl/cpu"


def test_every_flag_is_documented():
    flags = [a.option_strings[0] for a in build_parser()._actions if a.option_strings and a.dest != "help"]
    assert len(flags) == 11
    for flag in flags:
        assert f"`{flag}" in README, flag
    for env in ("DIFFBOX_HOME", "DIFFBOX_PORT", "DIFFBOX_AUTH", "DIFFBOX_CONFIG", "HF_TOKEN", "CIVITAI_TOKEN"):
        assert env in README, env
