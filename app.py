"""diffbox: run `python app.py --help` for the flags (each has an environment variable too)."""

from __future__ import annotations

import logging
import os
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from diffbox.settings import SettingsError, keep_private, load_settings, prepare_home

    try:
        settings = load_settings(argv)  # argparse exits 2 with usage on an unknown flag
        prepare_home(settings)
    except SettingsError as exc:
        print(f"diffbox: {exc}", file=sys.stderr)
        return 2

    from diffbox.logs import setup_logging
    setup_logging(settings.log_file, secrets=settings.secrets())
    log = logging.getLogger("diffbox")
    log.info("home %s%s", settings.home, " (demo mode)" if settings.demo else "")
    from diffbox.workflows.outputs import STREAMING_NEEDS_FFMPEG, streaming_tools_missing
    if streaming_tools_missing():
        log.warning(STREAMING_NEEDS_FFMPEG)
    # A file-size limit (ulimit -f) must fail the one write with EFBIG, which the app reports, not kill it.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    from diffbox.portable import remove_kept_exports
    if remove_kept_exports(settings.cache_dir):
        log.info("removed config exports an earlier version kept in cache/exports/ (they may hold tokens)")

    from diffbox.services import Services
    from diffbox.ui.app import add_health_route, build_app, launch

    services = Services.start(settings)
    keep_private(settings)  # the job database and the log file exist now
    if settings.config:  # a bad or unreachable config is logged; the app starts anyway
        from diffbox.portable import import_at_start
        import_at_start(services, settings.config)
    from diffbox.sharing import login_hint, login_note, no_auth_warning, offline_note, open_at, resolve_auth
    auth, generated_password = resolve_auth(settings)
    if generated_password:
        print(login_note(settings, generated_password), flush=True)  # stdout only, once: never the log file
    if warning := no_auth_warning(settings):
        print(warning, flush=True)
        log.warning(warning)
    if settings.demo:  # tiny models only: see diffbox.demo.shrink_qwen_condition_area
        from diffbox.demo import shrink_qwen_condition_area
        shrink_qwen_condition_area()
    demo = build_app(services)
    fastapi_app, local_url, share_url = launch(demo, settings, auth, login_hint(generated_password is not None))
    add_health_route(fastapi_app, services)
    address = open_at(settings, local_url) + (f" and {share_url}" if share_url else "")
    log.info("serving on %s", address)
    if settings.share and not share_url:
        log.warning(offline_note(local_url))
    print(f"diffbox ready: {address}", flush=True)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
