"""What the HTTP API serves (APIContext): the store, the models and rerankers, the indexes exposed, the door's
settings, readiness and metrics. The composition root (app/serving.py) builds it; the routes read it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from nvrag.api.limits import DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_INPUTS, DEFAULT_MAX_RERANK_DOCUMENTS
from nvrag.api.metrics import Metrics
from nvrag.embedder import Embedder
from nvrag.errors import NvRagError
from nvrag.indexer import IndexReport, IndexRequest
from nvrag.reranker import Reranker
from nvrag.retriever import Retriever
from nvrag.store import Store


@dataclass
class APIContext:
    """What the API serves: the store, the models it embeds with (registry names, loaded on demand by
    ``embedder_for``), a retriever per index, which indexes are exposed (None: all), the API key, and the
    door's settings: the Host names answered (None: any), the web origins allowed to call (CORS and writes),
    and the requests admitted at once; the rerankers served (by name)."""

    store: Store
    models: Sequence[str]
    embedder_for: Callable[[str], Embedder]
    retriever_for: Callable[[str], Retriever]
    indexes: Sequence[str] | None = None
    run_index: Callable[[IndexRequest], IndexReport] | None = None  # None: documents cannot be written
    # (index, document ids, origins or None) -> chunks removed; None: delete_documents on the store
    delete_documents: Callable[[str, Sequence[str], set[str] | None], int] | None = None
    drop_index: Callable[[str], int] | None = None  # index -> rows it had; None: manage.drop_index on the store
    api_key: str | None = None
    max_inputs: int = DEFAULT_MAX_INPUTS
    allowed_hosts: frozenset[str] | None = None
    allowed_origins: frozenset[str] = frozenset()
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    ready: threading.Event = field(default_factory=threading.Event)
    failed: str | None = None  # why warming up failed: /ready says so
    on_ready: Callable[[str | None], None] | None = None  # told None once ready, or the reason it cannot be
    metrics: Metrics = field(default_factory=Metrics)
    rerankers: Mapping[str, Reranker] = field(default_factory=dict)  # by name: what /v1/rerank serves
    max_rerank_documents: int = DEFAULT_MAX_RERANK_DOCUMENTS

    def warm(self) -> None:
        """Load every served model and run a real forward pass through it (queries and documents), open the
        store and each served index: /ready (and /health) answer 200 only then, so the first request after
        ready is as fast as a warm one."""
        try:
            for name in self.models:
                embedder = self.embedder_for(name)
                embedder.embed_documents(["warm-up"])
                embedder.embed_queries(["warm-up"])
            for reranker in self.rerankers.values():
                reranker.score("warm-up", ["warm-up"])
            for index in self.store.list_indexes():
                if self.indexes is None or index in self.indexes:
                    self.retriever_for(index)
        except NvRagError as exc:
            self.failed = str(exc)
        except Exception as exc:  # anything else also leaves the server unready, saying why
            self.failed = f"warming up failed: {type(exc).__name__}: {exc}"
        else:
            self.ready.set()
        if self.on_ready is not None:
            self.on_ready(self.failed)
