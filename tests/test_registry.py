"""The workflow registry: a workflow registered once gets the submit path, a tab and the History refill."""

from dataclasses import dataclass

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from diffbox.base_models import BASE_MODELS
from diffbox.engine.runner import JobResult
from diffbox.params import InvalidParams, Param, ParamSpec
from diffbox.store import DONE
from diffbox.workflows.images import load_image
from diffbox.workflows.outputs import write_png
from diffbox.workflows.registry import WORKFLOWS
from diffbox.workflows.workflow import Input, Output, Resolved, Workflow

SPEC = ParamSpec("negative", (Param("strength", "float", 1.0, "How far towards the negative.", minimum=0.0,
                                    maximum=1.0),))


@dataclass(frozen=True)
class NegativeInput:
    params: dict
    image: Image.Image


def prepare(values, *, spec, image=None):
    if image is None:
        raise InvalidParams({"image": "an image is needed"})
    return NegativeInput(spec.validate(values), load_image(image, "image"))


def run(ctx, pipe, job, model_name, loras, *, extra_metadata):
    pixels = np.asarray(job.image.convert("RGB"), dtype=np.float32)
    out = pixels + job.params["strength"] * (255 - 2 * pixels)
    metadata = {"workflow": "negative", "params": job.params, "pipe": repr(pipe), **extra_metadata}
    path = write_png(Image.fromarray(np.rint(out).astype(np.uint8)), ctx.outdir / "negative.png", metadata)
    return JobResult([str(path)], metadata)


NEGATIVE = Workflow(name="negative", title="Negative", spec=SPEC, inputs=(Input("image", "image", "Picture"),),
                    outputs=(Output("picture", "image", "Negative"),), prepare=prepare, run=run,
                    resolve=lambda services, workflow, job: Resolved(""), first_run=False)


@pytest.fixture
def registered(services, monkeypatch):
    monkeypatch.setitem(WORKFLOWS, "negative", NEGATIVE)
    monkeypatch.setitem(services.specs, "negative", SPEC)
    return services


def test_a_registered_workflow_runs_through_the_one_submit(registered, tmp_path):
    picture = tmp_path / "in.png"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5).save(picture)
    job = registered.submit("negative", {"strength": 1.0}, {"image": str(picture)})
    outcome = job.wait(60)
    assert outcome.status == DONE, outcome.error
    out = np.asarray(Image.open(outcome.result.outputs[0]))
    assert np.array_equal(out, 255 - np.asarray(Image.open(picture)))
    assert outcome.result.metadata["pipe"] == "None"  # no pipeline_classes: the workflow loads its own model
    assert registered.history.get(job.id)["params"] == {"strength": 1.0}  # no "model": its spec has none
    with pytest.raises(InvalidParams) as refused:
        registered.submit("negative", {"strength": 2.0}, {"image": str(picture)})
    assert "strength" in refused.value.errors


def test_a_registered_workflow_gets_the_generic_tab(registered):
    from diffbox.ui.workflow_tab import build_workflow_tab

    with gr.Blocks() as blocks:
        tab = build_workflow_tab(registered, NEGATIVE)
    ids = {block.elem_id for block in blocks.blocks.values()}
    assert {"negative-image", "negative-picture", "negative-generate", "negative-stop", "negative-status"} <= ids
    assert tab.fill_outputs == [tab.fields["strength"]] and tab.refresh_outputs == []
    assert tab.from_record({"params": {"strength": 0.25, "unknown": 1}}) == [0.25]
    names = {fn.api_name for fn in blocks.fns.values()}
    assert {"ui_negative", "ui_negative_stop", "ui_negative_settings_file", "ui_negative_image_check"} <= names


def test_every_workflow_is_registered_once_with_its_spec_and_known_base_model():
    for name, workflow in WORKFLOWS.items():
        assert workflow.spec.workflow == name
        assert workflow.base_model in ("", *BASE_MODELS), name
        assert workflow.uses_pipeline == bool(workflow.base_model), name
        assert all(put.name not in workflow.spec for put in workflow.inputs), name  # files are not params


def test_the_base_model_vocabulary_is_the_hub_clients_and_the_library_s():
    from diffbox.hub import civitai, huggingface, library

    assert tuple(huggingface.BASE_MODEL_REPOS) == tuple(civitai.BASE_MODEL_STRINGS) == BASE_MODELS
    assert library.BASE_MODELS is BASE_MODELS


def test_every_tab_re_reads_its_model_pickers_on_page_load_one_update_per_picker(services):
    """Gradio takes a list returned for ONE output as its value: Upscale's only picker once got [update]."""
    from diffbox.ui.app import build_app

    app = build_app(services)
    loads = {fn.api_name: fn for fn in app.fns.values() if str(fn.api_name).startswith("ui_refresh_")}
    assert {"ui_refresh_i2v_models", "ui_refresh_upscale_models"} <= set(loads)
    for name, fn in loads.items():
        updates = fn.fn()
        if len(fn.outputs) == 1:
            assert isinstance(updates, gr.Dropdown), (name, updates)
        else:
            assert len(updates) == len(fn.outputs) and all(isinstance(u, gr.Dropdown) for u in updates), name
    upscale = loads["ui_refresh_upscale_models"].fn()
    assert [value for _, value in upscale.choices] == [m.name for m in services.models("upscale")]
