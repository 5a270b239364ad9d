"""``hotswap-agent``: parse settings, set up logging, serve until SIGTERM."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from aiohttp import web
from hotswap_contract import logs, tracing

from hotswap_agent.settings import SettingsError, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except SettingsError as exc:
        print(f"hotswap-agent: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    tracing.setup("hotswap-agent")
    from hotswap_agent.app import create_app  # after logging, so import-time logs are formatted

    log = logging.getLogger("hotswap_agent")
    log.info(
        "hotswap-agent on %s:%d, models %s, server %s, admin %s, allow %s",
        settings.host,
        settings.port,
        settings.models_root,
        settings.server_url,
        settings.server_admin_url,
        ", ".join(settings.allow) or "-",
    )
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        shutdown_timeout=10,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
