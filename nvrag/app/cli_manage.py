"""`nvrag drop`, `nvrag documents` and `nvrag delete`: managing what was indexed."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table as RichTable

from nvrag.app.cli_common import DbOption, JsonOption, app, err, fail, out, safe, user_errors
from nvrag.app.settings import Settings
from nvrag.app.wiring import open_store
from nvrag.indexer.engine import delete_documents
from nvrag.indexer.manage import drop_index, list_documents

YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking.", show_default=False)]


def _confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; elsewhere (a script, a pipe) refuse unless --yes was given."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise fail(f"{question} Add --yes to confirm (no terminal to ask on).")
    if not typer.confirm(question, default=False, err=True):
        raise fail("nothing was changed", 1)


@app.command()
def drop(
    name: Annotated[str, typer.Argument(help="The index to remove, with all its rows.")],
    yes: YesOption = False,
    db: DbOption = None,
) -> None:
    """Remove an index and everything in it (refused while another process writes it)."""
    with user_errors():
        settings = Settings.from_env(db=db)
        store = open_store(settings)
        store.manifest(name)  # IndexNotFoundError, naming the known indexes, before asking
        _confirm(f"Remove index {name!r} and all its rows?", yes)
        rows = drop_index(store, name)
        if "://" not in settings.db:  # the run report written next to the index goes with it
            with contextlib.suppress(OSError):
                (Path(settings.db).expanduser() / f"{name}.report.json").unlink(missing_ok=True)
    err.print(f"removed index {safe(name)!r} ({rows} chunks)")


@app.command()
def documents(
    name: Annotated[str, typer.Argument(help="The index whose documents to list.")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List an index's documents: id, origin (path, api or upload), source, number of chunks and when each last
    changed (UTC)."""
    with user_errors():
        found = list_documents(open_store(Settings.from_env(db=db)), name)
    if as_json:
        sys.stdout.write(json.dumps([d.to_dict() for d in found], indent=2) + "\n")
        return
    table = RichTable(title=f"{len(found)} documents in {safe(name)}")
    for column in ("id", "origin", "source", "chunks", "updated"):
        table.add_column(column, overflow="fold")
    for d in found:
        table.add_row(safe(d.id), d.origin, safe(d.source), str(d.chunks), d.updated or "-")
    out.print(table)


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="The index to delete documents from.")],
    doc_ids: Annotated[list[str], typer.Argument(help="The ids of the documents to delete (nvrag documents NAME).")],
    yes: YesOption = False,
    db: DbOption = None,
) -> None:
    """Delete documents (every chunk of each) from an index, whatever surface added them."""
    with user_errors():
        store = open_store(Settings.from_env(db=db))
        known = {d.id for d in list_documents(store, name)}
        missing = [d for d in doc_ids if d not in known]
        if missing:
            raise fail(
                f"index {name!r} has no document {', '.join(repr(safe(d)) for d in missing)}; nothing was deleted"
            )
        _confirm(f"Delete {len(set(doc_ids))} documents from index {name!r}?", yes)
        removed = delete_documents(store, name, sorted(set(doc_ids)))
    err.print(f"deleted {len(set(doc_ids))} documents ({removed} chunks) from {safe(name)!r}")
