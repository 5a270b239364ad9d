"""The http(s) folder format: ``<folder>/manifest.json`` lists the files to fetch.

::

    {"files": [{"path": "config.json", "size": 712, "sha256": "9f2c..."}, ...]}

``path`` is relative ('/' separators, no '..', no leading '/'); ``size`` and ``sha256`` are optional
and checked when given. Each file is fetched from ``<folder>/<path>`` (percent-encoded). The listing
itself is not part of the version. Write one with ``python -m hotswap_agent.manifest FOLDER``.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotswap_contract.digest import file_sha256

from hotswap_agent.archive import safe_relpath

MANIFEST_NAME = "manifest.json"
MAX_FILES = 100_000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    size: int | None
    sha256: str | None


def parse_manifest(data: Any) -> list[ManifestEntry]:
    """Validate a decoded manifest; ``ValueError`` says what is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ValueError('manifest must be an object {"files": [...]}')
    files = data["files"]
    if not files:
        raise ValueError("manifest lists no files")
    if len(files) > MAX_FILES:
        raise ValueError(f"manifest lists more than {MAX_FILES} files")
    entries: list[ManifestEntry] = []
    seen: set[str] = set()
    for i, item in enumerate(files):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise ValueError(f"files[{i}] must be an object with a string path")
        path = safe_relpath(item["path"])
        if path in seen:
            raise ValueError(f"files[{i}]: {path!r} listed twice")
        seen.add(path)
        size = item.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise ValueError(f"files[{i}].size must be a non-negative integer")
        sha = item.get("sha256")
        if sha is not None and (not isinstance(sha, str) or not _SHA256.match(sha)):
            raise ValueError(f"files[{i}].sha256 must be 64 lower-case hex digits")
        entries.append(ManifestEntry(path, size, sha))
    return entries


def build_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of ``folder`` (every regular file, sorted by path), ready for ``json.dump``."""
    files = []
    for p in sorted(Path(folder).rglob("*"), key=lambda q: q.relative_to(folder).as_posix()):
        if p.is_symlink():
            raise ValueError(f"symbolic link not allowed: {p}")
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            if rel == MANIFEST_NAME:
                continue
            files.append({"path": rel, "size": p.stat().st_size, "sha256": file_sha256(p)})
    return {"files": files}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hotswap_agent.manifest FOLDER > FOLDER/manifest.json", file=sys.stderr)
        return 2
    json.dump(build_manifest(Path(args[0])), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
