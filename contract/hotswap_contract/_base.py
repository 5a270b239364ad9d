"""Model bases: camelCase on the wire, unknown fields ignored when reading.

Readers are lenient (an agent or server that reports more than the contract breaks nothing);
writers build the same models, so whatever they emit has been through the contract's types.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    def wire(self) -> dict[str, Any]:
        """The JSON object as sent: camelCase keys, every field present (``null`` when unset)."""
        return self.model_dump(mode="json", by_alias=True)


class RequestModel(WireModel):
    """A request body: like :class:`WireModel`, but an unknown field is an error (a typo is not ignored)."""

    model_config = ConfigDict(extra="forbid")
