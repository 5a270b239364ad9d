"""``hotswap-operator``: ``kopf run -m hotswap_operator.handlers`` with kopf's own flags passed through.

    hotswap-operator --standalone --all-namespaces --liveness=http://0.0.0.0:8080/healthz
    hotswap-operator --standalone --namespace=rerankers --verbose

It calls kopf's click command in-process (the same code path as the ``kopf run`` executable), so
every ``kopf run`` option works. The operator's own settings are ``HOTSWAP_OPERATOR_*`` variables
(``config.py``): ``--help`` lists them with their defaults before kopf's options, and a bad value
stops the process with status 2 before kopf starts, naming the variable.

With ``--peering=NAME`` (several replicas) and no ``--priority``, each replica gets its own priority,
a stable hash of its pod name (``POD_NAME``; ``peering.py``): kopf pauses peers of equal priority.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from hotswap_contract import tracing

from . import peering
from .config import Config, ConfigError, variables_help

HANDLERS = "hotswap_operator.handlers"


def kopf_args(argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """``kopf run`` of the handlers with ``argv``, plus a per-pod ``--priority`` when peering."""
    return ["run", "-m", HANDLERS, *peering.with_priority(argv, env)]


def main(argv: Sequence[str] | None = None) -> int | None:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--help" in args or "-h" in args:
        print(variables_help() + "\n")
    else:
        try:
            Config.from_env()
        except ConfigError as exc:
            print(f"hotswap-operator: {exc}", file=sys.stderr)
            return 2
    tracing.setup("hotswap-operator")
    from kopf.cli import main as kopf_main

    argv = kopf_args(args)
    peering.WATCH = peering.parse_watch(argv)  # the startup handler creates the peering objects
    kopf_main(args=argv, prog_name="hotswap-operator")
    return None


if __name__ == "__main__":
    sys.exit(main())
