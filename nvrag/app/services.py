"""The services of a process that serves (`nvrag serve`, `nvrag ui`, `nvrag mcp`): built once by wiring and
shared by every surface it runs (the API, MCP, the page, uploads), instead of one cache per surface.

- A model pool: one loaded embedder per model and purpose, under one lock (two surfaces asking at once load it
  once). A server shares one instance per model for queries and documents, behind its scheduler; the standalone
  page keeps the query-only load for searches (float32 NumPy queries on a CPU) and a document load for uploads.
  Several models stay loaded at once within a memory budget (``max_model_bytes``: what their weights take once
  loaded): loading one that would go over it first unloads the least recently used others; one larger than
  the whole budget is refused (ModelMemoryError, naming both sizes) when the budget was given; under the
  default budget it is loaded alone (its weights are mapped from the file, so the page cache can share them).
- A retriever pool: one Retriever per index, reopened when the index's manifest changes (every write stamps
  it), keeping the loaded model when the model is the same; an unloaded model's retrievers go with it.
- The indexes a surface may show, and indexing runs (uploads, API documents) with the pooled models.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from nvrag.app.settings import Settings
from nvrag.embedder import Embedder
from nvrag.embedder.matryoshka import matryoshka
from nvrag.embedder.names import NVEMBED_NAME
from nvrag.embedder.pinning import weights_for_index
from nvrag.errors import IndexNotFoundError, ModelMemoryError
from nvrag.indexer import Indexer, IndexReport, IndexRequest
from nvrag.indexer.engine import delete_documents
from nvrag.indexer.manage import drop_index
from nvrag.retriever import Retriever
from nvrag.schema import IndexManifest
from nvrag.store import Store
from nvrag.store.visibility import check_visible, visible_indexes

Purpose = Literal["queries", "documents"]
Loader = Callable[[str, Path | None, Purpose], Embedder]  # (model, weights folder, purpose) -> a loaded model
ModelKey = tuple[str, Purpose]


class Services:
    """See the module. ``load`` loads a model (wiring's, with the settings); ``shared``: one instance per model
    serves both purposes (a server); ``served``: the model (and weights folder) of new indexes and of
    /v1/embeddings; ``indexes``: the indexes shown (None: all); ``max_model_bytes``: the model pool's memory
    budget (None: no bound); ``refuse_oversized``: a model larger than the whole budget is refused (a budget the
    user gave) rather than loaded alone (the default one)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        load: Loader,
        *,
        served: tuple[str, Path | None] | None = None,
        indexes: Sequence[str] | None = None,
        shared: bool = False,
        max_model_bytes: int | None = None,
        refuse_oversized: bool = True,
    ) -> None:
        self.settings, self.store, self._load = settings, store, load
        self.served = served
        self.indexes = list(indexes) if indexes else None
        self.shared = shared
        self.max_model_bytes, self.refuse_oversized = max_model_bytes, refuse_oversized
        self._lock = threading.RLock()  # loads happen under it: a model loads once, whoever asks first
        self._models: OrderedDict[ModelKey, Embedder] = OrderedDict()  # least recently used first
        self._retrievers: dict[str, tuple[Retriever, ModelKey]] = {}

    # -- models ---------------------------------------------------------------------------------------

    def embedder(
        self, name: str, purpose: Purpose = "queries", revision: str | None = None, weights: Path | None = None
    ) -> Embedder:
        """The pooled model ``name`` for ``purpose`` (loaded on first use, from ``weights`` unless the server
        names its own; reloaded if an index needs another revision of it than the one loaded)."""
        key = self._key(name, purpose)
        with self._lock:
            loaded = self._models.get(key)
            if loaded is None or (revision is not None and loaded.info.revision != revision):
                if loaded is not None:
                    self._unload(key)
                loaded = self._load(name, self._weights(name) or weights, key[1])
                self._make_room(loaded, name)
                self._models[key] = loaded
            self._models.move_to_end(key)
            return loaded

    def _key(self, name: str, purpose: Purpose) -> ModelKey:
        return (name, "documents" if self.shared else purpose)

    def _make_room(self, loading: Embedder, name: str) -> None:
        """Unload the least recently used models until ``loading`` fits the budget beside the rest (its weights
        load on first use, after this); refuse it if it alone is over the budget."""
        budget, size = self.max_model_bytes, loading.weight_bytes or 0
        if budget is None:
            return
        if size > budget and self.refuse_oversized:
            loading.close()
            raise ModelMemoryError(
                f"{name} takes about {_gib(size)} once loaded, more than the model memory budget "
                f"({_gib(budget)}); raise it with --model-memory or NVRAG_MODEL_MEMORY (GiB)"
            )
        while self._models and size + sum(m.weight_bytes or 0 for m in self._models.values()) > budget:
            self._unload(next(iter(self._models)))

    def _unload(self, key: ModelKey) -> None:
        """Drop a model and the retrievers that use it, and stop its scheduler: requests already queued on it
        finish; its memory is returned once the last of them lets go."""
        model = self._models.pop(key)
        for index in [i for i, (_, k) in self._retrievers.items() if k == key]:
            del self._retrievers[index]
        model.close()

    def _index_embedder(self, manifest: IndexManifest, purpose: Purpose) -> Embedder:
        """The pooled model of an index, from the folder it was built from when nothing else names one."""
        weights = weights_for_index(manifest, self._weights(manifest.model))
        loaded = self.embedder(manifest.model, purpose, manifest.model_revision, weights)
        return matryoshka(loaded, manifest.dimension)  # one loaded model, whatever --dimensions its indexes have

    def loaded(self) -> list[Embedder]:
        with self._lock:
            return list(self._models.values())

    def _weights(self, name: str) -> Path | None:
        if self.served is not None and name == self.served[0] and self.served[1] is not None:
            return self.served[1]
        return self.settings.nvembed_path if name == NVEMBED_NAME else None

    # -- indexes ----------------------------------------------------------------------------------------

    def visible(self) -> list[str]:
        return visible_indexes(self.store, self.indexes)

    def check_visible(self, name: str) -> None:
        check_visible(self.store, self.indexes, name)

    def retriever(self, name: str) -> Retriever:
        """The index's retriever: reopened only when a write changed its manifest, so a search neither reloads
        the model nor rereads a FAISS file, and still sees rows added since."""
        current = self.store.manifest(name)
        with self._lock:
            cached = self._retrievers.get(name)
            if cached is None or cached[0].table.manifest != current:
                embedder = self._index_embedder(current, "queries")
                retriever = Retriever(self.store.open(name), embedder)  # checks the pinning
                self._retrievers[name] = (retriever, self._key(current.model, "queries"))
            else:
                self._models.move_to_end(cached[1])  # a search uses its model: it is the last to be unloaded
            return self._retrievers[name][0]

    def run_index(self, request: IndexRequest) -> IndexReport:
        """An indexing run (an upload, API documents) with the pooled model of the index (for a new index, the
        served model)."""
        if self.store.exists(request.index):
            embedder = self._index_embedder(self.store.manifest(request.index), "documents")
        elif self.served is not None:
            embedder = self.embedder(self.served[0], "documents")
        else:
            raise IndexNotFoundError(f"no index named {request.index!r}; create it with nvrag index first")
        report = Indexer(self.store, embedder).run(request)
        if report.chunks_added or report.chunks_removed:
            self.forget(request.index)
        return report

    def delete_documents(self, index: str, doc_ids: Sequence[str], origins: set[str] | None) -> int:
        """Remove documents (of ``origins`` only, when given); searches see it at once."""
        removed = delete_documents(self.store, index, doc_ids, origins=origins)
        if removed:
            self.forget(index)
        return removed

    def drop_index(self, index: str) -> int:
        """Remove an index (manage.drop_index: refused while another process writes it); rows it had."""
        rows = drop_index(self.store, index)
        self.forget(index)
        return rows

    def forget(self, index: str) -> None:
        """Drop the cached retriever of an index this process wrote: a write in the same second as the last
        leaves the manifest unchanged, so the cache cannot tell by the manifest alone."""
        with self._lock:
            self._retrievers.pop(index, None)


def _gib(n: int) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"
