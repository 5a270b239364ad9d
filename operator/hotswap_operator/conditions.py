"""Status conditions, Kubernetes API conventions style.

One :func:`set_condition` that moves ``lastTransitionTime`` only when ``status`` flips, so
``kubectl wait --for=condition=Ready`` and alerting on transition times mean what they say.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from .models import Condition

READY = "Ready"
RECONCILING = "Reconciling"  # kstatus: the operator is moving pods
STALLED = "Stalled"  # kstatus: the spec is not achieved and will not be until it changes
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
TYPES = (READY, RECONCILING, STALLED, PROGRESSING, DEGRADED)

Status = Literal["True", "False", "Unknown"]


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: bool | Status,
    reason: str,
    message: str,
    *,
    now: str,
    generation: int | None = None,
) -> list[Condition]:
    """A copy of ``conditions`` with ``type_`` set; its transition time moves only on a flip."""
    value: Status = ("True" if status else "False") if isinstance(status, bool) else status
    old = get_condition(conditions, type_)
    since = old.last_transition_time if old is not None and old.status == value else now
    new = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    out = [c for c in conditions if c.type != type_]
    out.append(new)
    order = {t: i for i, t in enumerate(TYPES)}
    return sorted(out, key=lambda c: (order.get(c.type, len(order)), c.type))


def get_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    cond = get_condition(conditions, type_)
    return cond is not None and cond.status == "True"
