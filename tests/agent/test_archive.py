"""Tarball extraction refuses absolute paths, '..', links and devices, whole."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from hotswap_agent.archive import extract_tarball, safe_relpath
from hotswap_agent.errors import SourceInvalid, UnsafeArchive


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return path


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def test_extracts_files_and_unwraps_a_single_top_folder(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "v.tar.gz", [("v2/config.json", b"{}"), ("v2/sub/w.bin", b"\x00" * 10)])
    dest = tmp_path / "dest"
    dest.mkdir()
    extract_tarball(archive, dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "config.json",
        "sub",
        "sub/w.bin",
    ]
    assert (dest / "config.json").stat().st_mode & 0o777 == 0o644


def test_keeps_a_flat_archive(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "v.tar", [("./config.json", b"{}"), ("./w.bin", b"x")], mode="w")
    dest = tmp_path / "dest"
    dest.mkdir()
    extract_tarball(archive, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "w.bin"]


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (("/etc/cron.d/evil", b"x"), "absolute"),
        (("../evil", b"x"), r"'\.\.'"),
        (("a/../../evil", b"x"), r"'\.\.'"),
        (special("link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
        (special("hard", tarfile.LNKTYPE, "config.json"), "link"),
        (special("dev", tarfile.CHRTYPE), "device"),
        (special("fifo", tarfile.FIFOTYPE), "device"),
    ],
)
def test_refuses_unsafe_members(
    tmp_path: Path, member: tarfile.TarInfo | tuple[str, bytes], reason: str
) -> None:
    archive = make_tar(tmp_path / "bad.tar.gz", [("config.json", b"{}"), member])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchive, match=reason):
        extract_tarball(archive, dest)
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


def test_truncated_archive(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "v.tar.gz", [("config.json", os.urandom(100_000))])
    archive.write_bytes(archive.read_bytes()[:200])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(SourceInvalid):
        extract_tarball(archive, dest)


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "..", "a\\b", "a\x00b", "./"])
def test_safe_relpath_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        safe_relpath(bad)


def test_safe_relpath_normalises() -> None:
    assert safe_relpath("./a//b/./c") == "a/b/c"
