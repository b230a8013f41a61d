"""Loaded weights are resident before the first forward pass: the shards' mapped pages are populated, not left
to fault in during the first request (nvrag/model/residency.py)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from nvrag.model import load_model

FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "nvembed-tiny"


def mapping_of(address: int) -> tuple[str, int, int]:
    """The /proc/self/smaps entry holding ``address``: (its file, its size and resident kB)."""
    entry: dict[str, str] = {}
    found: tuple[str, int, int] | None = None
    for line in [*Path("/proc/self/smaps").read_text(encoding="utf-8").splitlines(), "0-0 end"]:
        head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$", line)
        if head:
            if entry and int(entry["start"], 16) <= address < int(entry["end"], 16):
                found = (entry["file"], int(entry["Size"]), int(entry["Rss"]))
            entry = {"start": head.group(1), "end": head.group(2), "file": head.group(3)}
        elif ":" in line:
            key, _, value = line.partition(":")
            entry[key] = value.split()[0] if value.split() else ""
    assert found is not None
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_POPULATE_READ is Linux's")
def test_the_mapped_shards_are_resident_after_loading() -> None:
    model = load_model(FIXTURE)  # float32 stored, float32 asked: views of the mapped shards, no copy
    weight = model.backbone.embed.weight  # 8 MB the loader itself never reads
    file, size, rss = mapping_of(weight.data_ptr())
    assert file.endswith(".safetensors")
    assert rss >= 0.9 * size  # without populate: only the pages the loader read (the latent layer's)
