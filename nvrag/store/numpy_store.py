"""The NumPy reference store: exact brute-force cosine search, the oracle of the store conformance suite."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from nvrag.store.sidecar import SidecarStore, VectorIndex, Vectors


class NumpyVectors(VectorIndex):
    def __init__(self, path: Path, dimension: int) -> None:
        self.path = path
        self.dimension = dimension
        if path.exists():
            with np.load(path) as data:
                self._ids, self._vectors = data["ids"].astype(np.int64), data["vectors"].astype(np.float32)
        else:
            self._ids = np.zeros(0, dtype=np.int64)
            self._vectors = np.zeros((0, dimension), dtype=np.float32)

    def add(self, ids: npt.NDArray[np.int64], vectors: Vectors) -> None:
        self._ids = np.concatenate([self._ids, ids])
        self._vectors = np.concatenate([self._vectors, vectors.astype(np.float32)])

    def remove(self, ids: npt.NDArray[np.int64]) -> None:
        keep = ~np.isin(self._ids, ids)
        self._ids, self._vectors = self._ids[keep], self._vectors[keep]

    def ids(self) -> set[int]:
        return {int(x) for x in self._ids}

    def get(self, ids: Sequence[int]) -> dict[int, Vectors]:
        where = {int(x): i for i, x in enumerate(self._ids)}
        return {i: self._vectors[where[i]] for i in ids if i in where}

    def search(self, query: Vectors, k: int, allowed: npt.NDArray[np.int64] | None) -> list[tuple[int, float]]:
        scores = self._vectors @ query  # (n,)
        if allowed is not None:
            scores = np.where(np.isin(self._ids, allowed), scores, -np.inf)
        # ties broken by id, so the oracle's order is fully determined
        order = np.lexsort((self._ids, -scores))[:k]
        return [(int(self._ids[i]), float(scores[i])) for i in order if np.isfinite(scores[i])]

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, ids=self._ids, vectors=self._vectors)
        os.replace(tmp, self.path)

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)


class NumpyStore(SidecarStore):
    """Exact search over NumPy arrays (one .npz file per index); the reference the other stores are tested against."""

    def _open_vectors(self, physical: str, dimension: int) -> NumpyVectors:
        return NumpyVectors(self.root / f"{physical}.npz", dimension)
