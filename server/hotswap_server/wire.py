"""Request shapes (validated with pydantic) and response formatting for the data plane."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with every lone UTF-16 surrogate replaced by U+FFFD.

    JSON's ``\\ud800`` escapes can name half of a surrogate pair; Python keeps such a string,
    but no UTF-8 codec (the tokenizer's included) accepts it. A valid pair is already one code
    point after parsing, so every surrogate left is lone. The replacement is what a UTF-8 decoder
    does with bytes it cannot read: the text is scored, not refused.
    """
    if text.isascii():
        return text
    return _LONE_SURROGATE.sub("\ufffd", text)


# Every text that reaches a tokenizer (queries, documents) is cleaned on the way in.
Text = Annotated[StrictStr, AfterValidator(clean_text)]


class _Request(BaseModel):
    # Unknown fields are ignored, as TEI and Cohere do: clients send extras (e.g. rank_fields).
    model_config = ConfigDict(extra="ignore")


class TeiRerankRequest(_Request):
    query: Text
    texts: list[Text]
    truncate: StrictBool | None = None
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    raw_scores: StrictBool = False
    return_text: StrictBool = False


class DocumentObject(_Request):
    text: Text


class CohereRerankRequest(_Request):
    model: Text | None = None
    query: Text
    documents: list[Text | DocumentObject]
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
