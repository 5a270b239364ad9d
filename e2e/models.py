"""Where the generated test models live: the same content-keyed cache the test suite uses."""

from __future__ import annotations

from pathlib import Path


def testmodels_dir() -> Path:
    """The shared test-model cache (:func:`devtools.testmodels.cache_dir`): models built once are
    reused by the tests, the demo and e2e."""
    from devtools.testmodels import cache_dir

    return cache_dir()
