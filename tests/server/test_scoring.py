"""Admission counts: what a pair spends besides its document, for each tokenizer family."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hotswap_server.modelload import load_version
from hotswap_server.scoring import query_overhead, token_lengths


@pytest.mark.parametrize("model", ["tiny-xlmr-v1", "tiny-bert-v1"])
def test_query_overhead_is_the_pair_minus_its_document(testmodels_dir: Path, model: str) -> None:
    loaded = load_version("v1", testmodels_dir / model, torch.float32)
    query = "how do neural networks learn from data"
    for doc in ("Deep learning updates its weights.", "banana", "a b c d e f g h"):
        (pair,) = token_lengths(loaded, query, [doc])
        doc_alone = len(loaded.admission_tokenizer(doc, add_special_tokens=False)["input_ids"])
        assert query_overhead(loaded, query) == pair - doc_alone, doc
