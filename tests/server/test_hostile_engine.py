"""A request that cannot be scored never poisons its batch: the engine reruns a failed batch per request.

The data plane cleans lone surrogates before they reach the engine; here they are handed to the
engine directly (as an input the tokenizer refuses), batched with innocent requests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hotswap_server.errors import BackendError, TokenizerError

from .expected import reference_scores

QUERY = "what is a reranker?"
DOCS = ["A reranker scores query-document pairs.", "Bananas are yellow.", "Cross-encoders read both."]
POISON = ["fine document", "\ud800 the tokenizer refuses this"]


async def test_a_poisoned_request_fails_alone(make_clients: Any, testmodels_dir: Path) -> None:
    _, _, state = await make_clients(max_batch_size=64)
    (want,) = reference_scores(testmodels_dir / "tiny-xlmr-v1", [(QUERY, DOCS)])
    engine = state.engine
    # Queued in one tick: the first batch holds every request, the poisoned one among them.
    results = await asyncio.gather(
        *[engine.score(QUERY, DOCS) for _ in range(4)],
        engine.score(QUERY, POISON),
        *[engine.score(QUERY, DOCS) for _ in range(4)],
        return_exceptions=True,
    )
    poisoned = results.pop(4)
    assert isinstance(poisoned, TokenizerError) and poisoned.status == 422
    for scored in results:
        assert not isinstance(scored, BaseException), scored
        np.testing.assert_allclose(scored.raw, want, atol=1e-3)
    assert engine.waiting_pairs == 0 and engine.active is not None and engine.active.pinned == 0
    # The engine goes on serving.
    after = await engine.score(QUERY, DOCS)
    np.testing.assert_allclose(after.raw, want, atol=1e-3)


async def test_a_poisoned_request_alone_gets_its_own_error(make_clients: Any) -> None:
    _, _, state = await make_clients()
    with pytest.raises((TokenizerError, BackendError)):
        await state.engine.score(QUERY, POISON)
    assert (await state.engine.score(QUERY, DOCS)).raw.shape == (3,)


async def test_every_request_failing_is_a_backend_error(make_clients: Any, monkeypatch: Any) -> None:
    """When every request fails alone too, the model or the device is at fault: 500 Backend for each."""
    _, _, state = await make_clients(max_batch_size=64)
    slot = state.engine.active
    assert slot is not None

    class Broken:
        def score(self, queries: list[str], docs: list[str]) -> Any:
            raise RuntimeError("device lost")

    monkeypatch.setattr(slot, "runner", Broken())
    results = await asyncio.gather(
        *[state.engine.score(QUERY, DOCS) for _ in range(3)], return_exceptions=True
    )
    assert all(isinstance(r, BackendError) and r.status == 500 for r in results), results
    assert state.engine.waiting_pairs == 0 and slot.pinned == 0


async def test_a_rust_panic_fails_its_request_not_the_engine(make_clients: Any, monkeypatch: Any) -> None:
    """Tokenizer panics are BaseExceptions: they fail the request that caused them, nothing else."""
    _, _, state = await make_clients(max_batch_size=64)
    slot = state.engine.active
    assert slot is not None
    real = slot.runner

    class PanicException(BaseException):  # what pyo3 raises for a Rust panic
        pass

    class Panicky:
        def score(self, queries: list[str], docs: list[str]) -> Any:
            if any("panic" in d for d in docs):
                raise PanicException("called `Option::unwrap()` on a `None` value")
            return real.score(queries, docs)

    monkeypatch.setattr(slot, "runner", Panicky())
    results = await asyncio.gather(
        state.engine.score(QUERY, DOCS),
        state.engine.score(QUERY, ["panic here"]),
        state.engine.score(QUERY, DOCS),
        return_exceptions=True,
    )
    assert isinstance(results[1], TokenizerError)
    assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
