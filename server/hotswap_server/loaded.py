"""The type of one model version in memory, shared by loading (``modelload``), scoring
(``scoring``), the engine and the swapper. Its own module so that none of them imports another
for the type (``modelload`` used to import ``scoring`` inside a function to dodge a circle)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch

ModelKind = Literal["cross-encoder", "bi-encoder"]
Signature = tuple[tuple[str, tuple[int, ...], str], ...]
ConfigSignature = tuple[tuple[str, str], ...]

# The config values that change what a forward computes with the same tensor shapes: a module
# built from one config cannot serve another's weights, so they belong to the in-place signature.
# (LayerNorm's eps, the activation and the head count are baked into the modules at construction.)
COMPUTE_CONFIG_KEYS = (
    "model_type",
    "hidden_act",
    "layer_norm_eps",
    "num_attention_heads",
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "pad_token_id",
    "position_embedding_type",
    "type_vocab_size",
    "max_position_embeddings",
    "vocab_size",
    "problem_type",
    "is_decoder",
    "chunk_size_feed_forward",
)


def config_signature(config: Any) -> ConfigSignature:
    """The values of :data:`COMPUTE_CONFIG_KEYS` in ``config`` (``repr``, so 1e-12 != 1e-5)."""
    return tuple((key, repr(getattr(config, key, None))) for key in COMPUTE_CONFIG_KEYS)


class HostCopy:
    """Every tensor of a version's state dict in one flat host buffer per dtype, pinned for CUDA.

    Kept from preload for as long as the version is held (staged, active or previous) and never
    written after loading (inference does not write weights), so it is bit-identical to what goes
    live: activation and rollback are each one upload from it, and an upload that fails half-way
    is retried from it. ``module`` is the model skeleton whose tensors are views into the buffer.
    """

    def __init__(self, specs: dict[str, tuple[tuple[int, ...], torch.dtype]], pin: bool) -> None:
        totals: dict[torch.dtype, int] = {}
        for shape, dtype in specs.values():
            totals[dtype] = totals.get(dtype, 0) + math.prod(shape)
        # One allocation per dtype (one in practice, plus int64 buffers some checkpoints carry).
        self.buffers = {dt: torch.empty(n, dtype=dt, pin_memory=pin) for dt, n in totals.items()}
        self.pinned = pin
        self.views: dict[str, torch.Tensor] = {}
        offsets = dict.fromkeys(totals, 0)
        for name, (shape, dtype) in specs.items():
            n = math.prod(shape)
            start = offsets[dtype]
            self.views[name] = self.buffers[dtype][start : start + n].view(shape)
            offsets[dtype] = start + n
        self.module: torch.nn.Module | None = None

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers.values())

    def holds(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor``'s memory lies inside one of the flat buffers."""
        ptr = tensor.data_ptr()
        for buf in self.buffers.values():
            lo = buf.data_ptr()
            if (
                lo <= ptr
                and ptr + tensor.numel() * tensor.element_size() <= lo + buf.numel() * buf.element_size()
            ):
                return True
        return False


@dataclass
class LoadedVersion:
    """One model version in memory: a module (host or device), its tokenizer and metadata."""

    version: str
    path: Path
    digest: str
    kind: ModelKind
    architecture: str
    module: torch.nn.Module
    tokenizer: Any  # used on the model thread only
    # Fast tokenizers keep padding/truncation state in the Rust object: sharing one between
    # the event loop (admission checks) and the model thread corrupts batches. Two copies.
    admission_tokenizer: Any
    max_length: int
    pooling: str = "cls"
    normalize: bool = False
    # The pinned host copy (None only for modules built outside ``load_version``).
    host: HostCopy | None = None
    config_signature: ConfigSignature = ()
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Milliseconds of each loading phase: digest (the server hashes the folder itself: the bytes
    # it loads are proven to be the pinned ones whoever wrote the volume or called preload, at the
    # cost of one more hashing pass over files the page cache already holds), read (safetensors
    # into memory), build (skeleton and the flat host buffer), check (the finite-score canary
    # pairs). Empty when the version was not loaded by ``load_version``.
    load_phases_ms: dict[str, float] = field(default_factory=dict)

    @property
    def signature(self) -> Signature:
        """Names, shapes and dtypes of every tensor, then the config values that change the
        computation (:data:`COMPUTE_CONFIG_KEYS`): equal signatures can be swapped in place."""
        tensors = tuple((n, tuple(t.shape), str(t.dtype)) for n, t in self.module.state_dict().items())
        return tensors + tuple((f"config.{k}", (), v) for k, v in self.config_signature)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.module.state_dict().values())

    def record(self) -> dict[str, Any]:
        p = next(self.module.parameters())
        return {
            "version": self.version,
            "path": str(self.path),
            "digest": self.digest,
            "kind": self.kind,
            "architecture": self.architecture,
            "dtype": str(p.dtype).removeprefix("torch."),
            "device": str(p.device),
            "loadedAt": self.loaded_at.isoformat(),
            "loadPhasesMs": dict(self.load_phases_ms),
        }
