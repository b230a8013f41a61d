"""The HTTP API for programs (FastAPI; the `serve` extra): OpenAI-compatible embeddings, search, indexes."""

from nvrag.api.app import APIContext, build_api

__all__ = ["APIContext", "build_api"]
