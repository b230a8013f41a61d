"""`nvrag serve` under load, whole server process against a load generator on the same machine (loopback).

    python bench/serve_load.py [--seconds 20] [--clients 1,8,32,200] [--dtype bfloat16]

Builds the demo index with the bundled model in a temporary data directory, starts `nvrag serve`, waits for
/ready, then measures, each for --seconds:

- queries: N clients each sending one-line `/v1/search` requests back to back; requests/s, tokens/s (from the
  server's own token counter), p50/p99 latency of the answered ones, how many got 429, and the slowest /health
  answer measured alongside;
- documents: N clients each sending `/v1/embeddings` requests of 16 passages of about 100 words;
- head of line: one maximal `/v1/embeddings` request (2,048 inputs of 900 words, inside every limit) and, while
  it runs, one-word searches one after another: their p50 and max latency, and how long the maximal one took.

The load generator (asyncio + httpx) shares the machine's CPUs with the server, so the figures are lower bounds
of what a remote client would see. Prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo" / "stdlib.jsonl"
MODEL = "all-MiniLM-L6-v2"
QUERIES = ["compute a digest of a file", "run a shell command", "parse json", "temporary directory", "sort a list"]
PASSAGE = " ".join(f"word{j % 97}" for j in range(100))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def server_buckets(url: str, route: str) -> dict[float, float]:
    """The server's own latency histogram for ``route`` (cumulative counts by upper bound, all statuses)."""
    buckets: dict[float, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("nvrag_request_seconds_bucket") and f'route="{route}"' in line:
            bound = line.split('le="')[1].split('"')[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.split()[-1])
    return buckets


def server_percentile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The upper bound of the histogram bucket holding the q-th percentile of the requests between two scrapes."""
    counts = {b: after[b] - before.get(b, 0.0) for b in sorted(after)}
    total = counts.get(float("inf"), 0.0)
    return next((b for b, c in counts.items() if total and c >= q * total), float("nan"))


def tokens_embedded(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("nvrag_tokens_embedded_total"))


async def health_watch(url: str, stop: asyncio.Event, worst: list[float]) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            await client.get(f"{url}/health")
            worst.append(time.perf_counter() - started)
            await asyncio.sleep(0.2)


async def flood(url: str, clients: int, seconds: float, kind: str) -> dict[str, float]:
    latencies: list[float] = []
    refused = 0
    errors = 0
    stop = asyncio.Event()
    health: list[float] = []
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def client_loop(client: httpx.AsyncClient, n: int) -> None:
        nonlocal refused, errors
        i = n
        while not stop.is_set():
            i += clients
            if kind == "queries":
                path, body = "/v1/search", {"index": "demo", "query": QUERIES[i % len(QUERIES)] + f" {i}", "k": 5}
            else:
                path, body = "/v1/embeddings", {"model": MODEL, "input": [f"{i} {j} {PASSAGE}" for j in range(16)]}
            started = time.perf_counter()
            try:
                answer = await client.post(url + path, json=body)
            except httpx.HTTPError:
                errors += 1
                continue
            if answer.status_code == 200:
                latencies.append(time.perf_counter() - started)
            elif answer.status_code == 429:
                refused += 1
                await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
            else:
                errors += 1

    before = tokens_embedded(url)
    route = "/v1/search" if kind == "queries" else "/v1/embeddings"
    buckets = server_buckets(url, route)
    # one client (one connection) per simulated user: a shared httpx pool of hundreds of connections spends
    # seconds per request managing itself, which would be measured as the server's latency
    async with contextlib.AsyncExitStack() as stack:
        pool = [await stack.enter_async_context(httpx.AsyncClient(timeout=120, limits=limits)) for _ in range(clients)]
        watcher = asyncio.create_task(health_watch(url, stop, health))
        tasks = [asyncio.create_task(client_loop(pool[n], n)) for n in range(clients)]
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks, watcher)
        elapsed = time.perf_counter() - started
    tokens = tokens_embedded(url) - before
    after = server_buckets(url, route)
    return {
        "server_p50": server_percentile(buckets, after, 0.5),
        "server_p99": server_percentile(buckets, after, 0.99),
        "clients": clients,
        "answered": len(latencies),
        "rps": len(latencies) / elapsed,
        "tokens_s": tokens / elapsed,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "refused": refused,
        "errors": errors,
        "health_max": max(health) if health else float("nan"),
    }


async def head_of_line(url: str) -> dict[str, float]:
    big = {"model": MODEL, "input": [f"{i} " + " ".join(f"w{j}" for j in range(900)) for i in range(2048)]}
    small: list[float] = []
    async with httpx.AsyncClient(timeout=1200) as client:
        started = time.perf_counter()
        task = asyncio.create_task(client.post(f"{url}/v1/embeddings", json=big))
        await asyncio.sleep(1.0)
        while not task.done():
            t = time.perf_counter()
            answer = await client.post(f"{url}/v1/search", json={"index": "demo", "query": "hash", "k": 3})
            if answer.status_code == 200 and not task.done():
                small.append(time.perf_counter() - t)
            await asyncio.sleep(0.1)
        answer = task.result()
        big_seconds = time.perf_counter() - started
    assert answer.status_code == 200, answer.text[:300]
    return {"big_s": big_seconds, "small_n": len(small), "small_p50": percentile(small, 0.5), "small_max": max(small)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", default="1,8,32,200")
    parser.add_argument("--dtype", default=None, help="the server's --dtype (default: its own choice)")
    parser.add_argument("--skip-head-of-line", action="store_true")
    parser.add_argument("--kinds", default="queries,documents")
    parser.add_argument("--server-args", default="", help="more `nvrag serve` options, as one string")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="nvrag-serve-load-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
        env.update(HF_HUB_OFFLINE="1", NVRAG_DB=str(Path(tmp) / "db"), GRADIO_ANALYTICS_ENABLED="False")
        nvrag = [sys.executable, "-m", "nvrag"]
        subprocess.run([*nvrag, "index", str(DEMO), "--index", "demo", "--model", MODEL], env=env, check=True,
                       capture_output=True)  # fmt: skip
        port = free_port()
        extra = (["--dtype", args.dtype] if args.dtype else []) + args.server_args.split()
        server = subprocess.Popen([*nvrag, "serve", "--port", str(port), *extra], env=env, stderr=subprocess.PIPE,
                                  text=True)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and server.poll() is None, "the server never became ready"
                time.sleep(0.2)
            machine = platform.processor() or platform.machine()
            print(f"machine: {machine}, {os.cpu_count()} CPUs; server dtype {args.dtype or 'default'}; "
                  f"{args.seconds:.0f} s per row; load generator on the same machine; "
                  f"server options {args.server_args!r}")  # fmt: skip
            print(
                "\n| load | clients | answered/s | tokens/s | p50 ms | p99 ms | server p50 / p99 ms (bucket) | 429s "
                "| errors | slowest /health ms |"
            )
            print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
            for kind in args.kinds.split(","):
                for n in clients:
                    r = asyncio.run(flood(url, n, args.seconds, kind))
                    print(
                        f"| {kind} | {n} | {r['rps']:.1f} | {r['tokens_s']:.0f} | {1000 * r['p50']:.0f} | "
                        f"{1000 * r['p99']:.0f} | <= {1000 * r['server_p50']:.0f} / <= {1000 * r['server_p99']:.0f} | "
                        f"{r['refused']:.0f} | {r['errors']:.0f} | "
                        f"{1000 * r['health_max']:.0f} |",
                        flush=True,
                    )
            if not args.skip_head_of_line:
                h = asyncio.run(head_of_line(url))
                print(
                    f"\nhead of line: a maximal /v1/embeddings request (2,048 x 900 words) took {h['big_s']:.1f} s; "
                    f"{h['small_n']:.0f} one-word searches sent meanwhile: p50 {1000 * h['small_p50']:.0f} ms, "
                    f"max {1000 * h['small_max']:.0f} ms"
                )
        finally:
            server.terminate()
            server.communicate(timeout=60)


if __name__ == "__main__":
    main()
