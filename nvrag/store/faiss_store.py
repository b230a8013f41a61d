"""FAISS behind the Store interface (the `faiss` extra). With faiss-gpu installed and a GPU visible, unfiltered
exact searches run on the GPUs (not verified on a GPU machine yet).

Every index keeps an exact ``IndexIDMap2(IndexFlatIP)`` (inner product of normalised vectors = cosine), written
with faiss' own index I/O (never pickle). ``build_ann`` adds an approximate index beside it: HNSW, or IVF-PQ
re-ranked with the full vectors (``IndexRefineFlat``); searches use it when there is no filter.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nvrag.errors import ConfigError
from nvrag.store.sidecar import SidecarStore, VectorIndex, Vectors

ANN_MIN_ROWS = 5000
ANN_NPROBE = 32
ANN_EF = 128


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ConfigError("the FAISS backend needs faiss: pip install 'nvrag[faiss]' (or faiss-gpu)") from exc
    return faiss


class FaissVectors(VectorIndex):
    def __init__(self, path: Path, dimension: int) -> None:
        self.faiss = _faiss()
        self.path, self.ann_path, self.dimension = path, path.with_suffix(".ann.faiss"), dimension
        if path.exists():
            self.index = self.faiss.read_index(str(path))
        else:
            self.index = self.faiss.IndexIDMap2(self.faiss.IndexFlatIP(dimension))
        self.ann = self.faiss.read_index(str(self.ann_path)) if self.ann_path.exists() else None
        # search settings; None: scaled with the index (nprobe: a tenth of the lists, at least 32; efSearch 128)
        self.nprobe: int | None = None
        self.ef: int | None = None
        self._gpu: Any = None  # a GPU copy of the exact index, made on first unfiltered search when a GPU exists

    def add(self, ids: npt.NDArray[np.int64], vectors: Vectors) -> None:
        self._gpu = None
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        if self.ann is not None:
            self.ann.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)

    def remove(self, ids: npt.NDArray[np.int64]) -> None:
        self._gpu = None
        if len(ids):
            self.index.remove_ids(self.faiss.IDSelectorBatch(ids))
            if self.ann is not None:
                self.ann.remove_ids(self.faiss.IDSelectorBatch(ids))

    def ids(self) -> set[int]:
        return {int(x) for x in self.faiss.vector_to_array(self.index.id_map)}

    def get(self, ids: Sequence[int]) -> dict[int, Vectors]:
        present = self.ids()
        return {i: self.index.reconstruct(int(i)).astype(np.float32) for i in ids if i in present}

    def search(self, query: Vectors, k: int, allowed: npt.NDArray[np.int64] | None) -> list[tuple[int, float]]:
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        if allowed is not None:
            params = self.faiss.SearchParameters(sel=self.faiss.IDSelectorBatch(allowed))
            scores, ids = self.index.search(q, min(k, len(allowed)), params=params)
        elif self.ann is not None:
            self._tune()
            scores, ids = self.ann.search(q, k)
        else:
            scores, ids = self._exact().search(q, k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i != -1]

    def _exact(self) -> Any:
        """The exact index, on the GPUs when faiss-gpu is installed and sees one (filtered searches stay on
        the CPU: FAISS GPU indexes take no ID selector)."""
        if self._gpu is None and hasattr(self.faiss, "get_num_gpus") and self.faiss.get_num_gpus() > 0:
            self._gpu = self.faiss.index_cpu_to_all_gpus(self.index)
        return self._gpu if self._gpu is not None else self.index

    def _tune(self) -> None:
        ann: Any = self.ann
        inner = self.faiss.downcast_index(ann.index) if hasattr(ann, "index") else None
        base = (
            self.faiss.downcast_index(inner.base_index) if inner is not None and hasattr(inner, "base_index") else inner
        )
        if base is not None and hasattr(base, "nprobe"):
            base.nprobe = self.nprobe or max(ANN_NPROBE, base.nlist // 10)
        if base is not None and hasattr(base, "hnsw"):
            base.hnsw.efSearch = self.ef or ANN_EF

    def build_ann(self, kind: str) -> str:
        if kind == "none":
            self.ann = None
            self.ann_path.unlink(missing_ok=True)
            return "vector index dropped: searches are exact"
        rows = self.index.ntotal
        kind = "ivf-pq" if kind == "auto" else kind
        if kind not in ("ivf-pq", "hnsw"):
            raise ConfigError(f"FAISS indexes build ivf-pq or hnsw (or auto: ivf-pq), not {kind!r}; none drops it")
        if rows < ANN_MIN_ROWS:
            return f"{rows} rows: below {ANN_MIN_ROWS}, exact search is fast and exact; no vector index built"
        ids = self.faiss.vector_to_array(self.index.id_map).astype(np.int64)
        vectors = self.index.index.reconstruct_n(0, rows)
        ip = self.faiss.METRIC_INNER_PRODUCT
        if kind == "hnsw":
            base = self.faiss.IndexHNSWFlat(self.dimension, 32, ip)
            base.hnsw.efConstruction = 200
        else:
            lists = max(1, min(round(rows**0.5), rows // 39))
            # 4 dimensions per PQ sub-vector: 8-dimension sub-vectors lost too much recall on unclustered data
            sub = next(
                d for d in (self.dimension // 4, self.dimension // 2, self.dimension) if d and self.dimension % d == 0
            )
            ivfpq = self.faiss.IndexIVFPQ(self.faiss.IndexFlatIP(self.dimension), self.dimension, lists, sub, 8, ip)
            ivfpq.train(vectors)
            base = self.faiss.IndexRefineFlat(ivfpq)
            base.k_factor = 20  # re-rank 20x the candidates with the full vectors
        ann = self.faiss.IndexIDMap2(base)
        ann.add_with_ids(vectors, ids)
        self.ann = ann
        self.save()
        return f"{kind} index over {rows} rows"

    def save(self) -> None:
        for index, path in ((self.index, self.path), (self.ann, self.ann_path)):
            if index is not None:
                tmp = path.with_suffix(".tmp")
                self.faiss.write_index(index, str(tmp))
                os.replace(tmp, path)

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)
        self.ann_path.unlink(missing_ok=True)


class FaissStore(SidecarStore):
    """Indexes in a directory: SQLite for chunks and BM25, a FAISS index file per index for the vectors."""

    def _open_vectors(self, physical: str, dimension: int) -> FaissVectors:
        return FaissVectors(self.root / f"{physical}.faiss", dimension)
