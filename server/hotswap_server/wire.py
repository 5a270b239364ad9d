"""Request shapes (validated with pydantic) and response formatting for the data plane."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr


class _Request(BaseModel):
    # Unknown fields are ignored, as TEI and Cohere do: clients send extras (e.g. rank_fields).
    model_config = ConfigDict(extra="ignore")


class TeiRerankRequest(_Request):
    query: StrictStr
    texts: list[StrictStr]
    truncate: StrictBool | None = None
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    raw_scores: StrictBool = False
    return_text: StrictBool = False


class DocumentObject(_Request):
    text: StrictStr


class CohereRerankRequest(_Request):
    model: StrictStr | None = None
    query: StrictStr
    documents: list[StrictStr | DocumentObject]
    top_n: Annotated[StrictInt, Field(ge=1)] | None = None
    return_documents: StrictBool | None = None
    max_tokens_per_doc: Annotated[StrictInt, Field(ge=1)] | None = None

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


def f32(value: np.floating | float) -> float:
    """A float32 as JSON: its shortest round-trip decimal (what TEI sends), not float64 noise."""
    return float(str(np.float32(value)))


def ranked(scores: np.ndarray, top_n: int | None = None) -> list[int]:
    """Indices by score, highest first; ties keep input order."""
    order = np.argsort(-scores.astype(np.float64), kind="stable").tolist()
    return order[:top_n] if top_n is not None else order


def pydantic_message(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for err in errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)
