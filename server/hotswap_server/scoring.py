"""Turning (query, document) pairs into scores with one loaded version.

Pre-processing (tokenize), core (forward) and post-processing (to float32 numpy) are split
so the batching engine can size batches by tokens and the benchmark can time each part.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from .loaded import LoadedVersion

log = logging.getLogger(__name__)

# A pair's token ids by model input name (``input_ids``, ``token_type_ids``, ...), unpadded.
Features = dict[str, list[list[int]]]
# What each input is padded with; an input not named here is never padded by hand.
_PAD_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


@dataclass(frozen=True)
class AdmittedTokens:
    """A request's pairs as the admission check tokenized them (untruncated).

    When truncation is off, the admission check must tokenize every pair to refuse one that is
    too long; the engine then pads these ids into its batch instead of tokenizing the same pairs
    a second time on the model thread (32 pairs of 71 tokens: 8.6-11 ms to tokenize, 0.75-1.3 ms to pad;
    ``make bench``'s raw-ceiling table), but only when the version that scores them is
    ``loaded``, the one whose tokenizer made them.
    """

    loaded: LoadedVersion
    lengths: list[int]  # tokens of each pair (bi-encoders: the longer of query and document)
    features: Features | None = None  # cross-encoders: each pair's ids, one list per document


class Runner(Protocol):
    def score(
        self, queries: list[str], docs: list[str], features: Features | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(raw scores, tokens read per pair): logits for cross-encoders, cosine for bi-encoders.
        ``features``: the pairs' ids from the admission check, if the runner can use them."""
        ...


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


class CrossEncoderRunner:
    def __init__(self, loaded: LoadedVersion) -> None:
        self.module = loaded.module
        self.tokenizer = loaded.tokenizer
        self.max_length = loaded.max_length
        # None until the first batch built from admission ids was compared with the tokenizer's
        # own batch of the same pairs; then whether they were equal (if not: never used again).
        self.collate_matches: bool | None = None

    def encode(self, queries: list[str], docs: list[str]) -> Any:
        # Pairs are truncated on the document side: the query is what the user asked.
        return self.tokenizer(
            queries,
            docs,
            padding=True,
            truncation="only_second",
            max_length=self.max_length,
            return_tensors="pt",
        )

    def collate(self, features: Features) -> dict[str, torch.Tensor] | None:
        """Pad already tokenized pairs into a batch as ``encode`` would (None: cannot, or must not:
        a pair longer than ``max_length`` needs the tokenizer's truncation)."""
        pad = {
            "input_ids": self.tokenizer.pad_token_id,
            "token_type_ids": self.tokenizer.pad_token_type_id,
            "attention_mask": 0,
        }
        if pad["input_ids"] is None or not set(features) <= set(_PAD_INPUTS) or "input_ids" not in features:
            return None
        width = max(len(ids) for ids in features["input_ids"])
        if width > self.max_length:
            return None
        left = self.tokenizer.padding_side == "left"
        out = {}
        for name, rows in features.items():
            fill = pad[name]
            padded = [[fill] * (width - len(r)) + r if left else r + [fill] * (width - len(r)) for r in rows]
            out[name] = torch.tensor(padded, dtype=torch.long)
        return out

    def _admitted_batch(self, queries: list[str], docs: list[str], features: Features) -> Any:
        if self.collate_matches is False:
            return None
        batch = self.collate(features)
        if batch is None or self.collate_matches:
            return batch
        # The first time, and only then: the tokenizer's own batch of these pairs must be the
        # same, key for key, or this version's tokenizer pads in a way ``collate`` does not know.
        expected = self.encode(queries, docs)
        same = set(expected.keys()) == set(batch) and all(torch.equal(expected[k], batch[k]) for k in batch)
        self.collate_matches = same
        if not same:
            log.warning("admission ids do not pad into the tokenizer's batch: this version tokenizes twice")
            return expected
        return batch

    def score(
        self, queries: list[str], docs: list[str], features: Features | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        batch = None if features is None else self._admitted_batch(queries, docs, features)
        if batch is None:
            batch = self.encode(queries, docs)
        device = _device_of(self.module)
        with torch.inference_mode():
            inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            logits = self.module(**inputs).logits
        tokens = batch["attention_mask"].sum(dim=1).numpy()
        return logits.reshape(-1).float().cpu().numpy(), tokens


class BiEncoderRunner:
    def __init__(self, loaded: LoadedVersion) -> None:
        self.module = loaded.module
        self.tokenizer = loaded.tokenizer
        self.max_length = loaded.max_length
        self.pooling = loaded.pooling

    def embed(self, texts: list[str]) -> tuple[torch.Tensor, np.ndarray]:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        device = _device_of(self.module)
        with torch.inference_mode():
            inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            hidden = self.module(**inputs).last_hidden_state.float()
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            elif self.pooling == "max":
                pooled = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
            else:
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            tokens = batch["attention_mask"].sum(dim=1).numpy()
            return torch.nn.functional.normalize(pooled, dim=-1), tokens

    def score(
        self, queries: list[str], docs: list[str], features: Features | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        # Admission ids are per pair; a bi-encoder embeds query and document apart: not used.
        # A batch usually repeats one query for many documents: embed each distinct text once.
        unique = list(dict.fromkeys([*queries, *docs]))
        index = {t: i for i, t in enumerate(unique)}
        emb, counts = self.embed(unique)
        qi = [index[t] for t in queries]
        di = [index[t] for t in docs]
        scores = (emb[qi] * emb[di]).sum(dim=-1).cpu().numpy().astype(np.float32)
        return scores, counts[qi] + counts[di]


def runner_for(loaded: LoadedVersion) -> Runner:
    return CrossEncoderRunner(loaded) if loaded.kind == "cross-encoder" else BiEncoderRunner(loaded)


def to_relevance(raw: np.ndarray, kind: str) -> np.ndarray:
    """The default score: sigmoid of the logit for cross-encoders; cosine already lies in [-1, 1]."""
    if kind == "cross-encoder":
        return (1.0 / (1.0 + np.exp(-raw.astype(np.float64)))).astype(np.float32)
    return raw.astype(np.float32)


def admission_tokens(loaded: LoadedVersion, query: str, docs: list[str]) -> AdmittedTokens:
    """Each (query, doc) pair tokenized untruncated: its length refuses over-long input when
    truncation is off, and a cross-encoder's ids go on to the engine (:class:`AdmittedTokens`)."""
    if loaded.kind == "cross-encoder":
        enc = loaded.admission_tokenizer([query] * len(docs), docs, truncation=False)
        features = {name: list(enc[name]) for name in enc.keys()}
        return AdmittedTokens(loaded, [len(ids) for ids in enc["input_ids"]], features)
    enc = loaded.admission_tokenizer([query, *docs], truncation=False)
    lengths = [len(ids) for ids in enc["input_ids"]]
    return AdmittedTokens(loaded, [max(lengths[0], n) for n in lengths[1:]])


def query_overhead(loaded: LoadedVersion, query: str) -> int:
    """Tokens of a cross-encoder pair that are not the document's: the query's and every special
    token of a pair (``[CLS] q [SEP] d [SEP]``, ``<s> q </s></s> d </s>``). Counted from the query
    alone plus the pair's special tokens: a call with an empty document would be encoded as a
    single sequence, one or two special tokens short."""
    if loaded.kind != "cross-encoder":
        return 0  # bi-encoders embed the query alone, truncated like any text
    tok = loaded.admission_tokenizer
    query_ids = tok(query, add_special_tokens=False, truncation=False)["input_ids"]
    return len(query_ids) + int(tok.num_special_tokens_to_add(pair=True))


def clip_documents(loaded: LoadedVersion, docs: list[str], max_tokens: int) -> list[str]:
    """Cut each document after ``max_tokens`` tokens, at a character offset so the text stays verbatim."""
    enc = loaded.admission_tokenizer(
        docs, add_special_tokens=False, return_offsets_mapping=True, truncation=False
    )
    out = []
    for doc, offsets in zip(docs, enc["offset_mapping"], strict=True):
        out.append(doc if len(offsets) <= max_tokens else doc[: offsets[max_tokens - 1][1]])
    return out
