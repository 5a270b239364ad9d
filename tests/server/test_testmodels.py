"""The offline test models: every good one loads and ranks, every broken one has exactly its defect.

Broken files are checked with plain Python (struct, json, pickletools) and the safetensors
library, never through transformers, and nothing is unpickled.
"""

from __future__ import annotations

import functools
import json
import os
import pickletools
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from devtools import testmodels as tm
from devtools.testmodels import CANARY, MODELS, WEIGHTS

GOOD = [name for name, spec in MODELS.items() if spec.defect is None]
GOOD_CROSS = [name for name in GOOD if MODELS[name].kind == "cross-encoder"]
BROKEN = [name for name, spec in MODELS.items() if spec.defect is not None]
TOPICAL_CROSS = [name for name in GOOD_CROSS if MODELS[name].ranks_by_topic]
IN_PLACE_PAIRS = [
    ("tiny-xlmr-v1", "tiny-xlmr-v2"),
    ("minilm-ce-v1", "minilm-ce-v2"),
    ("minilm-v1", "minilm-v2"),
]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

AI_QUERY = "how do neural networks learn from data"
AI_DOC = "A neural network learns patterns from training data."
FRUIT_DOC = "A ripe banana tastes sweet and fresh."
PAIRS = [
    *((CANARY["query"], doc) for doc in CANARY["documents"]),
    ("which fruit is rich in vitamins", "A pear is rich in vitamin C."),
    ("Künstliche Intelligenz", "Machine learning ranks documents by relevance to a query."),
]
# Queries phrased unlike any training query, with the topic whose documents they are about.
HELD_OUT = [
    ("ai", "deep learning on a GPU"),
    ("fruit", "fresh apples from the orchard"),
    ("sport", "the team lost the game"),
    ("cooking", "soup with garlic"),
    ("travel", "delayed flight to Berlin"),
    ("music", "the band played a concert"),
]


# --------------------------------------------------------------------------- helpers


def _header(path: Path) -> tuple[dict[str, Any], int]:
    """A safetensors header parsed by hand, and the length of the data that follows it."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    return header, len(raw) - 8 - n


def _signature(folder: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    header, _ = _header(folder / WEIGHTS)
    return {k: (v["dtype"], tuple(v["shape"])) for k, v in header.items()}


def _config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


@functools.cache
def _cross_encoder(folder: Path) -> tuple[Any, Any]:
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    return tokenizer, model


def _logits(folder: Path, pairs: list[tuple[str, str]]) -> torch.Tensor:
    tokenizer, model = _cross_encoder(folder)
    batch = tokenizer(
        [q for q, _ in pairs], [d for _, d in pairs], padding=True, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        return model(**batch).logits.squeeze(-1)


def _embed(folder: Path, texts: list[str]) -> torch.Tensor:
    """Mean-pooled, L2-normalised embeddings, as all-MiniLM-L6-v2's modules.json describes."""
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


# --------------------------------------------------------------------------- the set as a whole


def test_every_model_has_a_builder_and_known_dependencies() -> None:
    assert set(tm._BUILDERS) == set(MODELS)
    for spec in MODELS.values():
        assert set(spec.needs) <= set(MODELS)
        assert spec.kind in ("cross-encoder", "bi-encoder")


def test_folders_are_complete_with_safetensors_weights_only(testmodels_dir: Path) -> None:
    assert not list(testmodels_dir.glob(".tmp-*"))  # no temporary folder left behind
    for name in MODELS:
        folder = testmodels_dir / name
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert (folder / WEIGHTS).is_file()
        assert (folder / "config.json").is_file()
        assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")], name
        assert all(p.stat().st_mode & 0o444 == 0o444 for p in files), f"{name}: files must be readable by all"


def test_importing_the_registry_does_not_import_torch() -> None:
    code = "import sys, devtools.testmodels as t; assert t.MODELS; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- good cross-encoders


@pytest.mark.parametrize("name", GOOD_CROSS)
def test_cross_encoder_loads_cleanly_and_scores_finite(testmodels_dir: Path, name: str) -> None:
    folder = testmodels_dir / name
    model, info = AutoModelForSequenceClassification.from_pretrained(
        folder, local_files_only=True, output_loading_info=True
    )
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    config = _config(folder)
    assert config["architectures"] == [MODELS[name].arch]
    assert model.config.num_labels == 1
    tokenizer, _ = _cross_encoder(folder)
    assert tokenizer.is_fast
    offset = 2 if config["model_type"] == "xlm-roberta" else 0  # XLM-R positions start at padding_idx + 1
    assert tokenizer.model_max_length == config["max_position_embeddings"] - offset
    logits = _logits(folder, PAIRS)
    assert logits.shape == (len(PAIRS),)
    assert torch.isfinite(logits).all()
    assert logits.std() > 1e-3  # the score depends on the pair


@pytest.mark.parametrize("name", GOOD_CROSS)
def test_pair_encoding(testmodels_dir: Path, name: str) -> None:
    tokenizer, _ = _cross_encoder(testmodels_dir / name)
    query, doc = PAIRS[0]
    a = tokenizer(query, add_special_tokens=False)["input_ids"]
    b = tokenizer(doc, add_special_tokens=False)["input_ids"]
    enc = tokenizer(query, doc)
    if MODELS[name].arch == tm._XLMR:  # <s> A </s></s> B </s>
        assert (tokenizer.cls_token, tokenizer.sep_token, tokenizer.pad_token_id) == ("<s>", "</s>", 1)
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        assert enc["input_ids"] == [cls, *a, sep, sep, *b, sep]
        assert "token_type_ids" not in enc or set(enc["token_type_ids"]) == {0}
    else:  # [CLS] A [SEP] B [SEP], with segment ids
        assert (tokenizer.cls_token, tokenizer.sep_token, tokenizer.pad_token_id) == ("[CLS]", "[SEP]", 0)
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        assert enc["input_ids"] == [cls, *a, sep, *b, sep]
        assert enc["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    assert tokenizer.unk_token_id not in a + b


@pytest.mark.parametrize("name", TOPICAL_CROSS)
def test_tiny_cross_encoders_rank_by_topic(testmodels_dir: Path, name: str) -> None:
    folder = testmodels_dir / name
    canary = _logits(folder, [(CANARY["query"], doc) for doc in CANARY["documents"]])
    assert int(canary.argmax()) == CANARY["expectTop"]
    wins = total = 0
    for topic, query in HELD_OUT:
        on = tm.TOPICS[topic].sentences()[3::8]
        off = [d for other, t in tm.TOPICS.items() if other != topic for d in t.sentences()[5::8]]
        logits = _logits(folder, [(query, d) for d in on + off])
        wins += int((logits[: len(on), None] > logits[None, len(on) :]).sum())
        total += len(on) * len(off)
    assert wins / total > 0.85


def test_inverted_model_fails_the_canary(testmodels_dir: Path) -> None:
    pairs = [(CANARY["query"], doc) for doc in CANARY["documents"]]
    v1 = _logits(testmodels_dir / "tiny-xlmr-v1", pairs)
    inverted = _logits(testmodels_dir / "tiny-xlmr-inverted", pairs)
    assert torch.allclose(inverted, -v1, atol=1e-5)
    assert int(inverted.argmin()) == CANARY["expectTop"]


# --------------------------------------------------------------------------- versions and shapes


@pytest.mark.parametrize(("old", "new"), IN_PLACE_PAIRS)
def test_in_place_versions_share_shapes_and_score_differently(
    testmodels_dir: Path, old: str, new: str
) -> None:
    a, b = testmodels_dir / old, testmodels_dir / new
    assert MODELS[old].shape_group == MODELS[new].shape_group
    assert _signature(a) == _signature(b)
    assert _config(a) == _config(b)
    for file in TOKENIZER_FILES:
        assert (a / file).read_bytes() == (b / file).read_bytes()
    assert (a / WEIGHTS).read_bytes() != (b / WEIGHTS).read_bytes()
    if MODELS[old].kind == "cross-encoder":
        diff = (_logits(a, PAIRS) - _logits(b, PAIRS)).abs().max()  # raw scores: sigmoid saturates
    else:
        texts = [AI_QUERY, AI_DOC, FRUIT_DOC]
        diff = ((_embed(a, texts) @ _embed(a, texts).T) - (_embed(b, texts) @ _embed(b, texts).T)).abs().max()
    assert diff > 1e-2


def test_shape_groups_partition_the_good_models(testmodels_dir: Path) -> None:
    signatures: dict[str, dict[str, Any]] = {}
    for name in GOOD:
        signature = _signature(testmodels_dir / name)
        group = MODELS[name].shape_group
        assert signatures.setdefault(group, signature) == signature, name
    groups = list(signatures.values())
    assert all(g1 != g2 for i, g1 in enumerate(groups) for g2 in groups[i + 1 :])


def test_wide_model_is_another_consistent_shape(testmodels_dir: Path) -> None:
    tiny, wide = _config(testmodels_dir / "tiny-xlmr-v1"), _config(testmodels_dir / "tiny-xlmr-wide-v1")
    assert (tiny["hidden_size"], tiny["num_hidden_layers"]) == (64, 2)
    assert (wide["hidden_size"], wide["num_hidden_layers"]) == (96, 3)
    assert wide["vocab_size"] == tiny["vocab_size"]
    embeddings = _signature(testmodels_dir / "tiny-xlmr-wide-v1")["roberta.embeddings.word_embeddings.weight"]
    assert embeddings == ("F32", (wide["vocab_size"], 96))
    tokenizer, _ = _cross_encoder(testmodels_dir / "tiny-xlmr-wide-v1")
    assert tokenizer.model_max_length == 256 == wide["max_position_embeddings"] - 2


# --------------------------------------------------------------------------- MiniLM


@pytest.mark.parametrize("name", ["minilm-v1", "minilm-v2"])
def test_minilm_ranks_ai_document_above_fruit(testmodels_dir: Path, name: str) -> None:
    query, ai, fruit = _embed(testmodels_dir / name, [AI_QUERY, AI_DOC, FRUIT_DOC])
    assert float(query @ ai) > float(query @ fruit) + 0.1


def test_minilm_v1_is_the_packaged_model(testmodels_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    folder = testmodels_dir / "minilm-v1"
    shipped = load_file(str(tm.minilm_source() / WEIGHTS))
    ours = load_file(str(folder / WEIGHTS))
    assert set(shipped) - set(ours) == {"embeddings.position_ids"}  # a buffer transformers no longer saves
    assert all(torch.equal(ours[k], shipped[k]) for k in ours)
    assert json.loads((folder / "modules.json").read_text())[1]["path"] == "1_Pooling"
    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    texts = [AI_QUERY, AI_DOC, FRUIT_DOC]
    assert torch.allclose(st.encode(texts, convert_to_tensor=True), _embed(folder, texts), atol=1e-5)


def test_minilm_cross_encoders_have_minilm_dims(testmodels_dir: Path) -> None:
    config = _config(testmodels_dir / "minilm-ce-v1")
    dims = [
        config[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    ]
    assert dims == [384, 6, 12, 1536]
    assert config["vocab_size"] == 30522
    encoder = load_file(str(testmodels_dir / "minilm-ce-v1" / WEIGHTS))
    shipped = load_file(str(tm.minilm_source() / WEIGHTS))
    assert torch.equal(
        encoder["bert.encoder.layer.5.output.dense.weight"], shipped["encoder.layer.5.output.dense.weight"]
    )


# --------------------------------------------------------------------------- broken variants


@pytest.mark.parametrize("name", BROKEN)
def test_broken_variant_keeps_v1_config_and_tokenizer(testmodels_dir: Path, name: str) -> None:
    for file in ("config.json", *TOKENIZER_FILES):
        assert (testmodels_dir / name / file).read_bytes() == (
            testmodels_dir / "tiny-xlmr-v1" / file
        ).read_bytes()


def _v1(testmodels_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(testmodels_dir / "tiny-xlmr-v1" / WEIGHTS))


def test_broken_nan(testmodels_dir: Path) -> None:
    v1, broken = _v1(testmodels_dir), load_file(str(testmodels_dir / "broken-nan" / WEIGHTS))
    assert {k: v.shape for k, v in broken.items()} == {k: v.shape for k, v in v1.items()}
    changed = sorted(k for k in v1 if not torch.equal(v1[k], broken[k]))
    assert changed == sorted(tm.BROKEN_NAN_KEYS)
    nan_key, inf_key = tm.BROKEN_NAN_KEYS
    assert int(broken[nan_key].isnan().sum()) == 1 and not broken[nan_key].isinf().any()
    assert int(broken[inf_key].isinf().sum()) == 1 and not broken[inf_key].isnan().any()
    assert all(torch.isfinite(v).all() for k, v in broken.items() if k not in tm.BROKEN_NAN_KEYS)


def test_broken_shape(testmodels_dir: Path) -> None:
    v1 = _signature(testmodels_dir / "tiny-xlmr-v1")
    broken = _signature(testmodels_dir / "broken-shape")
    assert set(broken) == set(v1)
    assert [k for k in v1 if v1[k] != broken[k]] == [tm.BROKEN_SHAPE_KEY]
    vocab = _config(testmodels_dir / "broken-shape")["vocab_size"]
    assert broken[tm.BROKEN_SHAPE_KEY] == ("F32", (vocab - 1, 64))


def test_broken_pickle(testmodels_dir: Path) -> None:
    path = testmodels_dir / "broken-pickle" / WEIGHTS
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x04"  # pickle protocol 4
    opcodes = [op.name for op, _, _ in pickletools.genops(raw)]  # parses the stream, runs nothing
    assert opcodes[-1] == "STOP"
    assert "GLOBAL" not in opcodes and "STACK_GLOBAL" not in opcodes  # plain dict of lists
    (declared,) = struct.unpack("<Q", raw[:8])
    assert declared > len(raw)  # read as safetensors, the header length is absurd
    with pytest.raises(Exception):  # noqa: B017 - the library's error type is not public
        safe_open(str(path), framework="pt")


def test_broken_truncated(testmodels_dir: Path) -> None:
    full = (testmodels_dir / "tiny-xlmr-v1" / WEIGHTS).read_bytes()
    path = testmodels_dir / "broken-truncated" / WEIGHTS
    raw = path.read_bytes()
    assert raw == full[: len(full) // 2]
    header, data_len = _header(path)  # the header itself is intact
    assert max(v["data_offsets"][1] for v in header.values()) > data_len
    with pytest.raises(Exception):  # noqa: B017
        safe_open(str(path), framework="pt")


def test_broken_header(testmodels_dir: Path) -> None:
    good, good_len = _header(testmodels_dir / "tiny-xlmr-v1" / WEIGHTS)
    path = testmodels_dir / "broken-header" / WEIGHTS
    header, data_len = _header(path)
    assert data_len == good_len
    assert (
        path.read_bytes()[-data_len:] == (testmodels_dir / "tiny-xlmr-v1" / WEIGHTS).read_bytes()[-good_len:]
    )
    assert {k: (v["dtype"], v["shape"]) for k, v in header.items()} == {
        k: (v["dtype"], v["shape"]) for k, v in good.items()
    }
    lying = [k for k in good if header[k]["data_offsets"] != good[k]["data_offsets"]]
    assert len(lying) == 1
    begin, end = header[lying[0]]["data_offsets"]
    assert end > data_len
    assert end - begin == 4 * torch.Size(header[lying[0]]["shape"]).numel()  # size agrees with shape
    with pytest.raises(Exception):  # noqa: B017
        safe_open(str(path), framework="pt")


def test_broken_keys(testmodels_dir: Path) -> None:
    v1, broken = _v1(testmodels_dir), load_file(str(testmodels_dir / "broken-keys" / WEIGHTS))
    assert set(v1) - set(broken) == {tm.BROKEN_KEYS_MISSING}
    assert set(broken) - set(v1) == {tm.BROKEN_KEYS_EXTRA}
    assert torch.equal(broken[tm.BROKEN_KEYS_EXTRA], v1[tm.BROKEN_KEYS_MISSING])
    assert all(torch.equal(broken[k], v1[k]) for k in set(v1) & set(broken))


# --------------------------------------------------------------------------- generate and CLI


def test_generate_is_idempotent(testmodels_dir: Path) -> None:
    def snapshot() -> dict[Path, tuple[int, int]]:
        return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in testmodels_dir.rglob("*")}

    before = snapshot()
    assert tm.generate(testmodels_dir) == testmodels_dir
    assert snapshot() == before


def test_cli_writes_only_the_requested_model_into_any_folder(testmodels_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "some" / "where"
    assert tm.main([str(out), "--only", "tiny-bert-v1"]) == 0
    assert [p.name for p in out.iterdir()] == ["tiny-bert-v1"]
    ours = {p.relative_to(out).as_posix(): p.read_bytes() for p in (out / "tiny-bert-v1").rglob("*")}
    cached = {
        p.relative_to(testmodels_dir).as_posix(): p.read_bytes()
        for p in (testmodels_dir / "tiny-bert-v1").rglob("*")
    }
    assert ours == cached  # deterministic: the same bytes as the session's copy


def test_cli_rejects_unknown_names_and_lists_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        tm.main([str(tmp_path), "--only", "no-such-model"])
    assert exc.value.code == 2
    with pytest.raises(ValueError, match="no-such-model"):
        tm.generate(tmp_path, ["no-such-model"])
    assert tm.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in MODELS)


def test_dependencies_come_first() -> None:
    assert tm._with_needs(["broken-keys"]) == ["tiny-xlmr-v1", "broken-keys"]
    assert tm._with_needs(["tiny-bert-v1"]) == ["tiny-bert-v1"]


def test_failed_build_leaves_nothing_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(dst: Path, outdir: Path) -> None:
        (dst / WEIGHTS).write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setitem(tm._BUILDERS, "tiny-bert-v1", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        tm.generate(tmp_path, ["tiny-bert-v1"])
    assert list(tmp_path.iterdir()) == []


def test_concurrent_generator_finishing_first_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def raced(dst: Path, outdir: Path) -> None:
        (dst / WEIGHTS).write_bytes(b"ours")
        (outdir / "tiny-bert-v1").mkdir()
        (outdir / "tiny-bert-v1" / WEIGHTS).write_bytes(b"theirs")

    monkeypatch.setitem(tm._BUILDERS, "tiny-bert-v1", raced)
    tm.generate(tmp_path, ["tiny-bert-v1"])
    assert (tmp_path / "tiny-bert-v1" / WEIGHTS).read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-bert-v1"]


def test_stale_temporary_folders_of_dead_generators_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".tmp-tiny-bert-v1-{dead.pid}-0123abcd"
    live = tmp_path / f".tmp-tiny-bert-v1-{os.getpid()}-0123abcd"
    stale.mkdir()
    live.mkdir()
    tm.generate(tmp_path, [])
    assert not stale.exists()
    assert live.exists()
