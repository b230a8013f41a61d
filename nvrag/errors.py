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

What to do about an error depends on where it is shown: on the command line, its options; over HTTP (and to an
agent, and on the page), a request's fields. An error raised below the edges says what went wrong in its
message and what to do in a ``Hint`` with both wordings; each edge renders its own (``for_cli``, ``for_api``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hint:
    """What to do, for each edge: ``cli`` in the command line's words (its options); ``api`` in a request's
    (its fields; None: nothing the client can change, so a server shows the message alone); ``field``: the
    request field it is about (HTTP errors name it as ``param``); ``join``: what goes between message and hint."""

    cli: str
    api: str | None = None
    field: str | None = None
    join: str = "; "


class NvRagError(Exception):
    """Base class of every error nvrag raises on purpose. ``str()`` is the command line's rendering."""

    def __init__(self, message: str = "", *, hint: Hint | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint

    def for_cli(self) -> str:
        return f"{self.message}{self.hint.join}{self.hint.cli}" if self.hint is not None else self.message

    def for_api(self) -> str:
        """The message as a program, an agent or the page shows it: with the hint in request terms, or alone."""
        if self.hint is None:
            return self.message
        return f"{self.message}{self.hint.join}{self.hint.api}" if self.hint.api else self.message

    def __str__(self) -> str:
        return self.for_cli()


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
    "Hint",
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
