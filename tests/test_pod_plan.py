"""The pod plan at real size: for every pod of 24/48/80/141 GB VRAM × 32/64/128/256 GB RAM × 100/150/300 GB
disk, what it proposes fits all three budgets, and what it cannot run is told so with numbers.

The loaded sizes the plan uses are the app's header estimates of the real configs (tests/test_real_size.py
holds them to header-only copies of the published shapes); the placements come from the cache's own
choose_placement, so these tests check the plan's arithmetic and choices, not a second model of memory.
"""

import itertools
import re

import pytest

from diffbox.engine import published
from diffbox.engine.memory import GiB
from diffbox.engine.pod_plan import APP_RAM, FINISHING, GB, QUALITY, disk_budget, place, recommend, variant_files

PODS = list(itertools.product((24, 48, 80, 141), (32, 64, 128, 256), (100, 150, 300)))


@pytest.fixture(scope="module")
def plans():
    return {pod: recommend(*pod) for pod in PODS}


@pytest.mark.parametrize("vram, ram, disk", PODS)
def test_every_proposal_fits_all_three_budgets(plans, vram, ram, disk):
    plan = plans[(vram, ram, disk)]
    answer = plan.public()
    assert set(answer) == {"files", "total_bytes", "workflows"} and set(answer["workflows"]) == {
        "i2v", "svi", "qwen_edit", "upscale", "interpolate"}
    assert answer["total_bytes"] == sum(f["bytes"] for f in answer["files"]) <= disk_budget(disk * GB) < disk * GB
    assert len({(f["id"], f["file"]) for f in answer["files"]}) == len(answer["files"])  # nothing twice
    for name, workflow in answer["workflows"].items():
        assert set(workflow) == {"fits", "placement", "weights", "vram_bytes", "ram_bytes", "why"}
        if name in FINISHING:  # upscale: the 67 MB upscaler in tiles; interpolate: ffmpeg, no download
            generates = any(answer["workflows"][w]["fits"] for w in ("i2v", "svi", "qwen_edit"))
            assert workflow["fits"] == generates
            if not generates:
                continue
            assert APP_RAM < workflow["ram_bytes"] <= ram * GiB
            assert (published.UPSCALER.path in {f["file"] for f in answer["files"]}) == (name == "upscale") \
                or name == "interpolate"
            continue
        if workflow["fits"]:
            assert 0 < workflow["vram_bytes"] <= vram * GiB and APP_RAM < workflow["ram_bytes"] <= ram * GiB
            assert workflow["placement"] in ("gpu", "model_offload", "group_offload", "sequential_offload")
            # what it runs with is downloaded
            needed = variant_files("wan" if name != "qwen_edit" else "qwen", plan.workflows[name].variant)
            assert {(f.repo, f.path) for f in needed} <= {(f["id"], f["file"]) for f in answer["files"]}
        else:
            assert workflow["placement"] == "" and re.search(r"\d+\.\d GB", workflow["why"]), workflow
    if answer["workflows"]["svi"]["fits"]:
        assert {f.path for f in published.SVI_LORAS} <= {f["file"] for f in answer["files"]}


def test_the_big_pods_run_everything_in_16_bit_and_the_small_ones_say_why(plans):
    for vram, ram in ((80, 64), (141, 128), (48, 128)):
        workflows = plans[(vram, ram, 150)].workflows
        assert all(w.fits and w.weights == "16-bit" for n, w in workflows.items() if n not in FINISHING), (vram, ram)
    assert {w.placement for n, w in plans[(141, 256, 300)].workflows.items() if n not in FINISHING} == {"gpu"}
    # 16-bit Wan (the two Comfy fp16 experts and the base) and Qwen do not fit a 100 GB volume together
    small_disk = plans[(141, 256, 100)]
    assert small_disk.total_bytes <= disk_budget(100 * GB) and all(w.fits for w in small_disk.workflows.values())
    assert any(w.weights != "16-bit" for w in small_disk.workflows.values())
    tiny = plans[(24, 32, 150)].workflows
    assert not tiny["i2v"].fits and re.fullmatch(
        r"This pod \(24\.0 GB VRAM, 32\.0 GB RAM\) is too small for i2v even with its smallest weights: GGUF Q4_K_M: "
        r"needs 3\d\.\d GB of RAM with model CPU offload \(the app's 4\.0 GB included\); the pod has 32\.0 GB",
        tiny["i2v"].why)
    assert tiny["qwen_edit"].fits and tiny["qwen_edit"].ram_bytes <= 32 * GiB


def test_ram_not_vram_decides_a_24_gb_pod(plans):
    """The same 4090: with 64 GB of RAM Wan runs from GGUF Q8_0 experts offloaded per model (16-bit experts
    would need their bf16 copies in RAM); model offload of 16-bit Qwen needs 58 GB of RAM, so it streams by
    blocks instead; with 256 GB nothing changes for Wan (the GPU holds one Q8_0 expert, not two)."""
    pod = plans[(24, 64, 300)].workflows
    assert (pod["i2v"].weights, pod["i2v"].placement) == ("GGUF Q8_0", "model_offload")
    sixteen = place("i2v", "fp16", 24 * GiB, 64 * GiB)
    assert sixteen.fits and sixteen.weights == "16-bit stored as fp8" and sixteen.quality > QUALITY["Q8_0"]


def test_too_little_disk_for_anything_is_told_with_numbers():
    plan = recommend(80, 256, 30)
    assert plan.files == () and not any(w.fits for w in plan.workflows.values())
    assert re.fullmatch(r"Not enough disk: i2v with its smallest download \(GGUF Q4_K_M\) makes 3\d\.\d GB with the "
                        r"rest of the plan; a 30 GB volume leaves 24\.4 GB for models after keeping 5\.6 GB free",
                        plan.workflows["i2v"].why)


def test_only_the_workflows_asked_for():
    plan = recommend(48, 128, 150, workflows=("qwen_edit",))
    assert set(plan.workflows) == {"qwen_edit"} and all(f.repo != published.WAN_REPO for f in plan.files)


@pytest.mark.parametrize("args, message", [
    ((0, 64, 100), "vram_gb: must be more than 0"),
    ((24, "lots", 100), "ram_gb: must be a number of GB, got 'lots'"),
    ((24, 64, float("nan")), "disk_gb: must be more than 0"),
])
def test_bad_sizes_are_named(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        recommend(*args)


# ---------------------------------------------------------------------------------------------
# /recommend, from outside
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory, demo_models):
    from gradio_client import Client

    from conftest import make_demo_home
    from test_app import app_env, start_app

    home = make_demo_home(tmp_path_factory.mktemp("plan-api"), demo_models)
    process, url, _ = start_app(home, env=app_env())
    yield Client(url, verbose=False)
    process.terminate()
    process.wait(30)


def test_recommend_answers_in_the_issues_shape(client):
    answer = client.predict(24, 64, 150, api_name="/recommend")
    assert answer == recommend(24, 64, 150).public()  # the JSON round trip keeps every field and byte
    assert answer["total_bytes"] == sum(f["bytes"] for f in answer["files"]) <= 150 * GB
    assert {f["source"] for f in answer["files"]} == {"hf"} and all(isinstance(f["bytes"], int) for f in answer["files"])
    assert answer["workflows"]["i2v"]["fits"] and answer["workflows"]["i2v"]["vram_bytes"] <= 24 * GiB


def test_recommend_names_a_bad_field_and_keeps_serving(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=r"ram_gb: must be more than 0"):
        client.predict(24, -1, 150, api_name="/recommend")
    assert not client.predict(8, 16, 20, api_name="/recommend")["workflows"]["i2v"]["fits"]
