"""The workflow registry: the list of workflows, in tab order. services (submit), the API, the generic
tab, History's "use these settings", first-run and demo all loop over `WORKFLOWS`; adding a workflow is
its module (exporting `WORKFLOW`, see diffbox/workflows/workflow.py) plus its line here."""

from __future__ import annotations

from diffbox.workflows.i2v import WORKFLOW as I2V
from diffbox.workflows.interpolate import WORKFLOW as INTERPOLATE
from diffbox.workflows.qwen_edit import WORKFLOW as QWEN_EDIT
from diffbox.workflows.svi import WORKFLOW as SVI
from diffbox.workflows.upscale import WORKFLOW as UPSCALE
from diffbox.workflows.workflow import Workflow

WORKFLOWS: dict[str, Workflow] = {w.name: w for w in (
    I2V,
    SVI,
    QWEN_EDIT,
    UPSCALE,
    INTERPOLATE,
)}


def get(name: str) -> Workflow:
    try:
        return WORKFLOWS[name]
    except KeyError:
        raise KeyError(f"no workflow {name!r}; known: {', '.join(WORKFLOWS)}") from None
