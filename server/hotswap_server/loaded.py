"""The type of one model version in memory, shared by loading (``modelload``), scoring
(``scoring``), the engine and the swapper. Its own module so that none of them imports another
for the type (``modelload`` used to import ``scoring`` inside a function to dodge a circle)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch

ModelKind = Literal["cross-encoder", "bi-encoder"]
Signature = tuple[tuple[str, tuple[int, ...], str], ...]


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
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def signature(self) -> Signature:
        """Names, shapes and dtypes of every tensor: equal signatures can be swapped in place."""
        return tuple((n, tuple(t.shape), str(t.dtype)) for n, t in self.module.state_dict().items())

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
        }
