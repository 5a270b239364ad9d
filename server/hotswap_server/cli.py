"""``hotswap-server``: parse settings, configure logging, serve."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from hotswap_contract import logs, tracing

from .settings import SettingsError, parse_settings


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
    except SettingsError as e:
        print(f"hotswap-server: {e}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    tracing.setup("hotswap-server")
    from .app import serve  # torch is imported only once the settings are known to be good

    try:
        asyncio.run(serve(settings))
    except RuntimeError as e:  # e.g. --device cuda without a GPU
        print(f"hotswap-server: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
