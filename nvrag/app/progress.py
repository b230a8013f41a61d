"""Progress for long runs: a Rich bar on a terminal, plain periodic lines otherwise (CI, logs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from nvrag.indexer import Progress

LOG_EVERY_S = 10.0


@contextmanager
def index_progress(
    console: Console, total: int | None = None, *, first_line: str | None = None
) -> Iterator[Callable[[Progress], None]]:
    """A progress callback: documents/s, chunks/s and, when the items (``total``, or as the engine reports them)
    or the chunks to embed are known, a bar with an ETA. ``first_line`` (Rich markup) is printed at the first
    event (the first commit), or when the block ends without one: a run refused before any work prints only its
    error."""
    started = time.monotonic()
    pending = [first_line] if first_line is not None else []

    def announce() -> None:
        while pending:
            console.print(pending.pop())

    def rates(p: Progress) -> str:
        elapsed = max(time.monotonic() - started, 1e-9)
        return (
            f"{p.documents} documents ({p.documents / elapsed:.1f}/s), "
            f"{p.chunks_embedded} chunks embedded ({p.chunks_embedded / elapsed:.1f}/s)"
        )

    if console.is_terminal:
        with RichProgress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("indexing", total=total)

            def update(p: Progress) -> None:
                announce()
                if p.chunks_total is not None:  # the chunks to embed are known (the Ray engine)
                    bar.update(task, description=rates(p), total=p.chunks_total, completed=p.chunks_embedded)
                else:  # the items the source holds, when the engine counted them
                    bar.update(task, description=rates(p), total=p.items_total or total, completed=p.items_seen)

            yield update
        announce()  # a run that committed nothing: with its report
        return

    last = started

    def log(p: Progress) -> None:
        nonlocal last
        announce()
        now = time.monotonic()
        if now - last >= LOG_EVERY_S:
            last = now
            if p.chunks_total is not None:
                console.print(f"indexing: {p.chunks_embedded} of {p.chunks_total} chunks embedded; {rates(p)}")
                return
            known = p.items_total or total
            of = f" of {known} items" if known else ""
            console.print(f"indexing: {p.items_seen}{of} read; {rates(p)}")

    yield log
    announce()
