"""Reading stored manifests of any schema version: numbered migrations up to the current one, and a domain
error naming both versions for a manifest that a newer nvrag wrote.

Each migration turns a manifest dict of version N into version N + 1; ``read_manifest`` applies them in order,
so a manifest written by any older nvrag opens as a current ``IndexManifest`` (and is written back in the
current version by the next write that updates it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from nvrag import __version__
from nvrag.errors import ManifestVersionError
from nvrag.schema import MANIFEST_SCHEMA_VERSION, IndexManifest

Migration = Callable[[dict[str, Any]], dict[str, Any]]


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 left ``table`` empty for "the index's own name" and had no storage fields before nvrag
    stored float16 and binary-quantised vectors: name the table, write the defaults."""
    return {
        **data,
        "table": data.get("table") or data["name"],
        "vector_dtype": data.get("vector_dtype", "float32"),
        "quantization": data.get("quantization", "none"),
    }


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 did not record the dtype the model computed in: "unrecorded" (float32 on a CPU, bfloat16 on a
    GPU were the defaults then)."""
    return {**data, "compute_dtype": data.get("compute_dtype", "unrecorded")}


def _v3_to_v4(data: dict[str, Any]) -> dict[str, Any]:
    """Version 3 did not record where the weights were loaded from: unknown, so searches name them again."""
    return {**data, "model_path": data.get("model_path", "")}


def _v4_to_v5(data: dict[str, Any]) -> dict[str, Any]:
    """Version 4 had no recall probe: ANN searches keep the default rule until the index is optimised again."""
    return {**data, "ann_nprobes": data.get("ann_nprobes", 0), "ann_recall": data.get("ann_recall")}


def _v5_to_v6(data: dict[str, Any]) -> dict[str, Any]:
    """Version 5's probe chose only the partitions: searches re-rank the default number of candidates."""
    return {**data, "ann_refine": data.get("ann_refine", 0)}


MIGRATIONS: dict[int, Migration] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
}  # version N -> N + 1


def migrate(data: dict[str, Any], key: str) -> dict[str, Any]:
    """A manifest dict of any version readable here, brought to the current version."""
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise ManifestVersionError(f"index {key!r}: its manifest has no valid schema version ({version!r})")
    if version > MANIFEST_SCHEMA_VERSION:
        raise ManifestVersionError(
            f"index {key!r} was written by a newer nvrag (manifest schema version {version}; nvrag {__version__} "
            f"reads versions up to {MANIFEST_SCHEMA_VERSION}): upgrade nvrag to use it"
        )
    while version < MANIFEST_SCHEMA_VERSION:
        data = {**MIGRATIONS[version](data), "schema_version": version + 1}
        version += 1
    return data


def read_manifest(payload: str, key: str) -> IndexManifest:
    """A stored manifest (JSON) as a current IndexManifest; ManifestVersionError when it cannot be."""
    try:
        data = json.loads(payload)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        return IndexManifest.from_dict(migrate(data, key))
    except ManifestVersionError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise ManifestVersionError(f"index {key!r}: its manifest cannot be read ({exc})") from None
