"""The `nvrag` command line. Domain errors become one red line and an exit code here, and only here.

Exit codes: 0 success; 1 the run finished but some inputs could not be indexed (see the report);
2 a usage error or a user mistake (missing path, unknown index or model, model mismatch); 130 indexing was
stopped with Ctrl-C (running it again continues).
"""

from __future__ import annotations

from nvrag.app import cli_index, cli_search  # noqa: F401  (importing registers their commands)
from nvrag.app.cli_common import EXIT_INPUT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR, app

__all__ = ["EXIT_INPUT_FAILURES", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USER_ERROR", "app", "main"]


def main() -> None:
    app()
