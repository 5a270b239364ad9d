"""``hotswap-operator``: ``kopf run -m hotswap_operator.handlers`` with kopf's own flags passed through.

    hotswap-operator --standalone --all-namespaces --liveness=http://0.0.0.0:8080/healthz
    hotswap-operator --standalone --namespace=rerankers --verbose

It calls kopf's click command in-process (the same code path as the ``kopf run`` executable), so
every ``kopf run`` option works and the operator's settings come from ``HOTSWAP_OPERATOR_*``
variables (see ``config.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

HANDLERS = "hotswap_operator.handlers"


def kopf_args(argv: Sequence[str]) -> list[str]:
    return ["run", "-m", HANDLERS, *argv]


def main(argv: Sequence[str] | None = None) -> None:
    from kopf.cli import main as kopf_main

    args = list(sys.argv[1:] if argv is None else argv)
    kopf_main(args=kopf_args(args), prog_name="hotswap-operator")


if __name__ == "__main__":
    main()
