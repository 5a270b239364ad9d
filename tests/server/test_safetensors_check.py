from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from hotswap_server.errors import InvalidModel
from hotswap_server.safetensors_check import read_header
from safetensors.torch import save_file


def _write(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_valid_file_entries_sorted_by_offset(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    save_file({"b": torch.zeros(2, 3), "a": torch.ones(4, dtype=torch.float16)}, str(p))
    entries = read_header(p)
    assert {e.name for e in entries} == {"a", "b"}
    assert [e.start for e in entries] == sorted(e.start for e in entries)


@pytest.mark.parametrize(
    ("header", "data", "needle"),
    [
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "past the"),
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, "needs 8"),
        ({"t": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
        ({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", "bad shape"),
        (
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
            b"\0" * 12, "overlaps",
        ),
        ({"t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "gap"),
        ({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8, "belong to no tensor"),
        ({"t": {"dtype": "F32"}}, b"", "malformed"),
    ],
)  # fmt: skip
def test_lying_headers_refused_with_a_reason(tmp_path: Path, header: dict, data: bytes, needle: str) -> None:
    with pytest.raises(InvalidModel, match=needle):
        read_header(_write(tmp_path / "m.safetensors", header, data))


def test_pickles_zip_and_garbage_refused(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    p.write_bytes(b"\x80\x04\x95" + b"\0" * 20)
    with pytest.raises(InvalidModel, match="pickle"):
        read_header(p)
    p.write_bytes(b"PK\x03\x04" + b"\0" * 20)
    with pytest.raises(InvalidModel, match="zip"):
        read_header(p)
    p.write_bytes(struct.pack("<Q", 1 << 40))
    with pytest.raises(InvalidModel, match="does not fit"):
        read_header(p)
    p.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(InvalidModel, match="not valid JSON"):
        read_header(p)
    p.write_bytes(b"abc")
    with pytest.raises(InvalidModel, match="truncated"):
        read_header(p)


@pytest.mark.parametrize(("header_len", "first_bytes"), [(0x280, b"\x80"), (0x4B50, b"PK")])
def test_a_valid_file_is_not_taken_for_a_pickle_or_zip_by_its_first_bytes(
    tmp_path: Path, header_len: int, first_bytes: bytes
) -> None:
    """The header length is little-endian: a valid file can start with 0x80 or "PK" (0x4b50)."""
    raw = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header = raw[:-1] + b" " * (header_len - len(raw)) + b"}"  # JSON allows the padding spaces
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00\x00\x80\x3f")
    assert path.read_bytes().startswith(first_bytes)
    (entry,) = read_header(path)
    assert entry.name == "w"
