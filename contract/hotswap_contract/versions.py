"""The version-id rule: a DNS-1123 label (it names folders and Kubernetes values).

Checked with ``fullmatch``: ``re.match`` with ``$`` accepts a trailing newline, which once let
``"v2\\n"`` through and broke every response header that carried it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, WithJsonSchema

MAX_LENGTH = 63
# Without anchors: callers use fullmatch. JSON Schema (OpenAPI, the CRD) needs the anchored form.
PATTERN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
SCHEMA_PATTERN = f"^{PATTERN}$"
_RE = re.compile(PATTERN)


class InvalidVersion(ValueError):
    """Not a valid version id; the message says why."""


def is_version(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_LENGTH and _RE.fullmatch(value) is not None


def check_version(value: Any) -> str:
    """``value`` if it is a valid version id, else :class:`InvalidVersion`."""
    if not isinstance(value, str):
        raise InvalidVersion("version must be a string")
    if not is_version(value):
        raise InvalidVersion(
            f"version must be a DNS-1123 label (lower-case letters, digits and '-', starting and ending "
            f"with a letter or digit, at most {MAX_LENGTH} characters), got {value[:80]!r}"
        )
    return value


# A pydantic field type that applies the rule (and so appears with its pattern in generated schemas).
VersionId = Annotated[
    str,
    AfterValidator(check_version),
    WithJsonSchema({"type": "string", "pattern": SCHEMA_PATTERN, "maxLength": MAX_LENGTH}),
]
