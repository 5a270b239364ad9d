"""Benchmarks: ``python -m bench.run`` (``make bench``) measures the server and writes docs/BENCHMARKS.md.

Modules:

- :mod:`bench.workload` — the seeded queries and documents every measurement uses (no torch);
- :mod:`bench.models` — the model under test: MiniLM-sized on CPU, bge-reranker-v2-m3-shaped on CUDA;
- :mod:`bench.load` — the load generator, run as its own process (asyncio + aiohttp);
- :mod:`bench.baseline_server` — the plain lock-around-a-forward server it is compared against;
- :mod:`bench.server_bench` — the measurements: raw ceiling, throughput, swap under load;
- :mod:`bench.report` — targets, markdown, and the per-device section of BENCHMARKS.md;
- :mod:`bench.run` — the command line.
"""
