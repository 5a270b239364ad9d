"""The benchmark's inputs: seeded random text, the same for every measurement in a run.

Kept free of torch so the load-generator process stays light: it only builds request bodies.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

QUERY_WORDS = 8
DOC_WORDS = 60
SEED = 20261126

# Common English words, so WordPiece and SentencePiece tokenizers see ordinary text.
WORDS = """
the of and to in is for on that with as by at from this are was be or an have it not but
data model search query ranking neural network learning system document result training test
fruit apple banana river mountain music city history science energy water light sound ocean
forest school garden market bridge train road house window table chair paper book letter story
people child family friend doctor teacher student worker farmer artist writer player leader
small large early late young old new long short high low fast slow warm cold bright dark
green blue red yellow white black open close begin end build carry change choose follow grow
help keep learn move play read run speak start stop think travel walk watch write answer
question problem reason method theory example number level point group field record report
market price value money bank trade company office product service customer order supply
computer software hardware memory storage server client request response language machine
weather summer winter spring autumn morning evening night today tomorrow yesterday week year
""".split()


@dataclass(frozen=True)
class Workload:
    """A pool of queries and documents; request ``i`` of size ``n`` always holds the same text."""

    queries: tuple[str, ...]
    docs: tuple[str, ...]

    def request(self, i: int, n_docs: int) -> tuple[str, list[str]]:
        query = self.queries[i % len(self.queries)]
        start = (i * n_docs) % len(self.docs)
        docs = [self.docs[(start + k) % len(self.docs)] for k in range(n_docs)]
        return query, docs

    def pairs(self, i: int, batch: int) -> tuple[list[str], list[str]]:
        """Batch ``i`` of ``batch`` pairs, cut from the same requests the clients send (3 docs each)."""
        queries: list[str] = []
        docs: list[str] = []
        k = i * batch
        while len(docs) < batch:
            query, request_docs = self.request(k // 3, 3)
            queries.append(query)
            docs.append(request_docs[k % 3])
            k += 1
        return queries, docs

    def bodies(
        self, n_docs: int, count: int = 64, truncate: bool = False, api: str = "tei", model: str = ""
    ) -> list[bytes]:
        """Pre-encoded ``/rerank`` bodies, request ``i`` holding the same text whatever the API.

        ``api="tei"``: TEI's ``{query, texts}`` with TEI's defaults (no truncation, so the server
        checks every pair's length), or ``truncate: true`` for models shorter than the text.
        ``api="infinity"``: Infinity's ``{query, documents, model}`` (it truncates on its own), without
        the documents echoed back, as TEI answers.
        """
        out = []
        for i in range(count):
            query, docs = self.request(i, n_docs)
            body: dict[str, object]
            if api == "infinity":
                body = {"query": query, "documents": docs, "model": model, "return_documents": False}
            elif api == "tei":
                body = {"query": query, "texts": docs}
                if truncate:
                    body["truncate"] = True
            else:
                raise ValueError(f"unknown API {api!r}")
            out.append(json.dumps(body).encode())
        return out


def make_workload(n_queries: int = 64, n_docs: int = 512, seed: int = SEED) -> Workload:
    rng = random.Random(seed)

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(words))

    queries = tuple(text(QUERY_WORDS) for _ in range(n_queries))
    docs = tuple(text(DOC_WORDS) for _ in range(n_docs))
    return Workload(queries, docs)
