"""An index pins its model: the manifest a new index gets, and the check every search and append makes."""

from __future__ import annotations

import datetime as dt

from nvrag import __version__
from nvrag.embedder.base import Embedder
from nvrag.errors import ConfigError, ModelMismatchError
from nvrag.schema import ChunkerSettings, IndexManifest

VECTOR_DTYPES = ("float32", "float16")
QUANTIZATIONS = ("none", "binary")


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def model_key(embedder: Embedder) -> str:
    return f"{embedder.info.name}@{embedder.info.revision}"


def new_manifest(
    name: str, embedder: Embedder, chunker: ChunkerSettings, vector_dtype: str = "float32", quantization: str = "none"
) -> IndexManifest:
    if vector_dtype not in VECTOR_DTYPES:
        raise ConfigError(f"unknown vector dtype {vector_dtype!r}; use {' or '.join(VECTOR_DTYPES)}")
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {quantization!r}; use {' or '.join(QUANTIZATIONS)}")
    info, now = embedder.info, utc_now()
    return IndexManifest(
        name=name,
        model=info.name,
        model_revision=info.revision,
        dimension=info.dimension,
        normalized=True,
        query_template=info.query_template,
        document_template=info.document_template,
        license=info.license,
        chunker=chunker,
        nvrag_version=__version__,
        created_at=now,
        updated_at=now,
        vector_dtype=vector_dtype,
        quantization=quantization,
    )


def check_manifest_model(manifest: IndexManifest, embedder: Embedder) -> None:
    """Refuse to put vectors of one model into (or search with them) an index built with another."""
    info = embedder.info
    if (manifest.model, manifest.model_revision, manifest.dimension) != (info.name, info.revision, info.dimension):
        raise ModelMismatchError(
            f"index {manifest.name!r} was built with {manifest.model} ({manifest.model_revision}, "
            f"{manifest.dimension} dims), not {info.name} ({info.revision}, {info.dimension} dims): "
            "vectors of different models cannot be mixed; use the index's model or build a new index"
        )
