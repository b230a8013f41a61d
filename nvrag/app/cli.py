"""The `nvrag` command line. Domain errors become one red line and an exit code here, and only here.

Exit codes: 0 success; 1 the run finished but some inputs could not be indexed (see the report);
2 a usage error or a user mistake (missing path, unknown index or model, model mismatch); 130 indexing was
stopped with Ctrl-C (running it again continues).
"""

from __future__ import annotations

import os
import sys

import typer

try:  # Typer 0.2x vendors Click and raises its own copies of Click's exceptions
    from typer._click import exceptions as click_errors
except ImportError:  # older Typer: Click itself
    from click import exceptions as click_errors  # type: ignore[no-redef]

from nvrag.app import cli_embed, cli_index, cli_manage, cli_rerank, cli_search, cli_serve  # noqa: F401  (importing registers their commands)
from nvrag.app.cli_common import EXIT_INPUT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR, app, fail
from nvrag.app.devices import cap_threads_to_quota
from nvrag.heap import reuse_freed_blocks

__all__ = ["EXIT_INPUT_FAILURES", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USER_ERROR", "app", "main"]


def main() -> None:
    """Run the CLI; a usage mistake (unknown option, a value out of range) is one line and exit code 2."""
    reuse_freed_blocks(os.environ)  # before any thread allocates: large passes reuse their temporaries (nvrag/heap.py)
    cap_threads_to_quota(os.environ)  # a container's CPU quota, not the host's CPUs, sets the compute threads
    try:
        code = app(standalone_mode=False, prog_name="nvrag")
    except click_errors.NoArgsIsHelpError as exc:
        exc.show()  # the help text, as Typer shows it
        code = exc.exit_code
    except click_errors.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "nvrag"
        code = fail(f"{exc.format_message()}{index_hint(exc, command)} (see: {command} --help)").exit_code
    except click_errors.ClickException as exc:
        code = fail(exc.format_message()).exit_code
    except typer.Abort:
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def index_hint(exc: click_errors.UsageError, command: str) -> str:
    """For ``--index``/``-i`` given to a command that takes the index as its argument (``nvrag documents``,
    ``delete``, ``drop``, ``optimize``; ``index`` and ``search`` take the option): how to write it instead."""
    if not isinstance(exc, click_errors.NoSuchOption) or exc.option_name not in ("--index", "-i") or exc.ctx is None:
        return ""
    first = next((p for p in exc.ctx.command.params if p.param_type_name == "argument"), None)
    if first is None or first.name not in ("name", "index"):
        return ""
    return f"; this command takes the index as its first argument: {command} {first.name.upper()}"
