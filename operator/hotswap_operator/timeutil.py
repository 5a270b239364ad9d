"""RFC 3339 timestamps as status stores them (UTC, ``Z``, microseconds)."""

from __future__ import annotations

import datetime

UTC = datetime.UTC


def now() -> datetime.datetime:
    return datetime.datetime.now(tz=UTC)


def iso(moment: datetime.datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def seconds_between(earlier: str | None, later: datetime.datetime) -> float:
    """Seconds from ``earlier`` (a stored timestamp) to ``later``; 0 when unknown."""
    start = parse(earlier)
    return 0.0 if start is None else (later - start).total_seconds()
