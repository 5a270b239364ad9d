"""Client load from inside the cluster, through the data-plane Service (kube-proxy picks the pod).

Runs in a pod of the project's image (stdlib only). ``--concurrency`` threads each POST a rerank
request to ``--url`` in a loop, one new connection per request so kube-proxy spreads them over the
ready pods as it would many clients. A request fails unless it answers 200 with exactly one
``X-Hotswap-Model-Version`` header. It stops when ``--stop-file`` appears (or after
``--max-seconds``), then prints one line ``RESULT {json}``: total, failed, by version, the first
failures, p50/p99 latency. Progress lines (``PROGRESS {json}``) come every ``--progress-seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from typing import Any

# hotswap_contract.wire.VERSION_HEADER; this file runs alone (stdlib only) in a pod, so it is repeated.
VERSION_HEADER = "X-Hotswap-Model-Version"
BODY = {
    "query": "how do neural networks learn from data",
    "texts": [
        "Deep learning updates its weights with backpropagation.",
        "A ripe banana tastes sweet and fresh.",
    ],
}


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0
        self.failed = 0
        self.by_version: dict[str, int] = {}
        self.failures: list[str] = []
        self.latencies: list[float] = []

    def add(self, ok: bool, version: str | None, latency_ms: float, error: str) -> None:
        with self.lock:
            self.total += 1
            if ok:
                self.by_version[version or "-"] = self.by_version.get(version or "-", 0) + 1
                self.latencies.append(latency_ms)
            else:
                self.failed += 1
                if len(self.failures) < 20:
                    self.failures.append(error)

    def report(self, clients: int, seconds: float) -> dict[str, Any]:
        with self.lock:
            lat = sorted(self.latencies) or [0.0]
            return {
                "total": self.total,
                "failed": self.failed,
                "by_version": dict(self.by_version),
                "failures": list(self.failures),
                "p50_ms": lat[len(lat) // 2],
                "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
                "clients": clients,
                "seconds": seconds,
            }


def one(url: str, payload: bytes, timeout: float) -> tuple[bool, str | None, str]:
    request = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resp.read()
            versions = resp.headers.get_all(VERSION_HEADER) or []
            if resp.status != 200:
                return False, None, f"status {resp.status}"
            if len(versions) != 1:
                return False, None, f"{len(versions)} version headers"
            return True, versions[0], ""
    except urllib.error.HTTPError as exc:
        return False, None, f"status {exc.code}"
    except (OSError, urllib.error.URLError) as exc:  # refused, reset, timeout
        return False, None, f"{type(exc).__name__}: {exc}"


def client(url: str, stop: threading.Event, tally: Tally, timeout: float) -> None:
    payload = json.dumps(BODY).encode()
    while not stop.is_set():
        started = time.monotonic()
        ok, version, error = one(url, payload, timeout)
        tally.add(ok, version, (time.monotonic() - started) * 1000, error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="the Service's rerank URL, e.g. http://svc:8080/rerank")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--stop-file", default="/tmp/stop")
    parser.add_argument("--max-seconds", type=float, default=1800)
    parser.add_argument("--progress-seconds", type=float, default=5)
    parser.add_argument("--timeout", type=float, default=30, help="per-request timeout (seconds)")
    args = parser.parse_args(argv)

    stop, tally = threading.Event(), Tally()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [
        threading.Thread(target=client, args=(args.url, stop, tally, args.timeout), daemon=True)
        for _ in range(args.concurrency)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    next_progress = started + args.progress_seconds
    while not stop.is_set():
        now = time.monotonic()
        if os.path.exists(args.stop_file) or now - started > args.max_seconds:
            break
        if now >= next_progress:
            progress = {
                k: v for k, v in tally.report(args.concurrency, now - started).items() if k != "failures"
            }
            print("PROGRESS " + json.dumps(progress), flush=True)
            next_progress = now + args.progress_seconds
        stop.wait(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=args.timeout + 5)
    print("RESULT " + json.dumps(tally.report(args.concurrency, time.monotonic() - started)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
