"""The HTTP API for programs (FastAPI; the `serve` extra): OpenAI-compatible embeddings, search, indexes.

``APIContext`` and ``build_api`` load on first use: the stdlib-only ``limits`` and ``runner`` modules import
without the web stack (the CLI reads its option defaults from them)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nvrag.api.app import build_api
    from nvrag.api.context import APIContext

__all__ = ["APIContext", "build_api"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("nvrag.api.context" if name == "APIContext" else "nvrag.api.app"), name)
