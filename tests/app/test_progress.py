"""Progress reporting: a Rich bar with rates and an ETA on a terminal, plain periodic lines elsewhere."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from nvrag.app import progress as progress_module
from nvrag.app.progress import index_progress
from nvrag.indexer import Progress


def test_a_terminal_gets_a_bar_with_rates_and_an_eta() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    with index_progress(console, total=10) as update:
        update(Progress(documents=4, chunks_embedded=8, items_seen=5))
    frames = out.getvalue()  # the live display's frames, written to the "terminal" before it cleared them
    assert "4 documents (" in frames and "8 chunks embedded (" in frames
    assert "ETA" in frames and "━" in frames  # a bar, and a time remaining


def test_the_ray_engine_reports_against_the_chunks_to_embed(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=160)
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)
    with index_progress(console, total=None) as update:
        update(Progress(documents=30, chunks_embedded=64, items_seen=35, chunks_total=256))
        update(Progress(documents=3, chunks_embedded=1, items_seen=7))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("indexing: 64 of 256 chunks embedded; 30 documents (")
    assert lines[1].startswith("indexing: 7 read; 3 documents (")
