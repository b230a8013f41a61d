"""nvrag: retrieval with NVIDIA NV-Embed-v2 (or a bundled small model) over LanceDB."""

__version__ = "0.1.0"

__all__ = ["__version__"]
