"""The plain baseline: the hand-written reranker server most people start with.

One aiohttp app, one model, an ``asyncio.Lock`` around a per-request forward run in a thread:
no batching across requests, so each forward sees only that request's pairs. It loads and
scores with the same code as ``hotswap-server`` (same weights, tokenizer, truncation), so the
comparison is about serving, nothing else. Run as
``python -m bench.baseline_server --model DIR --port P [--device cpu|cuda] [--dtype float32|float16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from aiohttp import web


def create_app(model: Path, device: str, dtype: str) -> web.Application:
    import torch
    from hotswap_server.devices import resolve_placement
    from hotswap_server.modelload import load_version
    from hotswap_server.scoring import runner_for

    placement = resolve_placement(device, dtype)  # type: ignore[arg-type]
    loaded = load_version(model.name, model, placement.dtype, pin_memory=placement.is_cuda)
    loaded.module.to(placement.device)
    runner = runner_for(loaded)
    lock = asyncio.Lock()

    async def rerank(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        query, texts = body["query"], body["texts"]
        async with lock:
            raw, _tokens = await asyncio.to_thread(runner.score, [query] * len(texts), texts)
        scores = torch.sigmoid(torch.from_numpy(raw)).tolist()
        ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
        return web.json_response([{"index": i, "score": scores[i]} for i in ranked])

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/rerank", rerank)
    app.router.add_get("/readyz", readyz)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.baseline_server", description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args(argv)
    web.run_app(
        create_app(args.model, args.device, args.dtype),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
