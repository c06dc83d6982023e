"""The Dockerfile and runpod_template.json must agree with the app's flags, env vars and README.

No Docker engine here: the files are parsed and checked against the code they launch."""

import itertools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from diffbox.engine.pod_plan import FINISHING, GB, POD_SIZES, markdown, recommend, volume_gb_for
from diffbox.settings import build_parser, load_settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TEMPLATE = json.loads((ROOT / "runpod_template.json").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()

# The pod the template's volume is sized for: an 80 GB card (A100/H100, which RunPod rents with 117 GB of RAM or
# more), the smallest on which every workflow runs in 16-bit all on the GPU, so its set is the largest one.
TEMPLATE_POD = (80, 117)
OUTPUTS_ROOM_GB = 20  # videos and edits, the latents SVI keeps for Extend, a few LoRAs from Civitai
NO_LIMIT_GB = 100_000


def instructions(name: str) -> list[str]:
    text = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1].strip() for line in text.splitlines() if line.strip().startswith(name + " ")]


def env_vars_the_app_reads() -> set[str]:
    sources = [ROOT / "diffbox" / "settings.py", ROOT / "diffbox" / "hub" / "hub.py"]
    found = set()
    for path in sources:
        found |= set(re.findall(r"env(?:\.get\(|\[)\"([A-Z_]+)\"", path.read_text()))
    return found | {"HF_HOME"}  # read by huggingface_hub itself


def docker_cmd() -> list[str]:
    (cmd,) = instructions("CMD")
    return json.loads(cmd)


def test_dockerfile_runs_the_app_on_all_interfaces_with_real_flags():
    cmd = docker_cmd()
    assert cmd[:2] == ["python", "app.py"]
    settings = load_settings(cmd[2:], {})  # argparse exits on a flag the app does not have
    assert settings.host == "0.0.0.0" and settings.port == 7860
    assert not settings.loopback_only  # so the app demands a login unless DIFFBOX_AUTH sets one
    assert " ".join(cmd) in README  # the README shows the command the image runs


def test_dockerfile_keeps_user_data_on_the_volume_and_checks_health():
    (base,) = instructions("FROM")
    assert base.startswith("pytorch/pytorch:") and "cuda" in base
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(instructions("ENV"))))
    assert env["DIFFBOX_HOME"] == "/workspace/diffbox" and env["HF_HOME"].startswith("/workspace/")
    assert env["HF_HOME"] == env["DIFFBOX_HOME"] + "/cache/huggingface" and "`cache/huggingface`" in README
    assert env["DIFFBOX_HOME"] == next(e["value"] for e in TEMPLATE["env"] if e["key"] == "DIFFBOX_HOME")
    assert set(env) - {"HF_XET_HIGH_PERFORMANCE", "GRADIO_ANALYTICS_ENABLED", "PYTHONUNBUFFERED"} <= env_vars_the_app_reads()
    (health,) = instructions("HEALTHCHECK")
    assert f"127.0.0.1:{load_settings(docker_cmd()[2:], {}).port}/health" in health
    run = " ".join(instructions("RUN"))
    assert "ffmpeg" in run and "pip install --no-cache-dir -r requirements.txt" in run
    assert "torch" not in run.replace("pytorch", "")  # the base image's CUDA torch is kept


def test_runpod_template_matches_the_image_flags_and_env():
    for field in ("name", "imageName", "containerDiskInGb", "volumeInGb", "volumeMountPath", "ports", "env", "readme"):
        assert TEMPLATE.get(field) not in (None, ""), field
    assert TEMPLATE["volumeMountPath"] == "/workspace" and TEMPLATE["volumeInGb"] >= 100
    port = load_settings(docker_cmd()[2:], {}).port
    assert f"{port}/http" in TEMPLATE["ports"].split(",")
    assert shlex.split(TEMPLATE["dockerArgs"]) == docker_cmd()
    keys = [e["key"] for e in TEMPLATE["env"]]
    assert {"DIFFBOX_AUTH", "DIFFBOX_CONFIG", "HF_TOKEN", "CIVITAI_TOKEN"} <= set(keys)
    assert set(keys) <= env_vars_the_app_reads(), set(keys) - env_vars_the_app_reads()
    flags_table = README.split("## Flags and environment", 1)[1].split("\n## ", 1)[0]
    assert [k for k in keys if f"`{k}`" not in flags_table] == []  # README documents every one
    home = next(e["value"] for e in TEMPLATE["env"] if e["key"] == "DIFFBOX_HOME")
    assert home.startswith(TEMPLATE["volumeMountPath"] + "/")
    flags_env = {"DIFFBOX_AUTH": "--auth", "DIFFBOX_CONFIG": "--config"}
    for env, flag in flags_env.items():  # each env var the template offers is a real flag's twin
        action = next(a for a in build_parser()._actions if flag in a.option_strings)
        assert env in action.help
        assert env in TEMPLATE["readme"]
    assert "GRADIO_ROOT_PATH" in TEMPLATE["readme"] and "GRADIO_ROOT_PATH" in README


def test_runpod_volume_holds_the_default_pods_set_with_room_for_outputs():
    volume = TEMPLATE["volumeInGb"]
    wanted = recommend(*TEMPLATE_POD, NO_LIMIT_GB)  # what the pod downloads when the disk is no limit
    assert all(w.fits and (w.placement, w.weights) == ("gpu", "16-bit") for name, w in wanted.workflows.items()
               if name not in FINISHING)
    assert volume >= volume_gb_for(wanted.total_bytes) + OUTPUTS_ROOM_GB
    assert recommend(*TEMPLATE_POD, volume).files == wanted.files  # nothing traded down for lack of disk
    for vram, ram in itertools.product((24, 48, 80, 141), (32, 64, 128, 256)):  # on any other card either
        assert recommend(vram, ram, volume).files == recommend(vram, ram, NO_LIMIT_GB).files, (vram, ram)
    runpod = README.split("## RunPod", 1)[1]
    for text in (TEMPLATE["readme"], runpod):  # both say the size and the set it is for
        assert f"{volume} GB" in text and f"{wanted.total_bytes / GB:.0f} GB" in text


def test_readme_pod_sizes_table_is_the_plans_own():
    section = README.split("## Pod sizes", 1)[1].split("\n## ", 1)[0]
    assert markdown() in section
    command = "python -m diffbox.engine.pod_plan markdown"  # what README says regenerates it
    printed = subprocess.run([sys.executable, *command.split()[1:]], cwd=ROOT, capture_output=True, text=True)
    assert printed.stdout == markdown() and f"`{command}`" in section
    assert {vram for vram, _, _ in POD_SIZES} == {24, 48, 80, 141}  # the cards people rent
    rows = markdown().splitlines()[2:]
    assert len(rows) == len(POD_SIZES) and any("does not fit" in row for row in rows)


def test_runpod_template_takes_the_login_from_a_runpod_secret():
    auth = next(e["value"] for e in TEMPLATE["env"] if e["key"] == "DIFFBOX_AUTH")
    secret = re.fullmatch(r"(\w+):\{\{ RUNPOD_SECRET_(\w+) \}\}", auth)
    assert secret, auth
    for text in (TEMPLATE["readme"], README):  # both say which secret to create
        assert f"RUNPOD_SECRET_{secret.group(2)}" in text and secret.group(2) in text


def test_shipped_presets_fit_their_workflows():
    from diffbox.presets import SHIPPED_DIR, check, load_shipped
    from diffbox.services import WORKFLOW_SPECS

    files = sorted(SHIPPED_DIR.glob("*.json"))
    assert len(load_shipped(SHIPPED_DIR, WORKFLOW_SPECS)) == len(files) >= 4
    names = {(p["workflow"], p["name"]) for p in load_shipped(SHIPPED_DIR, WORKFLOW_SPECS)}
    assert ("i2v", "Lightning 4-step") in names and ("i2v", "Wan 2.2 quality 40 steps") in names
    lightning = next(p for p in load_shipped() if p["name"] == "Lightning 4-step")
    assert lightning["models"] and lightning["params"]["num_inference_steps"] == 4
    for path in files:  # each one checked against its own workflow's spec where that is registered
        preset, notes = check(json.loads(path.read_text()), WORKFLOW_SPECS)
        assert (preset["workflow"] in WORKFLOW_SPECS) == (not notes)
