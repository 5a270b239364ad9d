"""A fake pod: the agent API and a scoring data plane in one small process, no torch.

It follows the agent contract (docs/contract.md, docs/agent.md) closely enough for the operator:
operations run in the background and are polled through ``/v1/status``; one at a time (409);
``stage`` computes the real manifest digest of a ``file://`` folder and refuses a mismatching
``sha256``; a folder holding a ``BROKEN`` file fails ``preload`` like NaN weights would. A JSON
*script* file, re-read on every operation, injects failures and delays for tests::

    {"fail": [{"step": "canary", "version": "v3", "error": "document 1 ranked first, expected 0"},
              {"step": "stage", "version": "v4", "times": 2, "errorType": "source_unavailable",
               "sourceFault": "transient",
               "error": "GET http://registry/v4/manifest.json answered 429 Too Many Requests"}],
     "delay": {"stage": 0.5, "preload": 0.2, "activate": 0.05},
     "errors": [{"version": "v4", "pods": ["reranker-0"], "every": 2}],
     "invert": ["v5"]}

(``invert``: those versions rank backwards — the lexical scores negated — in the data plane,
verify and ``/v1/evaluate``; ``errors``: every Nth scoring request served by that version answers 500, for soak tests. Step
names: see :meth:`FakePod.script_steps` — ``canary`` fails a version's canary wherever it is scored,
staged or live; ``verify`` only the check after activation; ``quality`` the evaluate gate.)

The data plane answers ``POST /rerank`` and ``/v1/rerank`` with the ``X-Hotswap-Model-Version``
header, ``/readyz`` 503 until a version is active, and ``/metrics`` with request counters.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import re
import secrets
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web
from hotswap_contract import ranking
from hotswap_contract.admin import SwapResult
from hotswap_contract.digest import folder_digest
from hotswap_contract.wire import VERSION_HEADER
from hotswap_operator import timeutil

from devtools.fakes.slots import ContractError, PodSlots

log = logging.getLogger("fakepod")
DEFAULT_DELAYS = {
    "stage": 0.15,
    "preload": 0.1,
    "activate": 0.02,
    "rollback": 0.02,
    "verify": 0.02,
    "evaluate": 0.05,
}


class OpError(Exception):
    def __init__(
        self,
        message: str,
        error_type: str,
        result: dict[str, Any] | None = None,
        source_fault: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.result = result
        self.source_fault = source_fault  # with source_unavailable, as the agent says it


class FakePod:
    def __init__(self, args: argparse.Namespace) -> None:
        self.name: str = args.pod_name
        self.token: str = Path(args.token_file).read_text().strip()
        self.script_file: Path | None = Path(args.script) if args.script else None
        self.boot_file: Path | None = Path(args.boot_file) if args.boot_file else None
        self.allow: list[str] = args.allow or []
        self.slots = PodSlots()  # the contract's rules for what a pod holds (devtools.fakes)
        self.latest: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.last_activation: dict[str, Any] | None = None
        self.activations: list[dict[str, Any]] = []
        self.requests: Counter[tuple[str, str]] = Counter()
        self.started_at = timeutil.iso(timeutil.now())
        self._task: asyncio.Task[None] | None = None
        self._script: tuple[float, dict[str, Any]] = (-1.0, {})
        self._rule_hits: dict[str, int] = {}  # fail rules with ``times``: how often each failed here
        self._served = 0

    # -- scripting

    def script(self) -> dict[str, Any]:
        if self.script_file is None:
            return {}
        try:
            mtime = self.script_file.stat().st_mtime
            if mtime != self._script[0]:
                self._script = (mtime, json.loads(self.script_file.read_text() or "{}"))
        except (OSError, ValueError):
            return {}
        return self._script[1]

    def injected_error(self, version: str) -> bool:
        """Whether this scoring request should fail (the script's ``errors`` rules)."""
        self._served += 1
        for rule in self.script().get("errors", []):
            if rule.get("version") not in (None, version):
                continue
            if rule.get("pods") and self.name not in rule["pods"]:
                continue
            if self._served % max(1, int(rule.get("every", 1))) == 0:
                return True
        return False

    def scripted_failure(self, step: str, version: str | None) -> tuple[str, str | None, str | None] | None:
        """The first matching ``fail`` rule's error, error type (``errorType``, else the step's) and
        ``sourceFault`` (absent: an agent from before it); a rule with ``times`` fails only that many
        operations of this pod (a transient error)."""
        for rule in self.script().get("fail", []):
            if rule.get("step") != step:
                continue
            if rule.get("version") not in (None, version):
                continue
            if rule.get("pods") and self.name not in rule["pods"]:
                continue
            if "times" in rule:
                key = json.dumps(rule, sort_keys=True)
                hits = self._rule_hits.get(key, 0)
                if hits >= int(rule["times"]):
                    continue
                self._rule_hits[key] = hits + 1
            return (
                str(rule.get("error", f"scripted {step} failure")),
                rule.get("errorType"),
                rule.get("sourceFault"),
            )
        return None

    @staticmethod
    def script_steps(kind: str, body: dict[str, Any]) -> list[tuple[str, str]]:
        """The script's step names that apply to an operation, each with the error type it fails with.

        ``verify`` is the check after activation only (what only the live device shows);
        ``verify-staged`` the canary on the staged weights only; ``canary`` both (a version whose
        canary fails, wherever it is scored: the version's fault, ``canary_failed``); ``quality`` the
        ``evaluate`` gate (``quality_failed``).
        """
        if kind == "verify":
            own = "verify-staged" if body.get("staged") else "verify"
            return [("canary", "canary_failed"), (own, f"scripted_{own}")]
        if kind == "evaluate":
            return [("quality", "quality_failed"), ("evaluate", "scripted_evaluate")]
        return [(kind, f"scripted_{kind}")]

    async def pause(self, kind: str) -> None:
        delays = {**DEFAULT_DELAYS, **self.script().get("delay", {})}
        await asyncio.sleep(float(delays.get(kind, 0.0)))

    # -- operations

    def submit(self, kind: str, version: str | None, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        running = self.latest if self.latest and self.latest["state"] == "running" else None
        if running is not None:
            if running["kind"] == kind and running["version"] == version:
                return running, 202
            raise web.HTTPConflict(
                text=json.dumps(
                    {
                        "error": f"another operation is running: {running['kind']}",
                        "error_type": "operation_in_progress",
                    }
                ),
                content_type="application/json",
            )
        op = {
            "id": secrets.token_hex(6),
            "kind": kind,
            "version": version,
            "state": "running",
            "error": None,
            "errorType": None,
            "sourceFault": None,
            "result": None,
            "startedAt": timeutil.iso(timeutil.now()),
            "finishedAt": None,
            "progress": {"bytesDone": 0, "bytesTotal": 0},
        }
        self.latest = op
        self.history = [*self.history[-19:], op]
        self._task = asyncio.create_task(self._run(op, body))
        return op, 202

    async def _run(self, op: dict[str, Any], body: dict[str, Any]) -> None:
        try:
            await self.pause(op["kind"])
            for step, error_type in self.script_steps(op["kind"], body):
                failure = self.scripted_failure(step, op["version"])
                if failure:
                    raise OpError(failure[0], failure[1] or error_type, source_fault=failure[2])
            op["result"] = await getattr(self, f"_{op['kind']}")(op["version"], body)
            op["state"] = "succeeded"
        except (OpError, ContractError) as exc:
            op.update(
                state="failed",
                error=exc.message,
                errorType=exc.error_type,
                sourceFault=getattr(exc, "source_fault", None),
            )
            kept = getattr(exc, "result", None)
            if kept is not None:
                op["result"] = kept  # kept on failure, as the agent does (verify, evaluate)
        except Exception as exc:  # a fake must never wedge: report it
            log.exception("operation crashed")
            op.update(state="failed", error=f"internal: {exc}", errorType="internal")
        finally:
            op["finishedAt"] = timeutil.iso(timeutil.now())

    async def _stage(self, version: str, body: dict[str, Any]) -> dict[str, Any]:
        uri: str = body["uri"]
        if not any(uri.startswith(prefix) for prefix in self.allow):
            raise OpError(f"{uri} is not allowed", "source_not_allowed")
        known = self.slots.on_disk.get(version)
        if known is not None and body.get("sha256") in (None, known.digest):
            return {"version": version, "digest": known.digest, "noop": True}
        path = Path(uri.removeprefix("file://"))
        if uri.startswith("file://") and not path.exists():
            raise OpError(f"{uri} does not exist", "source_unavailable", source_fault="gone")  # as the agent
        if not uri.startswith("file://") or not path.is_dir():
            raise OpError(f"source {uri} is not a folder", "source_unavailable")
        digest = await asyncio.to_thread(folder_digest, path)
        self.slots.stage(version, digest, body.get("sha256"), path=str(path))
        return {"version": version, "digest": digest, "noop": False}

    async def _preload(self, version: str, body: dict[str, Any]) -> dict[str, Any]:
        disk = self.slots.on_disk.get(version)
        if (
            disk is not None
            and disk.path
            and (Path(disk.path) / "BROKEN").exists()
            and self.slots.active != version
        ):
            raise OpError("invalid_model: weights are not finite (NaN in classifier.weight)", "invalid_model")
        noop = self.slots.active == version
        record = self.slots.preload(version)
        return {"version": version, "digest": record.digest, "noop": noop}

    def _swapped(self, before: str | None, result: SwapResult, via: str) -> dict[str, Any]:
        assert result.active is not None
        self.last_activation = {
            "version": result.active.version,
            "fromVersion": before,
            "at": timeutil.iso(timeutil.now()),
            "mode": "inplace",
            "pauseMs": result.pause_ms,
            "via": via,
        }
        self.activations.append(self.last_activation)
        return {k: v for k, v in self.last_activation.items() if k != "at"}

    async def _activate(self, version: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.slots.active == version:
            return {"version": version, "noop": True, "mode": "noop"}
        before = self.slots.active
        return self._swapped(before, self.slots.activate(version), "activate")

    async def _rollback(self, version: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.slots.active == version:
            return {"version": version, "noop": True, "via": "noop"}
        if self.slots.previous != version:
            await self._preload(version, body)  # the BROKEN check, as a reload from disk would do
        before = self.slots.active
        result, via = self.slots.rollback(version)
        return self._swapped(before, result, via)

    async def _verify(self, version: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """The canaries through the data plane (``staged: false``) or scored with the server's
        staged version (``staged: true``, before it serves): a wrong ranking is the version's fault
        (``canary_failed``); another version answering, or none staged, the pod's."""
        staged = bool(body.get("staged"))
        held = self.slots.staged if staged else self.slots.active
        if staged and (held is None or (version and held != version)):
            raise OpError(
                f"{version or 'a version'} is not staged on the server (staged: {held})", "not_staged"
            )
        if version and held != version:
            raise OpError(f"scored by version {held!r}, expected {version!r}", "verify_failed")
        for case in body.get("canary") or []:
            scores = self.scores(held, case["query"], case["documents"])
            top = max(range(len(scores)), key=lambda i: scores[i])
            if case.get("expectTop") is not None and top != case["expectTop"]:
                raise OpError(
                    f"canary failed for {held}: document {top} ranked first, expected {case['expectTop']}",
                    "canary_failed",
                )
        return {"version": held, "ok": True, "target": "staged" if staged else "active"}

    def scores(self, version: str | None, query: str, documents: list[Any]) -> list[float]:
        """``version``'s scores: the lexical scorer, negated for a version the script's ``invert``
        names (a model that loads and passes a one-case canary scripted away, but ranks worse)."""
        values = [score(query, d) for d in documents]
        if version is not None and version in self.script().get("invert", []):
            return [-v for v in values]
        return values

    async def _evaluate(self, version: str, body: dict[str, Any]) -> dict[str, Any]:
        """The contract's ``/v1/evaluate``: the labelled set scored with ``version`` (staged, active or
        previous) and with the active version; the gate applied when ``floor``/``maxDrop`` are given."""
        held = {self.slots.staged, self.slots.active, self.slots.previous}
        if version not in held:
            raise OpError(
                f"{version} is not loaded on the server (staged: {self.slots.staged})", "not_staged"
            )
        cases = body.get("set") or []
        metric, k = body.get("metric", "ndcg"), body.get("k", 10)
        relevance = [c["relevance"] for c in cases]

        def measure(v: str) -> dict[str, Any]:
            scored = [self.scores(v, c["query"], c["documents"]) for c in cases]
            mean, per_case = ranking.set_metric(metric, scored, relevance, k)
            return {"version": v, "score": round(mean, 6), "perCase": [round(x, 6) for x in per_case]}

        candidate = measure(version)
        active = self.slots.active
        baseline = measure(active) if active is not None else None
        delta = round(candidate["score"] - baseline["score"], 6) if baseline else None
        problems = []
        floor, max_drop = body.get("floor"), body.get("maxDrop")
        if floor is not None and candidate["score"] < floor:
            problems.append(f"{metric}@{k} {candidate['score']:.4f} is below the floor {floor}")
        if max_drop is not None and delta is not None and -delta > max_drop:
            problems.append(f"{metric}@{k} dropped {-delta:.4f} below {active} (maxDrop {max_drop})")
        result = {
            "version": version,
            "metric": metric,
            "k": k,
            "candidate": candidate,
            "baseline": baseline,
            "delta": delta,
            "floor": floor,
            "maxDrop": max_drop,
            "passed": not problems,
            "problems": problems,
        }
        if problems:
            raise OpError(f"quality gate failed for {version}: {problems[0]}", "quality_failed", result)
        return result

    async def boot(self) -> None:
        if self.boot_file is None or not self.boot_file.exists():
            return
        spec = json.loads(self.boot_file.read_text())
        version, source = spec["version"], spec["source"]
        op, _ = self.submit("boot", version, {})
        self._task = None
        try:
            await self._stage(version, {"uri": source["uri"], "sha256": source.get("sha256")})
            await self._preload(version, {})
            await self._activate(version, {})
            op["state"] = "succeeded"
        except (OpError, ContractError) as exc:
            op.update(
                state="failed",
                error=exc.message,
                errorType=exc.error_type,
                sourceFault=getattr(exc, "source_fault", None),
            )
        op["finishedAt"] = timeutil.iso(timeutil.now())

    def status(self) -> dict[str, Any]:
        status = self.slots.agent_status(
            self.name,
            agent={"startedAt": self.started_at, "fake": True},
            operation=self.latest,
            history=self.history,
            last_activation=self.last_activation,
        )
        # "activations" is the fake's own addition (not in the contract): tests count swaps with it.
        return {**status.wire(), "activations": self.activations}


def score(query: str, doc: Any) -> float:
    """A lexical stand-in for a cross-encoder: shared word stems (4 letters), a little length penalty."""
    text = doc["text"] if isinstance(doc, dict) else str(doc)
    q = {w[:4] for w in re.findall(r"\w+", query.lower())}
    d = [w[:4] for w in re.findall(r"\w+", text.lower())]
    return (len(q & set(d)) + 0.5) / (1.0 + 0.01 * len(d))


# ------------------------------------------------------------------------------------------- apps


POD = web.AppKey("pod", FakePod)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def agent_app(pod: FakePod) -> web.Application:
    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in ("/healthz", "/metrics"):
            return await handler(request)
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), pod.token.encode()):
            return web.json_response(
                {"error": "missing or wrong bearer token", "error_type": "unauthorized"}, status=401
            )
        return await handler(request)

    async def status(request: web.Request) -> web.Response:
        return web.json_response(pod.status())

    def operation(kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            body = await request.json()
            version = body.get("version") if kind != "verify" else body.get("expectVersion")
            op, code = pod.submit(kind, version, body)
            return web.json_response({"operation": op}, status=code)

        return handler

    app = web.Application(middlewares=[auth])
    app[POD] = pod
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/status", status)
    for kind in ("stage", "preload", "activate", "rollback", "verify", "evaluate"):
        app.router.add_post(f"/v1/{kind}", operation(kind))
    return app


def data_app(pod: FakePod) -> web.Application:
    async def rerank(request: web.Request) -> web.Response:
        route = request.path
        if pod.slots.active is None:
            pod.requests[(route, "503")] += 1
            return web.json_response({"error": "no model active", "error_type": "not_ready"}, status=503)
        version = pod.slots.active
        if pod.injected_error(version):
            pod.requests[(route, "500")] += 1
            return web.json_response({"error": "injected failure", "error_type": "internal"}, status=500)
        body = await request.json()
        docs = body.get("texts") or body.get("documents") or []
        scores = pod.scores(version, body.get("query", ""), docs)
        pod.requests[(route, "200")] += 1
        headers = {VERSION_HEADER: version}
        if route == "/rerank":
            ranked = sorted(
                ({"index": i, "score": s} for i, s in enumerate(scores)), key=lambda r: -r["score"]
            )
            return web.json_response(ranked, headers=headers)
        results = sorted(
            ({"index": i, "relevance_score": s} for i, s in enumerate(scores)),
            key=lambda r: -r["relevance_score"],
        )
        return web.json_response(
            {"id": secrets.token_hex(8), "model": version, "results": results}, headers=headers
        )

    async def readyz(request: web.Request) -> web.Response:
        ok = pod.slots.active is not None
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def info(request: web.Request) -> web.Response:
        return web.json_response({"version": pod.slots.active})

    async def metrics(request: web.Request) -> web.Response:
        lines = ["# TYPE hotswap_requests_total counter"]
        for (route, code), n in sorted(pod.requests.items()):
            lines.append(f'hotswap_requests_total{{route="{route}",status="{code}"}} {float(n)}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    app = web.Application()
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        app.router.add_post(path, rerank)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/info", info)
    return app


async def serve(args: argparse.Namespace) -> None:
    pod = FakePod(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runners = []
    for app, port in ((agent_app(pod), args.port), (data_app(pod), args.data_port)):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, port).start()
        runners.append(runner)
    started = time.monotonic()
    await pod.boot()
    log.info("fake pod %s up on %s in %.2fs", pod.name, args.host, time.monotonic() - started)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.localcluster.fakepod")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=9090, help="agent API port")
    parser.add_argument("--data-port", type=int, default=8080, help="data plane port")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--pod-name", required=True)
    parser.add_argument("--boot-file")
    parser.add_argument("--script")
    parser.add_argument("--allow", action="append")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
