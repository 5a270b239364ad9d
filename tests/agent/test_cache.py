"""The model cache shared by pods (--cache-dir): hits, misses, corruption, concurrent agents, eviction.

Sources are tarballs on a loopback http server that counts the downloads and can be slowed down,
so "N agents download once" is a count of requests, not an inference.
"""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from hotswap_agent.cache import ModelCache
from hotswap_agent.settings import load_settings
from hotswap_contract.digest import folder_digest

from tests.agent.agent_fakes import ClientFactory, run_op, status_of, write_model


@dataclass
class TarServer:
    base: str
    tarballs: dict[str, bytes]
    digests: dict[str, str]
    sizes: dict[str, int]
    hits: Counter[str] = field(default_factory=Counter)
    delay_s: float = 0.0

    def uri(self, name: str) -> str:
        return f"{self.base}/models/{name}.tar.gz"


def _tarball(folder: Path, name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(folder.iterdir()):
            tar.add(p, arcname=f"{name}/{p.name}")
    return buf.getvalue()


@pytest.fixture
async def tar_server(tmp_path: Path) -> AsyncIterator[TarServer]:
    tarballs, digests, sizes = {}, {}, {}
    for name, size in (("a", 100_000), ("b", 100_000), ("c", 100_000)):
        src = write_model(tmp_path / "src" / name, name, size=size)
        tarballs[name] = _tarball(src, name)
        digests[name] = folder_digest(src)
        sizes[name] = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    box: list[TarServer] = []

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in tarballs:
            raise web.HTTPNotFound()
        box[0].hits[name] += 1
        resp = web.StreamResponse(headers={"Content-Length": str(len(tarballs[name]))})
        await resp.prepare(request)
        data = tarballs[name]
        for i in range(0, len(data), 16384):  # slow enough for the others to start waiting
            await resp.write(data[i : i + 16384])
            await asyncio.sleep(box[0].delay_s / max(1, len(data) // 16384))
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/models/{name}.tar.gz", serve)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    box.append(TarServer(f"http://127.0.0.1:{runner.addresses[0][1]}", tarballs, digests, sizes))
    yield box[0]
    await runner.cleanup()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def entries(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir() if p.name.startswith("sha256-"))


def dot_leftovers(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir() if p.name.startswith((".tmp-", ".trash-")))


async def agent(
    agent_client: ClientFactory, server: TarServer, cache_dir: Path, models: Path, *extra: str
) -> object:
    models.mkdir(parents=True, exist_ok=True)
    return await agent_client(
        "--models-root", str(models), "--cache-dir", str(cache_dir), *extra, allow=(server.base + "/models/",)
    )


async def stage(client: object, server: TarServer, version: str, name: str) -> dict:
    op = await run_op(
        client, "stage", {"version": version, "uri": server.uri(name), "sha256": server.digests[name]}
    )
    assert op["state"] == "succeeded", op
    return op


async def test_miss_publishes_then_hit_does_not_download(
    agent_client: ClientFactory, tar_server: TarServer, cache_dir: Path, tmp_path: Path
) -> None:
    first = await agent(agent_client, tar_server, cache_dir, tmp_path / "pod-1")
    op = await stage(first, tar_server, "v1", "a")
    assert op["result"]["cache"] == "miss" and tar_server.hits["a"] == 1
    digest = tar_server.digests["a"]
    assert entries(cache_dir) == [f"sha256-{digest}"]
    assert folder_digest(cache_dir / f"sha256-{digest}") == digest
    assert dot_leftovers(cache_dir) == []

    # A restarted pod (an empty models volume, the same cache) does not download at all.
    second = await agent(agent_client, tar_server, cache_dir, tmp_path / "pod-2")
    op = await stage(second, tar_server, "v1", "a")
    assert op["result"]["cache"] == "hit" and op["result"]["noop"] is False
    assert tar_server.hits["a"] == 1
    assert folder_digest(tmp_path / "pod-2" / "v1") == digest
    assert op["progress"]["bytesDone"] == op["progress"]["bytesTotal"] == tar_server.sizes["a"]
    on_disk = (await status_of(second))["onDisk"]
    assert [(d["version"], d["digest"]) for d in on_disk] == [("v1", digest)]
    # The same content under another version id is a hit too: the key is the digest.
    op = await stage(second, tar_server, "v1-again", "a")
    assert op["result"]["cache"] == "hit" and tar_server.hits["a"] == 1


async def test_unpinned_stage_skips_the_cache(
    agent_client: ClientFactory, tar_server: TarServer, cache_dir: Path, tmp_path: Path
) -> None:
    client = await agent(agent_client, tar_server, cache_dir, tmp_path / "pod-1")
    op = await run_op(client, "stage", {"version": "v1", "uri": tar_server.uri("a")})
    assert op["state"] == "succeeded" and "cache" not in op["result"]
    assert not cache_dir.exists() or entries(cache_dir) == []


@pytest.mark.parametrize("damage", ["content", "extra-file", "missing-file"])
async def test_corrupted_entry_is_removed_and_downloaded_again(
    agent_client: ClientFactory, tar_server: TarServer, cache_dir: Path, tmp_path: Path, damage: str
) -> None:
    first = await agent(agent_client, tar_server, cache_dir, tmp_path / "pod-1")
    await stage(first, tar_server, "v1", "a")
    entry = cache_dir / f"sha256-{tar_server.digests['a']}"
    if damage == "content":
        (entry / "model.safetensors").write_bytes(b"not the model")
    elif damage == "extra-file":
        (entry / "stray.bin").write_bytes(b"x")
    else:
        (entry / "config.json").unlink()
    second = await agent(agent_client, tar_server, cache_dir, tmp_path / "pod-2")
    op = await stage(second, tar_server, "v1", "a")
    assert op["result"]["cache"] == "miss" and tar_server.hits["a"] == 2
    assert folder_digest(tmp_path / "pod-2" / "v1") == tar_server.digests["a"]
    assert folder_digest(entry) == tar_server.digests["a"]  # republished, sound
    assert dot_leftovers(cache_dir) == []
    assert sorted(p.name for p in (tmp_path / "pod-2").iterdir() if p.name.startswith(".staging-")) == []


async def test_concurrent_agents_download_once(
    agent_client: ClientFactory, tar_server: TarServer, cache_dir: Path, tmp_path: Path
) -> None:
    tar_server.delay_s = 0.6
    clients = [await agent(agent_client, tar_server, cache_dir, tmp_path / f"pod-{i}") for i in range(3)]
    ops = await asyncio.gather(*(stage(c, tar_server, "v1", "a") for c in clients))
    assert tar_server.hits["a"] == 1, tar_server.hits
    assert sorted(op["result"]["cache"] for op in ops) == ["hit", "hit", "miss"]
    for i in range(3):
        assert folder_digest(tmp_path / f"pod-{i}" / "v1") == tar_server.digests["a"]
    assert entries(cache_dir) == [f"sha256-{tar_server.digests['a']}"] and dot_leftovers(cache_dir) == []


async def test_lock_timeout_downloads_without_publishing(
    agent_client: ClientFactory, tar_server: TarServer, cache_dir: Path, tmp_path: Path
) -> None:
    cache = ModelCache(cache_dir)
    cache.ensure()
    held = cache.lock(tar_server.digests["a"], exclusive=True)  # another pod, stuck mid-download
    try:
        client = await agent(
            agent_client, tar_server, cache_dir, tmp_path / "pod-1", "--cache-lock-timeout", "0.3"
        )
        op = await stage(client, tar_server, "v1", "a")
        assert "cache" not in op["result"] and tar_server.hits["a"] == 1
        assert entries(cache_dir) == []
    finally:
        held.release()


async def test_eviction_is_lru_by_bytes(
    agent_client: ClientFactory, tar_server: TarServer, cache_dir: Path, tmp_path: Path
) -> None:
    # Room for two entries: staging a third evicts the least recently used one.
    limit = tar_server.sizes["a"] + tar_server.sizes["b"] + 1000
    client = await agent(
        agent_client, tar_server, cache_dir, tmp_path / "pod-1", "--cache-max-bytes", str(limit)
    )
    d = tar_server.digests
    await stage(client, tar_server, "va", "a")
    await stage(client, tar_server, "vb", "b")
    # "a" is used again (a hit for another version id), so "b" is now the least recently used.
    old = time.time() - 100
    os.utime(cache_dir / f"sha256-{d['b']}", (old, old))
    os.utime(cache_dir / f"sha256-{d['a']}", (old - 10, old - 10))
    op = await stage(client, tar_server, "va2", "a")
    assert op["result"]["cache"] == "hit"
    await stage(client, tar_server, "vc", "c")
    assert entries(cache_dir) == sorted([f"sha256-{d['a']}", f"sha256-{d['c']}"])
    assert dot_leftovers(cache_dir) == [] and not (cache_dir / ".locks" / f"sha256-{d['b']}.lock").exists()
    # The models volume keeps its own retention: what the cache evicted is still there.
    assert (tmp_path / "pod-1" / "vb").is_dir()


def test_entry_in_use_is_not_evicted(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache", max_bytes=1)
    cache.ensure()
    digests = []
    for i, label in enumerate(("one", "two", "three")):
        src = write_model(tmp_path / "src" / label, label, size=1000)
        digest = folder_digest(src)
        digests.append(digest)
        with cache.lock(digest, exclusive=True):
            assert cache.publish(digest, src)
        os.utime(cache.entry_path(digest), (1000 + i, 1000 + i))
    reader = cache.lock(digests[0], exclusive=False)  # an agent copying the oldest entry out
    try:
        removed = cache.evict(keep={digests[2]})
    finally:
        reader.release()
    assert removed == [f"sha256-{digests[1]}"]
    assert cache.has(digests[0]) and cache.has(digests[2]) and not cache.has(digests[1])
    assert cache.evict(keep={digests[2]}) == [f"sha256-{digests[0]}"]  # no longer in use


def test_leftovers_of_dead_writers_are_removed_live_ones_kept(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    cache.ensure()
    dead, live = "1" * 64, "2" * 64
    (cache.root / f".tmp-sha256-{dead}-abcd").mkdir()
    (cache.root / f".tmp-sha256-{live}-abcd").mkdir()
    (cache.root / f".trash-sha256-{dead}-abcd").mkdir()
    with cache.lock(live, exclusive=True):
        removed = cache.clean_leftovers()
    assert sorted(removed) == [f".tmp-sha256-{dead}-abcd", f".trash-sha256-{dead}-abcd"]
    assert (cache.root / f".tmp-sha256-{live}-abcd").is_dir()


def test_publish_race_first_rename_wins(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    cache.ensure()
    src = write_model(tmp_path / "src", "one", size=1000)
    digest = folder_digest(src)
    assert cache.publish(digest, src) is True
    assert cache.publish(digest, src) is False
    assert folder_digest(cache.entry_path(digest)) == digest


async def test_unusable_cache_never_fails_the_stage(
    agent_client: ClientFactory, tar_server: TarServer, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("a file where the cache should be")
    client = await agent(agent_client, tar_server, not_a_folder, tmp_path / "pod-1")
    op = await stage(client, tar_server, "v1", "a")
    assert "cache" not in op["result"] and tar_server.hits["a"] == 1


def test_settings(tmp_path: Path, token_files: tuple[Path, Path]) -> None:
    base = ["--token-file", str(token_files[0]), "--server-admin-token-file", str(token_files[1])]
    s = load_settings(base)
    assert s.cache_dir is None and s.cache_max_bytes == 0
    s = load_settings(
        base, environ={"HOTSWAP_AGENT_CACHE_DIR": str(tmp_path), "HOTSWAP_AGENT_CACHE_MAX_BYTES": "50Gi"}
    )
    assert s.cache_dir == tmp_path and s.cache_max_bytes == 50 << 30
    with pytest.raises(ValueError, match="--cache-max-bytes"):
        load_settings([*base, "--cache-max-bytes", "lots"])
