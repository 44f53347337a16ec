"""Benchmark `sftlab synth` end to end against a local server with fixed latency.

    .venv/bin/python benchmarks/synth.py                        # 4000 requests, 100 ms, 32
    .venv/bin/python benchmarks/synth.py --requests 1000 --latency 0.1 --concurrency 32

A local OpenAI-compatible server, in its own process, answers every chat request after
``--latency`` seconds with a distinct JSON problem. The run generates ``--requests``
rows (no judge, no re-solve; dedupe and decontamination on), so the ideal is
``concurrency / latency`` requests per second (320 at 32 x 100 ms); the client must
not be the bottleneck. Printed: requests per second for a cold run (every request
asked and cached) and the time of a warm re-run (every answer from the cache).

Two servers, side by side (``--server``): ``lean`` (default; stdlib asyncio, about
0.1 ms of CPU per request, so the client is what is measured) and ``fastapi`` (the
test suite's scripted FastAPI/uvicorn server; on h11 it costs about 0.8 ms of CPU per
request and, on two cores shared with the client, caps the run near 200 requests/s).
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


def _answer(body: dict) -> str:
    seed = body["seed"]
    return json.dumps({"problem": f"Problem {seed}: {body['messages'][0]['content'][:40]} "
                                  f"with {seed % 97} apples and {seed % 89} pears?",
                       "reasoning": "Count them.", "answer": str(seed % 1000)})


def _serve_fastapi(port: int, latency: float) -> None:
    sys.path.insert(0, str(REPO))
    from tests.synth_server import ScriptedServer

    server = ScriptedServer(lambda body, attempt: _answer(body), latency=latency, port=port)
    while True:
        time.sleep(3600)
    server.close()


def _serve_lean(port: int, latency: float) -> None:
    """HTTP/1.1 keep-alive on asyncio streams: POST /v1/chat/completions, GET /v1/models."""
    import asyncio

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = json.loads(await reader.readexactly(length)) if length else {}
                if head.startswith(b"POST"):
                    await asyncio.sleep(latency)
                    message = {"role": "assistant", "content": _answer(body)}
                    payload = {"id": "x", "object": "chat.completion", "model": body.get("model"),
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": message}]}
                else:
                    payload = {"data": [{"id": "bench"}]}
                data = json.dumps(payload).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(data), data))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=2048)
        await server.serve_forever()

    asyncio.run(main())


SERVERS = {"lean": _serve_lean, "fastapi": _serve_fastapi}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bench(server: str, args: argparse.Namespace) -> dict:
    import httpx

    from sftlab.synth.pipeline import run_synth
    from sftlab.synth.spec import parse_spec

    port = _free_port()
    proc = multiprocessing.get_context("spawn").Process(target=SERVERS[server],
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
    return {"server": server, "requests": n, "seconds": round(cold_s, 3),
            "requests_per_s": round(n / cold_s, 1), "kept": cold.totals["kept"],
            "client_cpu_ms": round(1000 * cold_cpu / n, 3),
            "server_cpu_ms": round(1000 * server_cpu / n, 3),
            "warm_seconds": round(warm_s, 3), "warm_cache_hits": warm.requests["cache_hits"],
            "warm_asked": warm.requests["requests"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--server", choices=[*SERVERS, "both"], default="both",
                        help="the local server to run against (default: both, one after the other)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    servers = list(SERVERS) if args.server == "both" else [args.server]
    ideal = args.concurrency / args.latency
    results = []
    for server in servers:
        r = _bench(server, args)
        results.append(r)
        if not args.json:
            print(f"{server:>7} server: {r['requests']} requests, latency "
                  f"{args.latency * 1000:.0f} ms, concurrency {args.concurrency}: cold "
                  f"{r['seconds']:.2f} s = {r['requests_per_s']:.0f} requests/s end to end "
                  f"(ideal {ideal:.0f}, {100 * r['requests_per_s'] / ideal:.0f}%; goal 250), "
                  f"{r['kept']} kept, CPU per request: client {r['client_cpu_ms']:.2f} ms, "
                  f"server {r['server_cpu_ms']:.2f} ms; warm re-run {r['warm_seconds']:.2f} s "
                  f"({r['warm_cache_hits']} from the cache, {r['warm_asked']} asked)", flush=True)
    if args.json:
        print(json.dumps({"ideal_requests_per_s": ideal, "goal_requests_per_s": 250,
                          "runs": results}, indent=1))


if __name__ == "__main__":
    main()
