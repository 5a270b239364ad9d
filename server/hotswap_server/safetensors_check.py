"""Checks a ``.safetensors`` file's bytes before anything parses them as tensors.

The safetensors library would refuse most broken files too, but with messages meant for
its developers; these checks give an operator the precise reason ("file is a pickle",
"tensor X ends past the data") and never execute anything from the file.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path

from .errors import InvalidModel

DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def _sniff(head: bytes) -> str | None:
    if head[:1] == b"\x80":
        return "a Python pickle"
    if head[:2] == b"PK":
        return "a zip archive (torch.save format)"
    return None


def read_header(path: Path) -> list[TensorEntry]:
    """Validate ``path``'s header against its size; return its tensor entries, sorted by offset."""
    rel = path.name
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        # A pickle or zip is named only once the bytes cannot be a safetensors header length: a
        # valid file whose length's first byte is 0x80 (or whose first two bytes read "PK") is fine.
        fits = len(head) == 8 and 8 + struct.unpack("<Q", head)[0] <= min(size, 8 + MAX_HEADER_BYTES)
        kind = None if fits else _sniff(head)
        if kind is not None:
            raise InvalidModel(f"{rel}: file is {kind}, not safetensors; pickled weights are never loaded")
        if len(head) < 8:
            raise InvalidModel(f"{rel}: truncated: {size} bytes, no header")
        (header_len,) = struct.unpack("<Q", head)
        if not fits:
            raise InvalidModel(f"{rel}: header length {header_len} does not fit in a {size}-byte file")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidModel(f"{rel}: header is not valid JSON") from None
    if not isinstance(header, dict):
        raise InvalidModel(f"{rel}: header is not a JSON object")
    data_len = size - 8 - header_len
    entries: list[TensorEntry] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise InvalidModel(f"{rel}: tensor {name}: malformed header entry") from None
        if dtype not in DTYPE_SIZES:
            raise InvalidModel(f"{rel}: tensor {name}: unknown dtype {dtype!r}")
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InvalidModel(f"{rel}: tensor {name}: bad shape {list(shape)}")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end):
            raise InvalidModel(f"{rel}: tensor {name}: bad data offsets [{start}, {end}]")
        expected = prod(shape) * DTYPE_SIZES[dtype]
        if end - start != expected:
            raise InvalidModel(
                f"{rel}: tensor {name}: offsets [{start}, {end}] hold {end - start} bytes, "
                f"shape {list(shape)} of {dtype} needs {expected}"
            )
        if end > data_len:
            raise InvalidModel(
                f"{rel}: tensor {name}: ends at byte {end} past the {data_len} bytes of data (truncated file?)"
            )
        entries.append(TensorEntry(name, dtype, shape, start, end))
    entries.sort(key=lambda e: (e.start, e.end))
    position = 0
    for e in entries:
        if e.start != position:
            what = (
                "overlaps the previous tensor" if e.start < position else f"leaves a gap at byte {position}"
            )
            raise InvalidModel(f"{rel}: tensor {e.name}: data {what}")
        position = e.end
    if position != data_len:
        raise InvalidModel(f"{rel}: {data_len - position} bytes of data belong to no tensor")
    return entries
