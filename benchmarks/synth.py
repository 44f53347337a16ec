"""Benchmark `sftlab synth` end to end against a local server with fixed latency.

    .venv/bin/python benchmarks/synth.py                        # 4000 requests, 100 ms, 32
    .venv/bin/python benchmarks/synth.py --requests 1000 --latency 0.1 --concurrency 32

A scripted OpenAI-compatible server (uvicorn, in its own process) answers every chat
request after ``--latency`` seconds with a distinct JSON problem. The run generates
``--requests`` rows (no judge, no re-solve; dedupe and decontamination on), so the
ideal is ``concurrency / latency`` requests per second (320 at 32 x 100 ms); the
client must not be the bottleneck. Printed: requests per second for a cold run (every
request asked and cached) and the time of a warm re-run (every answer from the cache).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _serve(port: int, latency: float) -> None:
    sys.path.insert(0, str(REPO))
    from tests.synth_server import ScriptedServer

    def answer(body: dict, attempt: int) -> str:
        seed = body["seed"]
        return json.dumps({"problem": f"Problem {seed}: {body['messages'][0]['content'][:40]} "
                                      f"with {seed % 97} apples and {seed % 89} pears?",
                           "reasoning": "Count them.", "answer": str(seed % 1000)})

    server = ScriptedServer(answer, latency=latency, port=port)
    while True:
        time.sleep(3600)
    server.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    import httpx

    from sftlab.synth.pipeline import run_synth
    from sftlab.synth.spec import parse_spec

    port = _free_port()
    proc = multiprocessing.get_context("spawn").Process(target=_serve,
                                                        args=(port, args.latency), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(200):
        try:
            httpx.get(url + "/models", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    conditions = 8
    spec = parse_spec({
        "conditions": {"field": [f"field{i}" for i in range(conditions)]},
        "per_condition": -(-args.requests // conditions),
        "prompt": "Write a new {field} problem.",
        "generator": {"base_url": url, "model": "bench", "concurrency": args.concurrency},
        "dedupe": {"threshold": 0.9}, "decontaminate": {"files": []},
    })
    n = spec.per_condition * conditions
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start, cpu, server_cpu = time.perf_counter(), time.process_time(), _cpu_seconds(proc.pid)
            cold = run_synth(spec, Path(tmp) / "out")
            cold_s, cold_cpu = time.perf_counter() - start, time.process_time() - cpu
            server_cpu = _cpu_seconds(proc.pid) - server_cpu
            start = time.perf_counter()
            warm = run_synth(spec, Path(tmp) / "out")
            warm_s = time.perf_counter() - start
    finally:
        proc.terminate()
    ideal = args.concurrency / args.latency
    print(f"{n} requests, latency {args.latency * 1000:.0f} ms, concurrency {args.concurrency}:"
          f" cold {cold_s:.2f} s = {n / cold_s:.0f} requests/s end to end "
          f"(ideal {ideal:.0f}, {100 * n / cold_s / ideal:.0f}%), {cold.totals['kept']} kept, "
          f"CPU per request: client {1000 * cold_cpu / n:.2f} ms, server {1000 * server_cpu / n:.2f}"
          f" ms; "
          f"warm re-run {warm_s:.2f} s ({warm.requests['cache_hits']} from the cache, "
          f"{warm.requests['requests']} asked)")


if __name__ == "__main__":
    main()
