"""diffbox: run `python app.py --help` for the flags (each has an environment variable too)."""

from __future__ import annotations

import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from diffbox.settings import SettingsError, load_settings, prepare_home

    settings = load_settings(argv)  # argparse exits 2 with usage on an unknown flag
    try:
        prepare_home(settings)
    except SettingsError as exc:
        print(f"diffbox: {exc}", file=sys.stderr)
        return 2

    from diffbox.logs import setup_logging
    setup_logging(settings.log_file, secrets=settings.secrets())
    log = logging.getLogger("diffbox")
    log.info("home %s%s", settings.home, " (demo mode)" if settings.demo else "")

    from diffbox.services import Services
    from diffbox.ui.app import CSS, build_app

    services = Services.start(settings)
    if settings.config:  # a bad or unreachable config is logged; the app starts anyway
        from diffbox.portable import import_at_start
        import_at_start(services, settings.config)
    from diffbox.sharing import login_note, offline_note, resolve_auth
    auth, generated_password = resolve_auth(settings)
    if generated_password:
        print(login_note(generated_password), flush=True)  # stdout only, once: never the log file
    if settings.demo:  # tiny models only: see diffbox.demo.shrink_qwen_condition_area
        from diffbox.demo import shrink_qwen_condition_area
        shrink_qwen_condition_area()
    demo = build_app(services)
    fastapi_app, local_url, share_url = demo.launch(
        server_name=settings.host, server_port=settings.port, share=settings.share,
        auth=auth, prevent_thread_lock=True, allowed_paths=[str(settings.home)],
        css=CSS, show_error=False, quiet=True,
    )
    fastapi_app.add_api_route("/health", services.health, methods=["GET"])
    log.info("serving on %s%s", local_url, f" and {share_url}" if share_url else "")
    if settings.share and not share_url:
        log.warning(offline_note(local_url))
    print(f"diffbox ready: {local_url}", flush=True)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
