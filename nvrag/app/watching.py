"""`nvrag index PATH --watch`: after the first run, re-run the same (incremental) indexing whenever files under
PATH change, so the index follows the folder: new and changed files are embedded, deleted ones pruned.

Each re-run is a normal run (the index's write lock, whole-document commits, its report), so a crash or a kill
leaves the index as a normal run would, and the next run picks up where it stopped. Changes are debounced
(watchfiles: the OS's notifications); changes inside the data directory (if it lies under PATH) are ignored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from nvrag.indexer import IndexReport

DEBOUNCE_MS = 1600  # changes arriving within this window make one run (an editor's save is several events)


def watch_and_rerun(
    path: Path,
    run: Callable[[], IndexReport],
    on_run: Callable[[list[Path], IndexReport], None],
    *,
    ignore: tuple[Path, ...] = (),
    stop_event: threading.Event | None = None,
) -> None:
    """Wait for changes under ``path`` and call ``run`` once per debounced batch of them, until interrupted
    (Ctrl-C) or ``stop_event`` (a threading.Event) is set. ``on_run`` gets the changed paths and the report."""
    from watchfiles import watch

    ignored = tuple(p.resolve() for p in ignore)

    def wanted(_: object, changed: str) -> bool:
        resolved = Path(changed).resolve()
        return not any(resolved == p or resolved.is_relative_to(p) for p in ignored)

    root = path if path.is_dir() else path.parent
    for changes in watch(
        root,
        watch_filter=wanted,
        debounce=DEBOUNCE_MS,
        stop_event=stop_event,
        raise_interrupt=False,
        recursive=path.is_dir(),
    ):
        changed = sorted({Path(p) for _, p in changes})
        if not path.is_dir() and path.resolve() not in {c.resolve() for c in changed}:
            continue  # a sibling of the watched file changed
        on_run(changed, run())
