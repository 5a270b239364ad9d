"""Where the generated test models live: the same content-keyed cache the test suite uses."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def testmodels_dir() -> Path:
    """``.cache/testmodels-<hash of the generator>`` (or under ``HOTSWAP_TEST_CACHE``), as
    ``tests/conftest.py`` names it: models built once are reused by the tests, the demo and e2e,
    and rebuilt when ``hotswap_server/testmodels.py`` changes."""
    import hotswap_server.testmodels as testmodels

    cache = Path(os.environ.get("HOTSWAP_TEST_CACHE", REPO / ".cache"))
    key = hashlib.sha256(Path(testmodels.__file__).read_bytes()).hexdigest()[:12]
    return cache / f"testmodels-{key}"
