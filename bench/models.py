"""The model under test, written to a models root the server can preload from.

- CPU: ``minilm-ce-v1`` and ``minilm-ce-v2`` from :mod:`devtools.testmodels` (MiniLM-L6
  cross-encoders, same shapes, different weights), generated into the same cache the tests use.
- CUDA: two bge-reranker-v2-m3-shaped folders (XLMRobertaForSequenceClassification with XLM-R
  large dimensions, random weights, fp16 safetensors) in a temporary models root, with the
  tokenizer of ``tiny-xlmr-v1`` (trained locally; its ids all fall inside the large vocabulary).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# bge-reranker-v2-m3 (XLM-R large): what the CUDA run serves.
BGE_M3_DIMS: dict[str, int] = {
    "vocab_size": 250002,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "max_position_embeddings": 514,
}
# The same architecture scaled down: lets the smoke test run the CUDA path's builder on a CPU.
TINY_XLMR_DIMS: dict[str, int] = {
    "vocab_size": 1001,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 514,
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class ModelSet:
    """Two versions of one model (same shapes) under ``root``, and how to describe them."""

    root: Path
    v1: str  # folder names relative to root
    v2: str
    description: str
    dtype: str  # what the server is told (--dtype), and what the raw ceiling runs in
    truncate: bool = False  # the documents are longer than the model reads: clients ask to truncate

    @property
    def v1_path(self) -> Path:
        return self.root / self.v1


def testmodels_cache() -> Path:
    """The folder the test suite generates the embedded models into (shared, keyed by generator)."""
    from devtools.testmodels import cache_dir

    return cache_dir()


def testmodels(names: list[str], outdir: Path | None = None) -> Path:
    from devtools.testmodels import generate

    return generate(outdir or testmodels_cache(), names)


def minilm_set(outdir: Path | None = None) -> ModelSet:
    root = testmodels(["minilm-ce-v1", "minilm-ce-v2"], outdir)
    return ModelSet(root, "minilm-ce-v1", "minilm-ce-v2", "MiniLM-L6-H384 cross-encoder (BERT)", "float32")


def tiny_set(outdir: Path | None = None) -> ModelSet:
    """For the smoke test only: tiny XLM-R rerankers, milliseconds per batch."""
    root = testmodels(["tiny-xlmr-v1", "tiny-xlmr-v2"], outdir)
    return ModelSet(
        root,
        "tiny-xlmr-v1",
        "tiny-xlmr-v2",
        "tiny XLM-R cross-encoder (smoke test)",
        "float32",
        truncate=True,
    )


def add_models_option(parser: Any) -> None:
    """``--models minilm|tiny``: the model set a single-process measurement (``bench.part_size``,
    ``bench.split_forward``) loads with :func:`load_v1`."""
    parser.add_argument("--models", choices=("minilm", "tiny"), default="minilm")


def load_v1(which: str) -> tuple[ModelSet, Any, int]:
    """The v1 model of ``minilm_set`` or ``tiny_set``, loaded in float32 as the server loads it,
    and torch's intra-op thread count: what the single-process measurements run on."""
    import torch
    from hotswap_server.modelload import load_version

    models = minilm_set() if which == "minilm" else tiny_set()
    return models, load_version("v1", models.v1_path, torch.float32), torch.get_num_threads()


def write_xlmr_reranker(dst: Path, dims: dict[str, int], seed: int, tokenizer_from: Path) -> None:
    """A XLMRobertaForSequenceClassification folder with random weights (fp16 safetensors)."""
    import torch
    from safetensors.torch import save_file
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification
    from transformers.initialization import no_init_weights

    options: dict[str, Any] = {
        **dims,
        "type_vocab_size": 1,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "layer_norm_eps": 1e-5,
        "num_labels": 1,
        "architectures": ["XLMRobertaForSequenceClassification"],
    }
    config = XLMRobertaConfig(**options)
    with no_init_weights():
        module = XLMRobertaForSequenceClassification(config)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in module.state_dict().items():
        if name.endswith("LayerNorm.weight"):
            value = torch.ones(tensor.shape)
        elif name.endswith("bias"):
            value = torch.zeros(tensor.shape)
        else:
            value = torch.randn(tensor.shape, generator=gen) * 0.02
        state[name] = value.to(torch.float16).contiguous()
    del module
    dst.mkdir(parents=True)
    config.save_pretrained(dst)
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_from / name, dst / name)
    # The tiny tokenizer says 128 tokens; the large model reads 512 (514 positions minus RoBERTa's 2).
    tok_config = json.loads((dst / "tokenizer_config.json").read_text())
    tok_config["model_max_length"] = dims["max_position_embeddings"] - 2
    (dst / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))


@contextmanager
def xlmr_set(
    dims: dict[str, int], description: str, dtype: str, testmodels_dir: Path | None = None
) -> Iterator[ModelSet]:
    """Two random XLM-R rerankers of ``dims`` in a temporary models root, removed afterwards."""
    tokenizer_from = testmodels(["tiny-xlmr-v1"], testmodels_dir) / "tiny-xlmr-v1"
    root = Path(tempfile.mkdtemp(prefix="hotswap-bench-models-"))
    try:
        write_xlmr_reranker(root / "xlmr-v1", dims, seed=1, tokenizer_from=tokenizer_from)
        write_xlmr_reranker(root / "xlmr-v2", dims, seed=2, tokenizer_from=tokenizer_from)
        yield ModelSet(root, "xlmr-v1", "xlmr-v2", description, dtype)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def model_set(kind: str, device: str, testmodels_dir: Path | None = None) -> Iterator[ModelSet]:
    """``kind``: ``default`` (by device), ``minilm``, ``bge-m3``, ``tiny`` or ``tiny-xlmr-random``."""
    if kind == "default":
        kind = "bge-m3" if device == "cuda" else "minilm"
    if kind == "minilm":
        yield minilm_set(testmodels_dir)
    elif kind == "tiny":
        yield tiny_set(testmodels_dir)
    elif kind == "bge-m3":
        dtype = "float16" if device == "cuda" else "float32"
        description = "bge-reranker-v2-m3-shaped (XLM-R large, random weights)"
        with xlmr_set(BGE_M3_DIMS, description, dtype, testmodels_dir) as ms:
            yield ms
    elif kind == "tiny-xlmr-random":
        description = "tiny random XLM-R (the bge-m3 builder, smoke test)"
        with xlmr_set(TINY_XLMR_DIMS, description, "float32", testmodels_dir) as ms:
            yield ms
    else:
        raise ValueError(f"unknown model set {kind!r}")
