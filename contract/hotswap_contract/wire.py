"""Names and shapes on the wire that more than one process reads."""

from __future__ import annotations

from pydantic import BaseModel

# The one version that scored every pair of a response (server data plane; the agent verifies it).
VERSION_HEADER = "X-Hotswap-Model-Version"
# Echoed on every response; taken from the client when it sends one.
REQUEST_ID_HEADER = "X-Request-Id"

SHA256_SCHEMA_PATTERN = "^[0-9a-fA-F]{64}$"


class ErrorBody(BaseModel):
    """Every error a Hotswap process answers: ``error`` for people, ``error_type`` for programs."""

    error: str
    error_type: str


# error_type values the operator acts on (agent API): retry these, fail the step on any other.
OPERATION_IN_PROGRESS = "operation_in_progress"
SERVER_UNAVAILABLE = "server_unavailable"
CANCELLED = "cancelled"
TRANSIENT_ERROR_TYPES = frozenset({SERVER_UNAVAILABLE, CANCELLED, OPERATION_IN_PROGRESS})
