"""build_app(): the one Blocks app, a tab per workflow, plus history and the API endpoints;
launch(): what it serves, to whom, and how much it accepts."""

from __future__ import annotations

import os
from functools import partial
from typing import Callable

import gradio as gr
from fastapi import Request
from gradio.utils import get_upload_folder, is_in_or_equal
from starlette.middleware import Middleware

from diffbox import __version__
from diffbox.services import Services
from diffbox.settings import Settings
from diffbox.ui.api import register_api
from diffbox.ui.chain import output_kind, taking_input
from diffbox.ui.closed_routes import ClosedRoutes
from diffbox.ui.config_api import register_config_api
from diffbox.ui.config_tab import build_config_tab
from diffbox.ui.event_cancel import EventCancel
from diffbox.ui.first_run import build_first_run
from diffbox.ui.handover import OneShotDownloads
from diffbox.ui.history_tab import build_history_tab
from diffbox.ui.hub_api import register_hub_api
from diffbox.ui.login_throttle import LoginThrottle
from diffbox.ui.models_tab import build_models_tab
from diffbox.ui.origins import OriginPolicy, guarded_lifespan, is_guarded
from diffbox.ui.prompt_picker import all_pickers, build_prompt_library_panel, register_prompt_library_api
from diffbox.ui.qwen_tab import build_qwen_tab
from diffbox.ui.svi_tab import build_svi_tab
from diffbox.ui.workflow_tab import build_workflow_tab
from diffbox.workflows.registry import WORKFLOWS

# Workflows whose tab has widgets of its own (streaming player, mask editor); the others get the generic tab.
TAB_BUILDERS = {"svi": build_svi_tab, "qwen_edit": build_qwen_tab}

CSS = """
#diffbox-header {margin-bottom: 0.25rem}
@media (max-width: 720px) { .gradio-container {padding: 0.25rem !important} }
"""

def header(services: Services) -> str:
    """Version, device and mode; never the home path (the page may be public)."""
    health = services.health()
    mode = " · **demo mode**: tiny random-weight models, outputs are noise by design" if services.settings.demo else ""
    return f"## diffbox {__version__}\nDevice: `{health['device']}`{mode}"


def upload_cleaning(settings: Settings) -> tuple[int, int]:
    """Gradio's delete_cache (every `frequency` s, files older than `age` s): uploads and Gradio's copies
    of outputs it made for this app; outputs/ itself is never touched."""
    age = max(1, int(settings.upload_ttl_hours * 3600))
    return max(1, min(3600, age // 4)), age


def private_paths(settings: Settings) -> list[str]:
    """Never served, even if allowed_paths were widened by mistake; Gradio's own upload folder excepted
    (a user may point GRADIO_TEMP_DIR into the home's cache/)."""
    paths = [settings.home / "tokens.json", settings.db_dir, settings.log_file.parent, settings.cache_dir,
             settings.models_dir]
    return [str(p) for p in paths if not is_in_or_equal(get_upload_folder(), p)]


def origin_policy(settings: Settings) -> OriginPolicy:
    """Who may call the app from a browser page besides its own address (diffbox.ui.origins)."""
    policy = OriginPolicy(loopback_only=settings.loopback_only)
    for origin in (*settings.allowed_origins, os.environ.get("GRADIO_ROOT_PATH")):
        policy.allow(origin)
    return policy


def launch(app: gr.Blocks, settings: Settings, auth: tuple[str, str] | None, auth_message: str | None = None):
    """Serves outputs/ and Gradio's upload folder only: tokens.json, db/, logs/, cache/ and models/ are
    never reachable through Gradio's file routes. Requests from other sites' pages are refused
    (diffbox.ui.origins); Gradio's run history, which could use the server's HF_TOKEN without a login,
    is off and its routes closed with the others diffbox does not use (diffbox.ui.closed_routes).
    Returns launch()'s (fastapi app, local url, share url)."""
    # uvicorn would take the client address from X-Forwarded-For of any loopback peer — anyone on the
    # pod could then pose as a fresh client to the login throttle, which reads that header itself.
    os.environ.setdefault("FORWARDED_ALLOW_IPS", "")
    policy = origin_policy(settings)
    fastapi_app, local_url, share_url = app.launch(
        server_name=settings.host, server_port=settings.port, share=settings.share, auth=auth,
        auth_message=auth_message if auth else None,
        prevent_thread_lock=True, allowed_paths=[str(settings.outputs_dir)], blocked_paths=private_paths(settings),
        max_file_size=int(settings.max_upload_mb * 1_000_000), run_history=False,
        app_kwargs={"middleware": [Middleware(ClosedRoutes), Middleware(LoginThrottle), Middleware(OneShotDownloads),
                                   Middleware(EventCancel)],
                    "lifespan": guarded_lifespan(policy)},
        ssr_mode=False,  # Node in front of Python would be one more server answering file requests
        css=CSS, show_error=False, quiet=True,
    )
    if not is_guarded(fastapi_app):
        app.close()
        raise RuntimeError("the origin guard is not in place; refusing to serve")
    policy.allow(share_url)  # the share tunnel keeps the link's own Host
    return fastapi_app, local_url, share_url


def _updates_for(updates: Callable[[], list], outputs: int):
    """Gradio takes a list returned for ONE output as that output's value: a tab with a single picker (Upscale's
    model) would get a list holding an update instead of the update, and never see a new model."""
    values = updates()
    return values[0] if outputs == 1 else values


def add_health_route(fastapi_app, services: Services) -> None:
    """GET /health answers anyone (load balancers, scripts); the job list, whose ids are output folder
    names, only a caller who may read the history: no login is required, or the request carries one."""

    def health(request: Request) -> dict:
        return services.health(jobs=logged_in(fastapi_app, request))

    fastapi_app.add_api_route("/health", health, methods=["GET"])


def logged_in(fastapi_app, request: Request) -> bool:
    """Gradio's own test (its /gradio_api/user route, which a plain route cannot depend on): the login
    cookie, secure or not, names a session Gradio handed out."""
    if fastapi_app.auth is None and fastapi_app.auth_dependency is None:
        return True
    cookie = fastapi_app.cookie_id
    token = request.cookies.get(f"access-token-{cookie}") or request.cookies.get(f"access-token-unsecure-{cookie}")
    return fastapi_app.tokens.get(token) is not None


def build_workflow_tabs(services: Services) -> dict:
    """A tab per registered workflow, in registry order: its own builder where it has special widgets."""
    built = {}
    for name, workflow in WORKFLOWS.items():
        with gr.Tab(workflow.title, id=name):
            special = TAB_BUILDERS.get(name)
            built[name] = special(services) if special else build_workflow_tab(services, workflow)
    return built


def send_output(button: gr.Button, main_output: gr.State, tab, tabs: gr.Tabs) -> None:
    """History's "Send to <workflow>": the job's main output (a file under outputs/, which the upload
    guard lets through for chaining) goes into the tab's input that takes it, and that tab opens."""
    workflow = tab.workflow
    inputs = {put.name: tab.parts[put.name] for put in workflow.inputs}

    def send(path: str | None):
        put = taking_input(workflow, output_kind(path)) if path else None
        if put is None:
            gr.Warning(f"{workflow.title} cannot start from that job's output.")
            return {}
        return {inputs[put.name]: path, tabs: gr.Tabs(selected=workflow.name)}

    button.click(send, main_output, [*inputs.values(), tabs], api_name=f"ui_history_send_{workflow.name}",
                 api_visibility="private", queue=True)


def build_app(services: Services) -> gr.Blocks:
    with gr.Blocks(title="diffbox", delete_cache=upload_cleaning(services.settings)) as app:
        gr.Markdown(header(services), elem_id="diffbox-header")
        build_first_run(services)
        with gr.Tabs() as tabs:
            workflow_tabs = build_workflow_tabs(services)
            with gr.Tab("Models", id="models"):
                build_models_tab(services)
            with gr.Tab("History", id="history"):
                history = build_history_tab(services)
            with build_config_tab(services):  # the panel for your own prompt snippets, at the tab's foot
                build_prompt_library_panel(services, all_pickers(workflow_tabs.values()))
        register_api(services)
        register_hub_api(services)
        register_config_api(services)
        register_prompt_library_api(services)
        for name, tab in workflow_tabs.items():
            # Model lists are re-read on every page load, so models copied in while running show up.
            if tab.refresh_outputs:
                app.load(partial(_updates_for, tab.refresh_choices, len(tab.refresh_outputs)), None,
                         tab.refresh_outputs, api_name=f"ui_refresh_{name}_models", api_visibility="private",
                         queue=False)

        def use_job_settings(record):
            """Refills the form of the job's workflow, component by component (the others are left alone)."""
            tab = workflow_tabs.get(record.get("workflow")) if record else None
            if tab is None:
                gr.Warning("That job's workflow has no form to refill.")
                return {}
            return {**dict(zip(tab.fill_outputs, tab.from_record(record))), tabs: gr.Tabs(selected=record["workflow"])}

        refilled = list(dict.fromkeys(c for tab in workflow_tabs.values() for c in tab.fill_outputs))
        history.use_settings.click(use_job_settings, history.selected, [*refilled, tabs], api_name="ui_use_settings",
                                   api_visibility="private", queue=False)
        for name, button in history.send.items():
            send_output(button, history.main_output, workflow_tabs[name], tabs)
    for fn in app.fns.values():
        # A component whose value is a function (a table, a status line) is re-read on page load by an event
        # Gradio adds when the Blocks close and names "lambda"…: UI plumbing, not an endpoint for scripts.
        if str(fn.api_name).startswith("lambda"):
            fn.api_visibility = "private"
    app.queue(default_concurrency_limit=1)
    return app
