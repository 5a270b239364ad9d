"""Admission counts (what a pair spends besides its document, for each tokenizer family) and the
admission ids the engine pads into its batches instead of tokenizing twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hotswap_server.modelload import load_version
from hotswap_server.scoring import CrossEncoderRunner, admission_tokens, query_overhead


@pytest.mark.parametrize("model", ["tiny-xlmr-v1", "tiny-bert-v1"])
def test_query_overhead_is_the_pair_minus_its_document(testmodels_dir: Path, model: str) -> None:
    loaded = load_version("v1", testmodels_dir / model, torch.float32)
    query = "how do neural networks learn from data"
    for doc in ("Deep learning updates its weights.", "banana", "a b c d e f g h"):
        (pair,) = admission_tokens(loaded, query, [doc]).lengths
        doc_alone = len(loaded.admission_tokenizer(doc, add_special_tokens=False)["input_ids"])
        assert query_overhead(loaded, query) == pair - doc_alone, doc


QUERY = "how do neural networks learn from data"
DOCS = [
    "Deep learning updates its weights by gradient descent on a loss.",
    "banana",
    "",
    "Neural networks learn representations from data, layer by layer, with backpropagation.",
]


@pytest.mark.parametrize("model", ["tiny-xlmr-v1", "tiny-bert-v1"])
def test_admission_ids_pad_into_the_tokenizers_own_batch(testmodels_dir: Path, model: str) -> None:
    loaded = load_version("v1", testmodels_dir / model, torch.float32)
    runner = CrossEncoderRunner(loaded)
    features = admission_tokens(loaded, QUERY, DOCS).features
    assert features is not None
    batch = runner.collate(features)
    expected = runner.encode([QUERY] * len(DOCS), DOCS)
    assert batch is not None and set(batch) == set(expected.keys())
    for name, tensor in expected.items():
        assert torch.equal(batch[name], tensor), name
    admitted = runner.score([QUERY] * len(DOCS), DOCS, features)
    assert runner.collate_matches is True
    plain = runner.score([QUERY] * len(DOCS), DOCS)
    assert np.array_equal(admitted[0], plain[0]) and np.array_equal(admitted[1], plain[1])


def test_ids_that_differ_from_the_tokenizers_are_caught_once_and_never_used(testmodels_dir: Path) -> None:
    loaded = load_version("v1", testmodels_dir / "tiny-bert-v1", torch.float32)
    runner = CrossEncoderRunner(loaded)
    queries = [QUERY] * len(DOCS)
    plain = runner.score(queries, DOCS)
    features = admission_tokens(loaded, QUERY, DOCS).features
    assert features is not None
    wrong = {name: [list(ids) for ids in rows] for name, rows in features.items()}
    wrong["input_ids"][1][2] += 1  # as if another tokenizer had made them
    assert np.array_equal(runner.score(queries, DOCS, wrong)[0], plain[0])
    assert runner.collate_matches is False
    encoded: list[int] = []
    encode = runner.encode
    runner.encode = lambda q, d: encoded.append(len(d)) or encode(q, d)  # type: ignore[method-assign]
    assert np.array_equal(runner.score(queries, DOCS, features)[0], plain[0])
    assert encoded == [len(DOCS)]  # tokenized once more, not compared again


def test_a_pair_longer_than_the_limit_is_left_to_the_tokenizer(testmodels_dir: Path) -> None:
    loaded = load_version("v1", testmodels_dir / "tiny-bert-v1", torch.float32)
    runner = CrossEncoderRunner(loaded)
    long_doc = " ".join(["word"] * (loaded.max_length + 10))
    admitted = admission_tokens(loaded, QUERY, ["short", long_doc])
    assert admitted.features is not None and max(admitted.lengths) > loaded.max_length
    assert runner.collate(admitted.features) is None
    raw, tokens = runner.score([QUERY] * 2, ["short", long_doc], admitted.features)
    plain_raw, plain_tokens = runner.score([QUERY] * 2, ["short", long_doc])
    assert np.array_equal(raw, plain_raw) and tokens.tolist() == plain_tokens.tolist()
    assert int(tokens[1]) == loaded.max_length  # truncated by the tokenizer, as without the ids


def test_bi_encoders_get_lengths_but_no_ids(testmodels_dir: Path) -> None:
    from hotswap_server.loaded import LoadedVersion

    loaded = load_version("v1", testmodels_dir / "tiny-bert-v1", torch.float32)
    bi = LoadedVersion(**{**loaded.__dict__, "kind": "bi-encoder"})
    admitted = admission_tokens(bi, QUERY, DOCS)
    assert admitted.features is None and len(admitted.lengths) == len(DOCS)
