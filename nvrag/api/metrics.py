"""Prometheus metrics of one API server (prometheus-client, its own registry): requests by route and status,
latency, requests in flight, requests refused at the door, embedding inputs per request, tokens embedded, and
for each model its forward passes' rows and requests (dynamic batching), its queue, and how long work waited
for the model and then ran on it. Served at GET /metrics.

Every label comes from a fixed set (route templates, the standard methods, status codes, served models), so
no client can grow the exposition by sending made-up paths or methods."""

from __future__ import annotations

import time
import weakref
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nvrag.embedder.scheduler import Scheduler
from nvrag.reranker.scheduler import RerankScheduler

Watched = TypeVar("Watched", Scheduler, RerankScheduler)  # a served model's scheduler: an embedder's or a reranker's

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nvrag_requests",
            "HTTP requests by route and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nvrag_request_seconds",
            "Time to answer a request, by route.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.in_flight = Gauge("nvrag_requests_in_flight", "Requests being answered now.", registry=self.registry)
        self.inputs = Histogram(
            "nvrag_embedding_inputs",
            "Texts per embeddings request.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
            registry=self.registry,
        )
        self.tokens = Counter("nvrag_tokens_embedded", "Tokens embedded, by model.", ["model"], registry=self.registry)
        sizes = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
        self.forward_rows = Histogram(
            "nvrag_forward_batch_rows", "Rows per forward pass.", ["model"], buckets=sizes, registry=self.registry
        )
        self.forward_requests = Histogram(
            "nvrag_forward_batch_requests",
            "Requests whose rows shared one forward pass (dynamic batching).",
            ["model"],
            buckets=sizes,
            registry=self.registry,
        )
        self.queued = Gauge(
            "nvrag_queued_requests", "Embedding requests waiting for a model.", ["model"], registry=self.registry
        )
        self.queued_tokens = Gauge(
            "nvrag_queued_tokens", "Tokens waiting for a model.", ["model"], registry=self.registry
        )
        self.queue_seconds = Histogram(
            "nvrag_queue_seconds",
            "Time embedding work waited for its first forward pass, by model.",
            ["model"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.compute_seconds = Histogram(
            "nvrag_compute_seconds",
            "Time from embedding work's first forward pass to its last, by model.",
            ["model"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.refused = Counter(
            "nvrag_refused_requests",
            "Requests refused with 429 before any work, by reason.",
            ["reason"],
            registry=self.registry,
        )

    def watch(self, embedder: Watched) -> Watched:
        """Report a model's batches, queue, waits and tokens (the scheduler's hooks; gauges read at scrape
        time)."""
        name = embedder.name
        rows, requests = self.forward_rows.labels(name), self.forward_requests.labels(name)
        waited, ran = self.queue_seconds.labels(name), self.compute_seconds.labels(name)
        tokens = self.tokens.labels(name)

        def on_batch(n_rows: int, n_requests: int) -> None:
            rows.observe(n_rows)
            requests.observe(n_requests)

        def on_job(wait: float, run: float, embedded: int) -> None:
            waited.observe(wait)
            ran.observe(run)
            tokens.inc(embedded)  # every caller's: /v1/embeddings, searches, documents, MCP, the page

        embedder.queue.on_batch, embedder.queue.on_job = on_batch, on_job
        # weakly: a model the pool unloads is freed, and then shows nothing queued
        watched = weakref.ref(embedder)
        self.queued.labels(name).set_function(lambda: e.queued if (e := watched()) is not None else 0)
        self.queued_tokens.labels(name).set_function(lambda: e.queued_tokens if (e := watched()) is not None else 0)
        return embedder

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Count and time every HTTP request, labelled with its route template (never the raw path)."""

        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            status = 500
            started = time.perf_counter()

            async def sending(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            self.in_flight.inc()
            try:
                await app(scope, receive, sending)
            finally:
                self.in_flight.dec()
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                method = scope["method"] if scope["method"] in METHODS else "other"
                self.requests.labels(route, method, str(status)).inc()
                self.latency.labels(route).observe(time.perf_counter() - started)

        return measured
