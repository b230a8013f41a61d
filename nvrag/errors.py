"""Domain errors. Lower layers raise these; only the CLI and the UI turn them into messages and exit codes.

::

    NvRagError
    ├── ConfigError              a setting or argument that cannot work (bad path, bad value)
    ├── ModelError
    │   ├── UnknownModelError    a model name that is not in the registry
    │   ├── ModelUnavailableError  a registered model that cannot be loaded here (missing weights, no device)
    │   └── CheckpointError      a checkpoint folder that is not what it claims (config, shards, keys, shapes)
    ├── IndexAccessError
    │   ├── IndexNotFoundError   a named index that does not exist in the data directory
    │   ├── ModelMismatchError   a request to use an index with a model other than the one it was built with
    │   ├── IndexBusyError       another process (or writer) is writing the index right now
    │   └── ManifestVersionError an index whose manifest a newer nvrag wrote (or that cannot be read)
    ├── InputError               a corpus or query input that cannot be read (missing path, malformed file)
    │   └── DatasetError         an evaluation dataset that is missing files or holds malformed lines
    ├── StorageError             the data directory cannot be written (full disk, read-only, permissions)
    ├── FilterError              a metadata filter that does not parse, or that the data cannot satisfy
    ├── InstructionError         an unknown task preset, or an instruction that leaves no room for the text
    └── OverloadedError          more work queued or in flight than the server admits (retry after a pause)
"""

from __future__ import annotations


class NvRagError(Exception):
    """Base class of every error nvrag raises on purpose."""


class ConfigError(NvRagError):
    """A setting or argument that cannot work."""


class ModelError(NvRagError):
    """Something about choosing or loading an embedding model."""


class UnknownModelError(ModelError):
    """The model name is not in the registry."""


class ModelUnavailableError(ModelError):
    """The model is registered but cannot be loaded on this machine or in this version."""


class ModelMemoryError(ModelError):
    """A model does not fit in the memory budget of a server's model pool."""


class CheckpointError(ModelError):
    """A checkpoint folder whose config, shards, keys or shapes are not what the model needs."""


class IndexAccessError(NvRagError):
    """Something about a named index."""


class IndexNotFoundError(IndexAccessError):
    """No index of that name exists in the data directory."""


class ModelMismatchError(IndexAccessError):
    """The index was built with one model and the request names another."""


class IndexBusyError(IndexAccessError):
    """Another writer holds the index's write lock; try again when it finishes."""


class ManifestVersionError(IndexAccessError):
    """The index's manifest has a schema version this nvrag cannot read (written by a newer one)."""


class InputError(NvRagError):
    """A corpus or query input that cannot be read."""


class DatasetError(InputError):
    """An evaluation dataset that is missing files or holds malformed lines."""


class StorageError(NvRagError):
    """The data directory cannot be written: a full disk, a read-only file system or missing permissions. What
    was committed before stays readable; the same run again, once the cause is fixed, completes."""


class FilterError(NvRagError):
    """A metadata filter that does not parse, or that cannot be applied to the stored metadata."""


class InstructionError(NvRagError):
    """An unknown task preset, or an instruction that leaves no room for the text."""


class OverloadedError(NvRagError):
    """More work is queued or in flight than the server admits; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "FilterError",
    "IndexAccessError",
    "IndexBusyError",
    "IndexNotFoundError",
    "InputError",
    "InstructionError",
    "ManifestVersionError",
    "ModelError",
    "ModelMismatchError",
    "ModelUnavailableError",
    "NvRagError",
    "OverloadedError",
    "StorageError",
    "UnknownModelError",
]
