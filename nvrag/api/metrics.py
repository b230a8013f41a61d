"""Prometheus metrics of one API server (prometheus-client, its own registry): requests by route and status,
latency, requests in flight, embedding inputs per request, tokens embedded, and for each model its forward
passes' rows and requests (dynamic batching) and its queue. Served at GET /metrics."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nvrag.embedder.coalescing import CoalescingEmbedder

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


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

    def watch(self, embedder: CoalescingEmbedder) -> CoalescingEmbedder:
        """Report a coalescing embedder's batches and queue (its on_batch hook, a gauge read at scrape time)."""
        name = embedder.name
        rows, requests = self.forward_rows.labels(name), self.forward_requests.labels(name)

        def on_batch(n_rows: int, n_requests: int) -> None:
            rows.observe(n_rows)
            requests.observe(n_requests)

        embedder.on_batch = on_batch
        self.queued.labels(name).set_function(lambda: embedder.queued)
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
                self.requests.labels(route, scope["method"], str(status)).inc()
                self.latency.labels(route).observe(time.perf_counter() - started)

        return measured
