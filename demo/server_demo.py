"""The server on its own: real ranking, load, a hot swap to v2 and back, and what happened.

Run with ``make demo-server``. Starts one ``hotswap-server`` process on loopback with the embedded
MiniLM bi-encoder, puts concurrent clients on it, swaps the weights in place twice while they run,
and exits 0 only if no request failed and every response named one version.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
QUERY = "What is artificial intelligence?"
DOCS = [
    "Artificial intelligence is the study of machines that learn and reason.",
    "Bananas and apples are sweet fruit sold at the market.",
    "Machine learning models are trained on large data sets.",
    "Neural networks are a family of AI models inspired by the brain.",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with {proc.returncode}")
        try:
            async with session.get(url + "/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("server did not become ready in 120 s")


async def _client(session: aiohttp.ClientSession, url: str, stop: asyncio.Event, log: list) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            async with session.post(url + "/rerank", json={"query": QUERY, "texts": DOCS}) as r:
                await r.read()
                log.append(
                    (r.status, r.headers.get("X-Hotswap-Model-Version"), time.perf_counter() - started)
                )
        except aiohttp.ClientError as e:
            log.append((type(e).__name__, None, time.perf_counter() - started))


async def run(models: Path, clients: int, seconds: float) -> int:
    port, admin_port = _free_port(), _free_port()
    tmp = Path(tempfile.mkdtemp(prefix="hotswap-demo-"))
    token = secrets.token_hex(16)
    (tmp / "token").write_text(token)
    cmd = [
        sys.executable, "-m", "hotswap_server", "--model", str(models / "minilm-v1"), "--version", "v1",
        "--models-root", str(models), "--host", "127.0.0.1", "--port", str(port),
        "--admin-port", str(admin_port), "--admin-token-file", str(tmp / "token"), "--swap-mode", "inplace",
    ]  # fmt: skip
    log_file = open(tmp / "server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)  # noqa: ASYNC220 - started once, before any load
    url, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    auth = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_ready(session, url, proc)
            async with session.post(url + "/rerank", json={"query": QUERY, "texts": DOCS}) as r:
                ranking = await r.json()
            print(f"\nQuery: {QUERY!r}  (served by version {r.headers['X-Hotswap-Model-Version']})")
            for item in ranking:
                print(f"  {item['score']:+.3f}  {DOCS[item['index']]}")
            fruit_last = ranking[-1]["index"] == 1

            stop = asyncio.Event()
            log: list[tuple[object, str | None, float]] = []
            tasks = [asyncio.create_task(_client(session, url, stop, log)) for _ in range(clients)]
            print(
                f"\n{clients} clients are sending requests for {seconds:.0f} s; swapping v1 -> v2 -> v1 meanwhile"
            )
            swaps = []
            await asyncio.sleep(seconds / 4)
            async with session.post(admin + "/admin/v1/preload", json={"version": "v2", "path": "minilm-v2"},
                                    headers=auth) as r:  # fmt: skip
                if r.status != 200:
                    raise SystemExit(f"preload failed: {await r.text()}")
            for step in ("activate", "rollback"):
                await asyncio.sleep(seconds / 4)
                body = {"version": "v2"} if step == "activate" else {}
                async with session.post(f"{admin}/admin/v1/{step}", json=body, headers=auth) as r:
                    swaps.append(await r.json())
                    print(f"  {step:<8} -> now serving {swaps[-1]['active']['version']} "
                          f"({swaps[-1]['mode']}, new requests waited {swaps[-1]['pauseMs']:.1f} ms)")  # fmt: skip
            await asyncio.sleep(seconds / 4)
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()

    ok = [entry for entry in log if entry[0] == 200]
    failed = len(log) - len(ok)
    latencies = sorted(entry[2] * 1000 for entry in ok)
    versions = Counter(entry[1] for entry in ok)
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    print("\nSummary")
    print(f"  requests served : {len(log)}")
    print(f"  failed requests : {failed}")
    print("  served by       : " + ", ".join(f"{v}: {n}" for v, n in sorted(versions.items())))
    print(f"  latency         : p50 {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms")
    print("  swap pauses     : " + ", ".join(f"{s['pauseMs']:.1f} ms" for s in swaps))
    print(f"  ranking         : {'fruit document ranked last' if fruit_last else 'UNEXPECTED ORDER'}")
    good = (
        failed == 0
        and fruit_last
        and set(versions) == {"v1", "v2"}
        and all(s["mode"] == "inplace" for s in swaps)
    )
    print("\nAll went as it should." if good else "\nSomething went wrong: see above.")
    return 0 if good else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=REPO / ".cache" / "demo-models")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from devtools.testmodels import generate

    print("Preparing the embedded models (offline)...")
    generate(args.models, ["minilm-v1", "minilm-v2"])
    return asyncio.run(run(args.models, args.clients, args.seconds))


if __name__ == "__main__":
    sys.exit(main())
