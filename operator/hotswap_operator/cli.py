"""``hotswap-operator``: ``kopf run -m hotswap_operator.handlers`` with kopf's own flags passed through.

    hotswap-operator --standalone --all-namespaces --liveness=http://0.0.0.0:8080/healthz
    hotswap-operator --standalone --namespace=rerankers --verbose

It calls kopf's click command in-process (the same code path as the ``kopf run`` executable), so
every ``kopf run`` option works. The operator's own settings are ``HOTSWAP_OPERATOR_*`` variables
(``config.py``): ``--help`` lists them with their defaults before kopf's options, and a bad value
stops the process with status 2 before kopf starts, naming the variable.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .config import Config, ConfigError, variables_help

HANDLERS = "hotswap_operator.handlers"


def kopf_args(argv: Sequence[str]) -> list[str]:
    return ["run", "-m", HANDLERS, *argv]


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
    from kopf.cli import main as kopf_main

    kopf_main(args=kopf_args(args), prog_name="hotswap-operator")
    return None


if __name__ == "__main__":
    sys.exit(main())
