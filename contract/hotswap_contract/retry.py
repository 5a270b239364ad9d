"""Capped exponential backoff, optionally jittered and bounded by a deadline: the one retry helper
of the agent and the operator (stdlib only, like the rest of this package).

:class:`Backoff` yields the delays; :func:`retry` awaits a call again while a predicate says its
error is transient and the next delay still ends before the deadline, then re-raises the last error
(or the error ``give_up`` makes of it). Loops that are not "call until it works" (a reconcile loop,
a poll) use :class:`Backoff` directly: ``next()`` for the delay, ``allows(delay)`` against the
deadline, ``reset()`` after a success.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class Backoff:
    """Delays ``initial``, ``initial*factor``, ... each capped at ``maximum``.

    ``jitter`` spreads each delay uniformly by that fraction either way (0.1: 90%..110%), after the
    cap; the progression itself is not jittered. With a ``deadline`` (a ``clock()`` reading),
    :meth:`allows` says whether a delay still ends by it.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        factor: float = 2.0,
        jitter: float = 0.0,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if initial <= 0 or maximum <= 0 or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff needs initial > 0, maximum > 0, factor >= 1, 0 <= jitter < 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self.deadline = deadline
        self.clock = clock
        self.uniform = uniform
        self._base = min(initial, maximum)

    def reset(self) -> None:
        """Start over at ``initial`` (after a success)."""
        self._base = min(self.initial, self.maximum)

    def next(self) -> float:
        """The next delay (and move on)."""
        delay = self._base
        self._base = min(self._base * self.factor, self.maximum)
        if self.jitter:
            delay *= self.uniform(1 - self.jitter, 1 + self.jitter)
        return delay

    def allows(self, delay: float) -> bool:
        """Whether sleeping ``delay`` now still ends by the deadline (always, without one)."""
        return self.deadline is None or self.clock() + delay <= self.deadline


async def retry(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    retry_if: Callable[[Exception], bool],
    give_up: Callable[[Exception], BaseException] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """``await call()`` until it returns; an error ``retry_if`` accepts is retried after the next
    delay of ``backoff``. Any other error, or one whose retry would end past the deadline, is raised:
    as it is, or as ``give_up(error)`` when given."""
    while True:
        try:
            return await call()
        except Exception as exc:
            if not retry_if(exc):
                raise
            delay = backoff.next()
            if not backoff.allows(delay):
                if give_up is None:
                    raise
                raise give_up(exc) from None
        await sleep(delay)
