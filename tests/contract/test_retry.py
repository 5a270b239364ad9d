"""The one retry helper: capped exponential delays, jitter, the deadline, which errors retry."""

from __future__ import annotations

import pytest
from hotswap_contract.retry import Backoff, retry


class Clock:
    """A fake monotonic clock that the fake sleep moves on."""

    def __init__(self) -> None:
        self.t = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        self.t += delay


def test_delays_grow_by_the_factor_and_stop_at_the_cap() -> None:
    b = Backoff(0.1, 1.0)
    assert [round(b.next(), 6) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next() == 0.1
    poll = Backoff(0.02, 0.5, factor=1.5)
    assert [round(poll.next(), 6) for _ in range(3)] == [0.02, 0.03, 0.045]
    assert Backoff(1.0, 0.25).next() == 0.25  # the cap holds from the first delay


def test_jitter_spreads_each_delay_but_not_the_progression() -> None:
    seen: list[tuple[float, float]] = []

    def uniform(lo: float, hi: float) -> float:
        seen.append((lo, hi))
        return hi  # the largest spread allowed

    b = Backoff(1.0, 4.0, jitter=0.1, uniform=uniform)
    assert [round(b.next(), 6) for _ in range(4)] == [1.1, 2.2, 4.4, 4.4]  # jitter after the cap
    assert seen == [(0.9, 1.1)] * 4
    real = Backoff(1.0, 30.0, jitter=0.1)
    assert all(0.9 * 2**i <= real.next() <= 1.1 * 2**i for i in range(4))


def test_the_deadline_refuses_a_delay_that_would_end_past_it() -> None:
    clock = Clock()
    b = Backoff(1.0, 10.0, deadline=clock.t + 2.5, clock=clock)
    assert b.allows(2.5) and not b.allows(2.6)
    assert Backoff(1.0, 10.0).allows(1e9)  # no deadline


@pytest.mark.parametrize(
    "bad", [dict(initial=0, maximum=1), dict(initial=1, maximum=0), dict(initial=1, maximum=1, jitter=1)]
)
def test_nonsense_bounds_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        Backoff(**bad)


class Busy(Exception):
    pass


class Broken(Exception):
    pass


async def test_retry_retries_transient_errors_until_the_call_succeeds() -> None:
    clock = Clock()
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise Busy()
        return "done"

    backoff = Backoff(0.1, 0.3, deadline=clock.t + 10, clock=clock)
    assert await retry(call, backoff, retry_if=lambda e: isinstance(e, Busy), sleep=clock.sleep) == "done"
    assert [round(d, 6) for d in clock.slept] == [0.1, 0.2, 0.3]


async def test_retry_raises_other_errors_at_once() -> None:
    clock = Clock()

    async def call() -> None:
        raise Broken("no")

    with pytest.raises(Broken):
        await retry(call, Backoff(0.1, 1.0), retry_if=lambda e: isinstance(e, Busy), sleep=clock.sleep)
    assert clock.slept == []


async def test_retry_respects_the_deadline_and_raises_the_last_error_or_give_up() -> None:
    clock = Clock()
    attempts: list[int] = []

    async def call() -> None:
        attempts.append(1)
        raise Busy(f"busy #{len(attempts)}")

    backoff = Backoff(0.1, 10.0, deadline=clock.t + 1.0, clock=clock)
    with pytest.raises(Busy, match="busy #4"):
        await retry(call, backoff, retry_if=lambda e: isinstance(e, Busy), sleep=clock.sleep)
    assert [round(d, 6) for d in clock.slept] == [0.1, 0.2, 0.4]  # 0.7s slept; 0.8 more would pass 1.0
    assert clock.t <= 101.0

    clock2 = Clock()
    backoff = Backoff(0.1, 10.0, deadline=clock2.t + 0.05, clock=clock2)
    with pytest.raises(TimeoutError, match="gave up: busy") as info:
        await retry(
            call,
            backoff,
            retry_if=lambda e: isinstance(e, Busy),
            give_up=lambda e: TimeoutError(f"gave up: {e}"),
            sleep=clock2.sleep,
        )
    assert info.value.__suppress_context__ and clock2.slept == []
