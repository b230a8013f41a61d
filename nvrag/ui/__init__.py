"""The Gradio web search UI: ``build_ui(ctx)`` → Blocks, ``build_server(ctx)`` → the FastAPI app to serve.

The behaviour lives in ``callbacks`` (plain functions over a ``UIContext``) and ``render`` (HTML); this package
imports Gradio only when a UI is built.
"""

from nvrag.ui.app import build_server, build_ui
from nvrag.ui.callbacks import UIContext

__all__ = ["UIContext", "build_server", "build_ui"]
