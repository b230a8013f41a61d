"""Stores that keep chunks, metadata and full text in SQLite (with FTS5 for BM25) and vectors in a separate
vector index: the NumPy reference store and the FAISS store share everything here but the vector index.

Layout of a store directory: ``nvrag.sqlite`` (manifests, one chunk table and one FTS5 table per index) and one
vector file per index. Every chunk has an integer id derived from its chunk id (``vector_id``). Writes persist the
vectors first (written to a temporary file, then renamed) and commit SQLite second; opening a table drops rows
whose vectors are missing, so a crash between the two leaves only chunks that the next run embeds again.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nvrag.errors import ConfigError, IndexBusyError
from nvrag.schema import CHUNK_COLUMNS, Chunk, FilterCondition, IndexManifest
from nvrag.store.base import STAGING, ManifestStore, ScoredChunk, Table, check_vectors
from nvrag.store.filtering import check_types, matches
from nvrag.store.probes import ProbeQueries

_TERM = re.compile(r"\w+", re.UNICODE)
Vectors = npt.NDArray[np.float32]


def vector_id(chunk_id: str) -> int:
    """A stable 63-bit integer id for a chunk id (vector indexes key by integers)."""
    return int.from_bytes(hashlib.sha256(chunk_id.encode()).digest()[:8], "big") >> 1


class VectorIndex(ABC):
    """Integer ids → L2-normalised vectors, searched by inner product (= cosine)."""

    @abstractmethod
    def add(self, ids: npt.NDArray[np.int64], vectors: Vectors) -> None: ...

    @abstractmethod
    def remove(self, ids: npt.NDArray[np.int64]) -> None: ...

    @abstractmethod
    def ids(self) -> set[int]: ...

    @abstractmethod
    def get(self, ids: Sequence[int]) -> dict[int, Vectors]: ...

    @abstractmethod
    def search(self, query: Vectors, k: int, allowed: npt.NDArray[np.int64] | None) -> list[tuple[int, float]]:
        """Up to k (id, cosine) pairs, best first, among ``allowed`` ids when given."""

    @abstractmethod
    def save(self) -> None:
        """Persist atomically (temporary file, then rename)."""

    def build_ann(self, kind: str) -> str:
        return f"{type(self).__name__} is exact; no ANN index"

    @abstractmethod
    def drop(self) -> None: ...


class SidecarTable(Table):
    def __init__(self, store: SidecarStore, manifest: IndexManifest, key: str) -> None:
        self._store = store
        self._manifest = manifest
        self._key = key
        self._physical = manifest.table
        self._db = store._db
        self._chunks = f'"c_{self._physical}"'
        self._fts = f'"f_{self._physical}"'
        self._vectors = store._open_vectors(self._physical, manifest.dimension)
        self._drop_rows_without_vectors()

    @property
    def manifest(self) -> IndexManifest:
        return self._manifest

    def set_manifest(self, manifest: IndexManifest) -> None:
        self._store._write_manifest(manifest, self._key)
        self._manifest = manifest

    def _drop_rows_without_vectors(self) -> None:
        """Forget rows whose vectors a crash lost, only as the index's writer: a reader that loaded the vector
        file just before a writer's commit would otherwise delete the rows that commit adds."""
        name = self._manifest.name
        if name in self._store.held_locks():
            self._drop_orphans()
            return
        try:
            with self._store.writing(name):
                self._drop_orphans()
        except IndexBusyError:
            pass  # another process is writing: it cleans up when it opens the index

    def _drop_orphans(self) -> None:
        stored = {int(r[0]) for r in self._db.execute(f"SELECT vid FROM {self._chunks}")}
        orphans = stored - self._vectors.ids()
        if orphans:
            self._delete_rows(orphans)

    def count(self) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM {self._chunks}").fetchone()[0])

    def chunk_ids_by_doc(self) -> dict[str, set[str]]:
        grouped: dict[str, set[str]] = {}
        for chunk_id, doc_id in self._db.execute(f"SELECT chunk_id, doc_id FROM {self._chunks}"):
            grouped.setdefault(doc_id, set()).add(chunk_id)
        return grouped

    def upsert(self, chunks: Sequence[Chunk], vectors: Vectors) -> None:
        self.replace(chunks, vectors, ())

    def replace(self, chunks: Sequence[Chunk], vectors: Vectors, replaced: Collection[str]) -> None:
        """The new vectors are saved first (a vector without a row is never returned), then one SQLite
        transaction inserts the new rows and deletes the replaced ones (the switch readers see), then the
        replaced vectors go (a crash before that leaves only unreachable vectors)."""
        rows: list[tuple[object, ...]] = []
        if chunks:
            check_vectors(chunks, vectors, self._manifest.dimension)
            latest = {c.chunk_id: i for i, c in enumerate(chunks)}  # a repeated id: the last one wins
            order = sorted(latest.values())
            ids = np.array([vector_id(chunks[i].chunk_id) for i in order], dtype=np.int64)
            self._vectors.remove(ids)
            self._vectors.add(ids, np.ascontiguousarray(vectors[order], dtype=np.float32))
            self._vectors.save()
            now = datetime.now(UTC).isoformat(timespec="milliseconds")
            rows = [
                (int(vid), *(row[k] for k in CHUNK_COLUMNS), now)
                for vid, row in zip(ids, (chunks[i].to_row() for i in order), strict=True)
            ]
        stale = sorted({vector_id(c) for c in replaced} - {int(r[0]) for r in rows})  # type: ignore[call-overload]
        if not rows and not stale:
            return
        with self._db:
            self._db.executemany(f"INSERT OR REPLACE INTO {self._chunks} VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            self._db.executemany(f"DELETE FROM {self._chunks} WHERE vid = ?", [(v,) for v in stale])
        if stale:
            self._vectors.remove(np.array(stale, dtype=np.int64))
            self._vectors.save()

    def delete(self, chunk_ids: Iterable[str]) -> None:
        vids = {vector_id(c) for c in chunk_ids}
        if vids:
            self._delete_rows(vids)
            self._vectors.remove(np.array(sorted(vids), dtype=np.int64))
            self._vectors.save()

    def _delete_rows(self, vids: set[int]) -> None:
        with self._db:
            self._db.executemany(f"DELETE FROM {self._chunks} WHERE vid = ?", [(v,) for v in vids])

    def _select(self, columns: str, vids: Sequence[int]) -> Iterator[sqlite3.Row]:
        for i in range(0, len(vids), 500):
            part = list(vids[i : i + 500])
            yield from self._db.execute(
                f"SELECT {columns} FROM {self._chunks} WHERE vid IN ({','.join('?' * len(part))})", part
            )

    def _rows(self, vids: Sequence[int]) -> dict[int, Chunk]:
        return {int(row[0]): _chunk(row) for row in self._select("*", vids)}

    def _allowed(self, where: Sequence[FilterCondition]) -> npt.NDArray[np.int64] | None:
        if not where:
            return None
        check_types(where)
        allowed = [
            int(row[0]) for row in self._db.execute(f"SELECT * FROM {self._chunks}") if matches(_chunk(row), where)
        ]
        return np.array(allowed, dtype=np.int64)

    def search(
        self,
        vector: Vectors,
        k: int,
        where: Sequence[FilterCondition] = (),
        *,
        with_vectors: bool = False,
    ) -> list[ScoredChunk]:
        if k <= 0 or self.count() == 0:
            return []
        allowed = self._allowed(where)
        if allowed is not None and len(allowed) == 0:
            return []
        hits = self._vectors.search(np.asarray(vector, dtype=np.float32).reshape(-1), k, allowed)
        rows = self._rows([vid for vid, _ in hits])
        vectors = self._vectors.get([vid for vid, _ in hits]) if with_vectors else {}
        return [
            ScoredChunk(rows[vid], score, vectors.get(vid) if with_vectors else None)
            for vid, score in hits
            if vid in rows
        ]

    def text_search(self, query: str, k: int, where: Sequence[FilterCondition] = ()) -> list[ScoredChunk]:
        terms = _TERM.findall(query.lower())
        if k <= 0 or not terms:
            return []
        allowed = self._allowed(where)
        match = " OR ".join(f'"{t}"' for t in terms)
        limit = k if allowed is None else self.count()
        scored: list[tuple[int, float]] = [
            (int(r[0]), -float(r[1]))  # FTS5's bm25() is lower-is-better
            for r in self._db.execute(
                f"SELECT rowid, bm25({self._fts}) FROM {self._fts} WHERE {self._fts} MATCH ? "
                f"ORDER BY bm25({self._fts}) LIMIT ?",
                (match, limit),
            )
        ]
        if allowed is not None:
            keep = set(allowed.tolist())
            scored = [s for s in scored if s[0] in keep][:k]
        rows = self._rows([vid for vid, _ in scored])
        return [ScoredChunk(rows[vid], score) for vid, score in scored if vid in rows]

    def get(self, chunk_ids: Sequence[str]) -> list[Chunk]:
        rows = self._rows([vector_id(c) for c in chunk_ids])
        return [rows[vector_id(c)] for c in chunk_ids if vector_id(c) in rows]

    def indexed_at(self, chunk_ids: Iterable[str]) -> dict[str, datetime]:
        rows = self._select("chunk_id, indexed_at", sorted({vector_id(c) for c in chunk_ids}))
        return {chunk_id: datetime.fromisoformat(when) for chunk_id, when in rows if when}

    def vectors(self, chunk_ids: Sequence[str]) -> dict[str, Vectors]:
        present = {c.chunk_id for c in self.get(chunk_ids)}
        found = self._vectors.get([vector_id(c) for c in present])
        return {c: found[vector_id(c)] for c in present if vector_id(c) in found}

    def build_ann(self, kind: str, probe: ProbeQueries | None = None) -> str:
        return self._vectors.build_ann(kind)  # FAISS and NumPy keep fixed search settings: no probe

    def refresh_indexes(self) -> None:
        """The FTS5 table is kept current by triggers, the vector index by each write itself: nothing to do."""


def _chunk(row: Sequence[Any]) -> Chunk:
    """A chunk from a row of a chunk table: its vector id, then CHUNK_COLUMNS in order (then indexed_at)."""
    return Chunk.from_row(dict(zip(CHUNK_COLUMNS, row[1 : 1 + len(CHUNK_COLUMNS)], strict=True)))


class SidecarStore(ManifestStore):
    """A directory of indexes: SQLite for chunks, metadata, manifests and BM25; a VectorIndex per index."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        # writers of different indexes share this file: wait for SQLite's lock rather than fail after 5 s
        self._db = sqlite3.connect(str(self.root / "nvrag.sqlite"), check_same_thread=False, timeout=120)
        # INSERT OR REPLACE deletes the old row; its delete trigger (which updates FTS5) fires only with this on
        self._db.execute("PRAGMA recursive_triggers = ON")
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS manifests (key TEXT PRIMARY KEY, json TEXT NOT NULL)")

    def local_dir(self) -> Path | None:
        return self.root

    @abstractmethod
    def _open_vectors(self, physical: str, dimension: int) -> VectorIndex: ...

    def _manifest_rows(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, json FROM manifests"))

    def _write_manifest(self, manifest: IndexManifest, key: str | None = None) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO manifests VALUES (?, ?)", (key or manifest.name, manifest.to_json())
            )

    def _create_tables(self, physical: str) -> None:
        chunks, fts = f'"c_{physical}"', f'"f_{physical}"'
        with self._db:
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {chunks} (vid INTEGER PRIMARY KEY, chunk_id TEXT UNIQUE NOT NULL, "
                "doc_id TEXT NOT NULL, source TEXT, chunk_no INTEGER, title TEXT, text TEXT, start INTEGER, "
                '"end" INTEGER, metadata TEXT, indexed_at TEXT)'
            )
            if "indexed_at" not in {r[1] for r in self._db.execute(f"PRAGMA table_info({chunks})")}:
                # made before rows recorded when they were written: old rows keep no time (NULL)
                self._db.execute(f"ALTER TABLE {chunks} ADD COLUMN indexed_at TEXT")
            self._db.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5(title, text, content={chunks}, "
                "content_rowid='vid', tokenize='porter unicode61 remove_diacritics 2')"
            )
            for event, body in (
                ("AFTER INSERT", f"INSERT INTO {fts}(rowid, title, text) VALUES (new.vid, new.title, new.text);"),
                (
                    "AFTER DELETE",
                    f"INSERT INTO {fts}({fts}, rowid, title, text) VALUES ('delete', old.vid, old.title, old.text);",
                ),
            ):
                name = f'"t_{physical}_{event.split()[1].lower()}"'
                self._db.execute(f"CREATE TRIGGER IF NOT EXISTS {name} {event} ON {chunks} BEGIN {body} END")

    def _drop_tables(self, physical: str, dimension: int) -> None:
        with self._db:
            for suffix in ("insert", "delete"):
                self._db.execute(f'DROP TRIGGER IF EXISTS "t_{physical}_{suffix}"')
            self._db.execute(f'DROP TABLE IF EXISTS "f_{physical}"')
            self._db.execute(f'DROP TABLE IF EXISTS "c_{physical}"')
        self._open_vectors(physical, dimension).drop()

    def _open_table(self, manifest: IndexManifest, key: str) -> SidecarTable:
        self._create_tables(manifest.table)
        return SidecarTable(self, manifest, key)

    def _drop_physical(self, manifest: IndexManifest) -> None:
        self._drop_tables(manifest.table, manifest.dimension)

    def _delete_manifests(self, keys: Sequence[str]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM manifests WHERE key = ?", [(k,) for k in keys])

    def _check_new(self, manifest: IndexManifest) -> None:
        if manifest.vector_dtype != "float32":
            raise ConfigError(f"{type(self).__name__} stores float32 vectors only; float16 needs the LanceDB store")
        if manifest.quantization != "none":
            raise ConfigError(
                f"{type(self).__name__} has no {manifest.quantization} quantization; it needs the LanceDB store"
            )

    def _switch(self, name: str, staged: IndexManifest) -> None:
        with self._db:  # the switch: one transaction
            self._db.execute("INSERT OR REPLACE INTO manifests VALUES (?, ?)", (name, staged.to_json()))
            self._db.execute("DELETE FROM manifests WHERE key = ?", (name + STAGING,))
