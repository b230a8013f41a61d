"""An index pins its model: the manifest a new index gets, and the check every search and append makes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from nvrag import __version__
from nvrag.embedder.base import Embedder
from nvrag.embedder.weights import weights_fingerprint
from nvrag.errors import Hint, ModelMismatchError, ModelUnavailableError
from nvrag.schema import ChunkerSettings, IndexManifest


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def model_key(embedder: Embedder) -> str:
    return f"{embedder.info.name}@{embedder.info.revision}"


def new_manifest(
    name: str, embedder: Embedder, chunker: ChunkerSettings, vector_dtype: str = "float32", quantization: str = "none"
) -> IndexManifest:
    """The manifest of a new index built with ``embedder`` (storage values are checked by the caller's request)."""
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
        compute_dtype=info.compute_dtype,
        model_path=info.source,
    )


def check_pinned(
    manifest: IndexManifest,
    model: str,
    revision: str | None = None,
    dimension: int | None = None,
    *,
    writing: bool = False,
) -> None:
    """The rule that an index pins its model, with its one wording: refuse a model (by name, before loading
    it, or by name, revision and dimension once loaded) other than the one the index was built with.
    ``writing``: the refusal also says how to rebuild the index with the other model."""
    same_name = model == manifest.model
    if same_name and revision in (None, manifest.model_revision) and dimension in (None, manifest.dimension):
        return
    if same_name:  # another checkpoint of the same model: name the revisions
        built = f"{manifest.model} ({manifest.model_revision}, {manifest.dimension} dims)"
        other = f"{model} ({revision}, {dimension} dims)"
        advice = f"Use the checkpoint it was built with, or build a new index with {other}"
    else:
        built, other = manifest.model, model
        advice = f"Leave out --model to use {built}, or build a new index with {other}"
    if writing:
        advice += f", or add --reembed to rebuild this index with {other}"
    raise ModelMismatchError(
        f"index {manifest.name!r} was built with {built}; it cannot be searched or extended with {other} "
        "(a different vector space).",
        hint=Hint(advice, join=" "),  # options of the command line: a server searches each index with its own model
    )


def check_manifest_model(manifest: IndexManifest, embedder: Embedder, *, writing: bool = False) -> None:
    """Refuse to put vectors of one model into (or search with them) an index built with another."""
    info = embedder.info
    check_pinned(manifest, info.name, info.revision, info.dimension, writing=writing)


def weights_for_index(manifest: IndexManifest, given: Path | None) -> Path | None:
    """Where to load an index's model from: ``given`` (--model-path, or a configured path) if any; else the
    folder the index was built from while it still holds the same weights (the recorded fingerprint decides);
    else None (the model's own place: bundled, or the Hugging Face cache). A recorded folder that is gone or
    now holds other weights is one ModelUnavailableError saying what to pass."""
    if given is not None or not manifest.model_path:
        return given
    folder = Path(manifest.model_path)
    where = f"index {manifest.name!r} was built with {manifest.model} from {folder}"
    if not (folder / "config.json").is_file():
        raise ModelUnavailableError(
            f"{where}, which no longer holds a checkpoint", hint=Hint("pass --model-path with its weights")
        )
    found = weights_fingerprint(folder)
    if found != manifest.model_revision:
        raise ModelUnavailableError(
            f"{where}, which now holds other weights ({found}, not {manifest.model_revision})",
            hint=Hint("pass --model-path with the weights it was built with"),
        )
    return folder
