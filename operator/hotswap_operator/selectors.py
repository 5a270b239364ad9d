"""Label selectors: to the API's query syntax, and matched locally.

The operator both sends ``labelSelector`` to the API server and re-checks every returned pod,
so a server that ignores the query (kmock does) can never make it touch a foreign pod.
"""

from __future__ import annotations

from collections.abc import Mapping

from .models import LabelSelector


def to_query(selector: LabelSelector) -> str:
    """``app=x,tier in (a,b),!legacy`` — the ``labelSelector`` query parameter."""
    parts = [f"{key}={value}" for key, value in sorted(selector.match_labels.items())]
    for req in selector.match_expressions:
        if req.operator == "In":
            parts.append(f"{req.key} in ({','.join(req.values)})")
        elif req.operator == "NotIn":
            parts.append(f"{req.key} notin ({','.join(req.values)})")
        elif req.operator == "Exists":
            parts.append(req.key)
        else:
            parts.append(f"!{req.key}")
    return ",".join(parts)


def matches(selector: LabelSelector, labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == "In" and (not present or labels[req.key] not in req.values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in req.values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True


def parse_query(query: str) -> LabelSelector | None:
    """The inverse of :func:`to_query` for the forms it writes (used by the local API server).

    Returns None for an empty query (select everything).
    """
    query = query.strip()
    if not query:
        return None
    labels: dict[str, str] = {}
    exprs: list[dict[str, object]] = []
    for term in _split_terms(query):
        term = term.strip()
        if " notin " in term or " in " in term:
            op = "NotIn" if " notin " in term else "In"
            key, _, rest = term.partition(" notin " if op == "NotIn" else " in ")
            values = [v.strip() for v in rest.strip().strip("()").split(",") if v.strip()]
            exprs.append({"key": key.strip(), "operator": op, "values": values})
        elif "!=" in term:
            key, _, value = term.partition("!=")
            exprs.append({"key": key.strip(), "operator": "NotIn", "values": [value.strip()]})
        elif "==" in term or "=" in term:
            key, _, value = term.partition("==" if "==" in term else "=")
            labels[key.strip()] = value.strip()
        elif term.startswith("!"):
            exprs.append({"key": term[1:].strip(), "operator": "DoesNotExist"})
        else:
            exprs.append({"key": term, "operator": "Exists"})
    return LabelSelector.model_validate({"matchLabels": labels, "matchExpressions": exprs})


def _split_terms(query: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in query:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(ch)
    terms.append("".join(current))
    return [t for t in terms if t.strip()]
